#!/usr/bin/env bash
# Installs lrlab from the build folder into a private prefix and builds and runs examples/embed
# against it, the way a trainer consumes the CMake package.
set -euo pipefail
build=${1:-build}
prefix="$build/install"
cmake --install "$build" --prefix "$prefix" >/dev/null
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S examples/embed -B "$build/embed" "${gen[@]}" -DCMAKE_PREFIX_PATH="$PWD/$prefix" >/dev/null
cmake --build "$build/embed" >/dev/null
"$build/embed/embed_example"
echo "embed example: OK"
