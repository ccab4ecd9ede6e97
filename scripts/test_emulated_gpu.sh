#!/usr/bin/env bash
# Runs every GPU test on the CPU, against lrlab's device emulator (tests/device_emulator/README.md):
# the CUDA sources built as C++ with AddressSanitizer and UBSan, so that a kernel reading or writing
# outside its buffers, or a misaligned vector access, is reported with its line. In this build a GPU
# test that skips itself fails. It checks logic, not speed, and it cannot see missing
# synchronisation; benchmarks/gpu_check.sh on a real GPU does.
#
#   scripts/test_emulated_gpu.sh [build-dir]     (default build-emu)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-emu}
jobs=${JOBS:-$(nproc)}
start=$SECONDS

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The emulator's GEMMs run on the calling thread; OpenBLAS's own idle workers would only compete with
# the tests' OpenMP teams.
export OPENBLAS_NUM_THREADS=1

cmake -S . -B "$build" "${gen[@]}" -DLRLAB_DEVICE_EMULATOR=ON -DLRLAB_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLRLAB_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target lrlab_tests
built=$SECONDS

status=0
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 600) > "$build/emulated-ctest.log" 2>&1 || status=$?
tail -n 6 "$build/emulated-ctest.log"
if grep -qE 'runtime error:|ERROR: (Address|Leak)Sanitizer|lrlab device emulator:' "$build/emulated-ctest.log"; then
  echo "reports from the sanitizers or the emulator:"
  grep -m 5 -E 'runtime error:|ERROR: |lrlab device emulator:' "$build/emulated-ctest.log" | cut -c1-300
  status=1
fi
echo "test-emulated-gpu: build $((built - start)) s, tests $((SECONDS - built)) s"
if [[ $status -ne 0 ]]; then
  echo "test-emulated-gpu: FAILED (full output: $build/emulated-ctest.log)"
  exit 1
fi
echo "test-emulated-gpu: OK"
