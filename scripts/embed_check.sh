#!/usr/bin/env bash
# Installs lrlab from the build folder into a private prefix and builds and runs examples/embed
# against it, the way a trainer consumes the CMake package.
set -euo pipefail
build=${1:-build}
prefix="$build/install"
log="$build/embed-check.log"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
if ! { cmake --install "$build" --prefix "$prefix" &&
       cmake -S examples/embed -B "$build/embed" "${gen[@]}" -DCMAKE_PREFIX_PATH="$PWD/$prefix" &&
       cmake --build "$build/embed"; } >"$log" 2>&1; then
  tail -n 30 "$log"
  echo "embed example: the installed package did not build (log: $log)" >&2
  exit 1
fi
"$build/embed/embed_example"
echo "embed example: OK"
