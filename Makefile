# The two commands the README names: `make demo` (the main job) and `make test` (every test).
# Both install missing Debian packages (as root), configure and build into build/ first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
CTEST_ARGS ?=

.PHONY: all deps configure build test demo install-check clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(GENERATOR) $(CMAKE_ARGS)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	scripts/embed_check.sh $(BUILD)

demo: build
	scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)
