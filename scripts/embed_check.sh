#!/usr/bin/env bash
# Installs lrlab from the build folder and builds and runs examples/embed against it, the way a
# trainer consumes the CMake package: the package must not name a path of this machine (it is
# installed into one folder and used from another), and the example and every installed header must
# compile alone with -Wall -Wextra -Wpedantic -Werror.
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
{ cmake -S examples/embed -B "$build/embed" "${gen[@]}" -DCMAKE_PREFIX_PATH="$(cd "$prefix" && pwd)" &&
  cmake --build "$build/embed"; } >>"$log" 2>&1 || fail "the installed package did not build"
"$build/embed/embed_example"
echo "embed example: OK"
