# Sourced by scripts/test_emulated_gpu.sh and scripts/test_sanitize.sh. Both use build-emu (the GPU
# tests against the device emulator, and the CPU path's tests, all under ASan and UBSan), so both
# must configure it alike: another value of any option would rebuild it from scratch.
#
#   configure_emulator_build BUILD_DIR -DLRLAB_SANITIZE=ON|-DLRLAB_SANITIZE_THREAD=ON
configure_emulator_build() {
  local build=$1 sanitize=$2 gen=()
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  # The library at -O1 (as ASan's documentation advises) with line tables only (-g1, all a report
  # needs): half the compile time of RelWithDebInfo's -O2 -g, for tests about 10% slower. Under ASan
  # the tests and the command line are built at -O0 (CMakeLists.txt, LRLAB_TEST_FLAGS).
  cmake -S . -B "$build" "${gen[@]}" -DLRLAB_DEVICE_EMULATOR=ON -DLRLAB_NATIVE=ON "$sanitize" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
    -DLRLAB_BENCHMARKS=OFF >/dev/null
}
