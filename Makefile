# The two commands the README names: `make demo` (the main job) and `make test` (every test).
# Both install missing Debian packages (as root), configure and build into build/ first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
# build/ is built and run on this machine: host code tuned for its CPU. The CMake default is OFF (a
# portable, installable library); NATIVE=OFF, or -DLRLAB_NATIVE=OFF in CMAKE_ARGS, builds that here.
# Only a fresh configure passes it; an existing build/ keeps the value in its cache.
NATIVE ?= ON
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
CTEST_ARGS ?=

.PHONY: all deps configure build test test-emulated-gpu demo clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(GENERATOR) -DLRLAB_NATIVE=$(NATIVE) $(CMAKE_ARGS)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	scripts/embed_check.sh $(BUILD)
	JOBS=$(JOBS) scripts/test_emulated_gpu.sh build-emu

demo: build
	scripts/demo.sh $(BUILD)

# The GPU tests on the CPU, against the device emulator (part of `test`).
test-emulated-gpu: deps
	JOBS=$(JOBS) scripts/test_emulated_gpu.sh build-emu

clean:
	rm -rf $(BUILD) build-emu build-tsan-emu

# Hardening: the CPU path's tests and the CLI under ASan + UBSan (in build-emu, the sanitized build
# that `make test` runs the GPU tests in), the GPU tests on the device emulator under
# ThreadSanitizer (into build-tsan-emu), and the libFuzzer targets of
# tests/fuzz (built with clang into build-fuzz), each run FUZZ_SECONDS.
FUZZ_SECONDS ?= 30
.PHONY: test-sanitize fuzz

test-sanitize: deps
	JOBS=$(JOBS) scripts/test_sanitize.sh build-emu
	JOBS=$(JOBS) scripts/test_emulated_gpu.sh --thread build-tsan-emu

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh
