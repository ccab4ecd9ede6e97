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

# Fails, naming them, when test executables of the build are not built: ctest lists each as one
# NAME_NOT_BUILT placeholder, which a -R selection leaves out, so their tests would be lost without
# a word. With no names, every test executable of the build must be built.
#
#   require_built BUILD_DIR [TARGET...]
require_built() {
  local build=$1 unbuilt
  shift
  unbuilt=$(cd "$build" && ctest -N | sed -nE 's/^ *Test +#[0-9]+: ([A-Za-z0-9_]+)_NOT_BUILT$/\1/p' | sort -u)
  if (($#)); then
    unbuilt=$(grep -xF -f <(printf '%s\n' "$@") <<<"$unbuilt" || true)
  fi
  if [[ -n $unbuilt ]]; then
    echo "not built in $build, so its tests would not run:" $unbuilt >&2
    return 1
  fi
}
