#!/usr/bin/env bash
# Installs lrlab from the build folder and builds and runs examples/embed against it, the way a
# trainer consumes the CMake package: the package must not name a path of this machine (it is
# installed into one folder and used from another), and the example, every installed header and the
# README's code must compile alone with -Wall -Wextra -Wpedantic -Werror.
# The library installed is the build folder's own (for `make test`, tuned with LRLAB_NATIVE): the
# flag is private to liblrlab.a and leaves the package files unchanged, and the example runs here.
set -euo pipefail
build=${1:-build}
prefix="$build/install"
staging="$build/install-staging"
log="$build/embed-check.log"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cuda_include=${CUDA_HOME:-/usr/local/cuda}/include
fail() {
  tail -n 30 "$log"
  echo "embed example: $1 (log: $log)" >&2
  exit 1
}
: >"$log"
rm -rf "$staging"
cmake --install "$build" --prefix "$staging" >>"$log" 2>&1 || fail "the install failed"
rm -rf "$prefix"
mv "$staging" "$prefix"
if grep -nE -- '-march|"/(usr|opt)/|;/(usr|opt)/' "$prefix"/lib*/cmake/lrlab/*.cmake >>"$log"; then
  fail "the installed package names a path or a CPU of this machine"
fi
for h in "$prefix"/include/lrlab/*.hpp; do
  printf '#include <lrlab/%s>\n' "${h##*/}" |
    "${CXX:-c++}" -std=c++17 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I "$prefix/include" \
      -isystem "$cuda_include" -x c++ - >>"$log" 2>&1 || fail "${h##*/} does not compile alone"
done
# The README's library example, as a function body over the names it leaves to the reader: the
# example must keep up with the API it shows.
readme="$build/readme_example.cpp"
{
  echo '#include <cuda_runtime.h>'
  echo '#include <cstdint>'
  echo '#include <string>'
  awk '/^```cpp$/ {inside = 1; next} /^```$/ {inside = 0} inside && /^#include/' README.md
  echo 'void readme_example(int64_t n, int64_t n_weights, cudaStream_t stream, float* d_params, const float* d_grads) {'
  awk '/^```cpp$/ {inside = 1; next} /^```$/ {inside = 0} inside && !/^#include/' README.md
  echo '}'
} >"$readme"
grep -q 'lrlab::Optimizer opt(' "$readme" || fail "README.md has no library example to check"
"${CXX:-c++}" -std=c++17 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I "$prefix/include" \
  -isystem "$cuda_include" "$readme" >>"$log" 2>&1 || fail "README.md's library example does not compile ($readme)"
# As a trainer whose compiler defaults to C++14 would build it: the package must raise the standard.
{ cmake -S examples/embed -B "$build/embed" "${gen[@]}" -DCMAKE_PREFIX_PATH="$(cd "$prefix" && pwd)" \
    -DCMAKE_CXX_STANDARD=14 &&
  cmake --build "$build/embed"; } >>"$log" 2>&1 || fail "the installed package did not build"
"$build/embed/embed_example"
echo "embed example: OK"
