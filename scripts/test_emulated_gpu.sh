#!/usr/bin/env bash
# Runs every GPU test on the CPU, against lrlab's device emulator (tests/device_emulator/README.md).
#
# By default the CUDA sources are built as C++ with AddressSanitizer and UBSan: a kernel reading or
# writing outside its buffers, host code touching device memory, a misaligned vector access or a
# missing synchronisation between the host and a stream is reported. With --thread they are built
# with ThreadSanitizer instead, which sees every warp as a thread of its own: two warps touching the
# same memory with no barrier between them are a reported race, as are races between host threads.
# That run takes the GPU tests and the emulator's own (emulated.*), less some of arithmetic or host
# logic (named below), and not the engine tests' device runs (emulated-cuda.*), which repeat the
# same kernels at four times the cost under TSan. In either build a GPU test that skips itself
# fails. It checks logic, not speed; benchmarks/gpu_check.sh on a real GPU is the final word.
#
#   scripts/test_emulated_gpu.sh [--thread] [build-dir]     (default build-emu, or build-tsan-emu)
set -euo pipefail
cd "$(dirname "$0")/.."
thread=0
if [[ ${1:-} == --thread ]]; then
  thread=1
  shift
fi
if ((thread)); then
  build=${1:-build-tsan-emu}
  sanitize=-DLRLAB_SANITIZE_THREAD=ON
  name=test-emulated-gpu-thread
  # And the CPU backend's thread pool (cpu.CpuPool.*), whose synchronisation TSan sees. Left out,
  # as they run under ASan: tests of arithmetic or of host logic that launch, from one host thread,
  # kernels other tests here launch too. The 1000-step runs against float64 (OptimizerReferenceGpu,
  # a quarter of TSan's time; the parity tests launch every form of the update for a few steps); the
  # engine's failed capture, graph replay, guard and regression (TrainEngineGpu.MatchesTheCpuEngine
  # and MultiTargetRegression... run its kernels, SharedDeviceData... its engines on two threads);
  # allocation failures (OptimizerOutOfMemoryGpu).
  # Only the GPU tests' executable is built (tests/CMakeLists.txt).
  targets=(lrlab_gpu_tests)
  tests=(-R '^(emulated|cpu\.CpuPool)\.'
    -E 'OptimizerReferenceGpu\.|OptimizerOutOfMemoryGpu\.|TrainEngineGpu\.(AFailedCapture|GraphReplay|GuardRestores|RegressionMatches)')
  reports='ThreadSanitizer|lrlab device emulator:'
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
  # OpenMP's runtime is not instrumented, and the CPU path reads its thread count from it: with
  # one thread the CPU path runs no threads of its own. The pool's tests name their thread counts.
  export OMP_NUM_THREADS=1
  # Death tests run in a new process: a forked child would inherit TSan fibers that TSan's fork
  # handling has ended.
  export GTEST_DEATH_TEST_STYLE=threadsafe
else
  build=${1:-build-emu}
  sanitize=-DLRLAB_SANITIZE=ON
  name=test-emulated-gpu
  # build-emu also holds the CPU path's tests (cpu.*), which scripts/test_sanitize.sh runs. The
  # device runs of the tests of training, sweeps and range tests (emulated-cuda.*) are lrlab_tests'.
  targets=(lrlab_gpu_tests lrlab_tests)
  tests=(-R '^emulated')
  reports='runtime error:|ERROR: (Address|Leak)Sanitizer|lrlab device emulator:'
  export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
jobs=${JOBS:-$(nproc)}
start=$SECONDS

# The emulator's GEMMs run on the calling thread; OpenBLAS's own idle workers would only compete with
# the tests' OpenMP teams.
export OPENBLAS_NUM_THREADS=1

source scripts/emulator_build.sh
configure_emulator_build "$build" "$sanitize"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
built=$SECONDS
require_built "$build" "${targets[@]}" || exit 1

status=0
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 600 --no-tests=error "${tests[@]}") > "$build/emulated-ctest.log" 2>&1 ||
  status=$?
tail -n 6 "$build/emulated-ctest.log"
if grep -qE "$reports" "$build/emulated-ctest.log"; then
  echo "reports from the sanitizers or the emulator:"
  grep -m 5 -E "$reports" "$build/emulated-ctest.log" | cut -c1-300
  status=1
fi
echo "$name: build $((built - start)) s, tests $((SECONDS - built)) s"
if [[ $status -ne 0 ]]; then
  echo "$name: FAILED (full output: $build/emulated-ctest.log)"
  exit 1
fi
echo "$name: OK"
