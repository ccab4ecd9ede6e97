#!/usr/bin/env bash
# Runs the tests of the CPU path (the command line's among them; all but CrashSafety, see below)
# under AddressSanitizer + UndefinedBehaviorSanitizer. They run in build-emu, the build of
# scripts/test_emulated_gpu.sh (part of `make test`): host code, CLI and tests built with
# LRLAB_SANITIZE=ON and the CUDA sources compiled as C++ against the device emulator, which an empty
# CUDA_VISIBLE_DEVICES hides (these tests are cpu.* there; tests/CMakeLists.txt). One sanitized build
# thus serves the GPU tests and these. Any sanitizer report fails the run: UBSan aborts
# (-fno-sanitize-recover=all, halt_on_error), ASan/LSan exit non-zero, and reports from processes
# whose exit status a test may accept (the CLI run by the CLI tests) are caught from their log files
# and the test output.
#
#   scripts/test_sanitize.sh [build-dir]     (default build-emu)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-emu}
jobs=${JOBS:-$(nproc)}
start=$SECONDS

logs="$PWD/$build/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"

# detect_stack_use_after_return stays off: with GCC 12 it crashes inside plain initializer-list
# copies (PlateauRule.StateRestoresExactly) that run clean under every other check.
asan="detect_leaks=1:strict_string_checks=1:check_initialization_order=1:log_path=$logs/asan"
export ASAN_OPTIONS=$asan
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitize/lsan.supp:print_suppressions=0"
# GCC's libubsan writes to stderr even when log_path is set, hence the scan of the test output.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

source scripts/emulator_build.sh
configure_emulator_build "$build" -DLRLAB_SANITIZE=ON
cmake --build "$build" -j "$jobs" --target lrlab_gpu_tests lrlab_tests lrlab_cli
built=$SECONDS
require_built "$build" || exit 1

# Tests that run the CLI under mpirun go separately: Open MPI's leaks are suppressed by library
# name, which needs full malloc stacks (fast_unwind_on_malloc=0), too slow for the whole suite.
mpi_tests=Mpi
# CrashSafety is left out: its assertion counts how many of 200 SIGKILLs land inside a write, a
# ratio ASan's slowdown shifts (42 of 50 in one run), and at 35-85 s each it is the slowest part of
# the suite; the file readers it checks are fuzzed (make fuzz) and unit-tested here.
skipped=CrashSafety
status=0
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 600 --no-tests=error -R '^cpu\.' -E "$mpi_tests|$skipped") > "$build/sanitize-ctest.log" 2>&1 || status=$?
tail -n 25 "$build/sanitize-ctest.log"
(cd "$build" && ASAN_OPTIONS="$asan:fast_unwind_on_malloc=0" ctest --output-on-failure --timeout 600 --no-tests=error -R "^cpu\..*$mpi_tests") \
  >> "$build/sanitize-ctest.log" 2>&1 || status=$?
tail -n 4 "$build/sanitize-ctest.log"
reports=$(grep -lE 'runtime error:|ERROR: (Address|Leak)Sanitizer|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer' \
  "$build/sanitize-ctest.log" "$logs"/* 2>/dev/null || true)
if [[ -n $reports ]]; then
  echo "sanitizer reports found in:"
  echo "$reports"
  # The error line and the frames in lrlab's own sources are the useful part of each report.
  for f in $reports; do
    echo "== $f"
    { grep -m 3 -E 'runtime error:|ERROR: ' "$f" || true; } | cut -c1-300
    { grep -E "^ +#[0-9]+ .*$PWD/(src|include|kernels|tests)/" "$f" || true; } | head -n 8 | cut -c1-300
  done
  status=1
fi
echo "test-sanitize: build $((built - start)) s, tests $((SECONDS - built)) s"
if [[ $status -ne 0 ]]; then
  echo "test-sanitize: FAILED (full test output: $build/sanitize-ctest.log)"
  exit 1
fi
echo "test-sanitize: OK"
