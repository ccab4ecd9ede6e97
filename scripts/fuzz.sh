#!/usr/bin/env bash
# Builds lrlab's libFuzzer targets (tests/fuzz/fuzz_<name>.cpp) with clang, ASan and UBSan, then
# runs each for FUZZ_SECONDS (default 30) on a scratch copy of its seed corpus
# (tests/fuzz/corpus/<name>/). Only the host sources a target needs are compiled; nvcc is not
# involved. lrlab::Error is the expected answer to bad input (the targets catch it); a crash,
# sanitizer report, other exception, timeout or memory blow-up fails the run and leaves the input
# under build-fuzz/findings/<name>/.
#
#   scripts/fuzz.sh [target...]        build and fuzz (all targets when none are named)
#   scripts/fuzz.sh --build-only       build only
#   scripts/fuzz.sh --make-corpus      regenerate the binary seeds (idx, checkpoint)
# Environment: FUZZ_SECONDS, FUZZ_BUILD (default build-fuzz), CLANGXX (default clang++-14).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${FUZZ_BUILD:-build-fuzz}
seconds=${FUZZ_SECONDS:-30}
cxx=${CLANGXX:-clang++-14}
cuda=${CUDA_HOME:-/usr/local/cuda}

# Host sources each target needs. A new reader gets a tests/fuzz/fuzz_<name>.cpp, a seed corpus
# under tests/fuzz/corpus/<name>/ and a line here.
declare -A sources=(
  [schedule]="src/spec.cpp src/schedule.cpp"
  [optimizer]="src/spec.cpp src/optimizer.cpp src/packing.cpp src/device.cpp tests/fuzz/optimizer_launch_stubs.cpp"
  [idx]="src/data_idx.cpp src/data_io.cpp"
  [csv]="src/data_csv.cpp"
  [checkpoint]="src/checkpoint.cpp src/io.cpp"
  [sweep]="src/sweep_report.cpp src/plot.cpp src/io.cpp"
)
# Extra link flags: parse_optimizer shares src/optimizer.cpp with the CUDA-backed Optimizer (its
# update loops are replaced by tests/fuzz/optimizer_launch_stubs.cpp).
declare -A libs=(
  [optimizer]="-L$cuda/lib64 -lcudart_static -ldl -lpthread -lrt"
  [idx]="-lz"
  [checkpoint]="-lz"
)
all_targets=(schedule optimizer idx csv checkpoint sweep)

flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -Iinclude -Isrc -I"$cuda/include" -fno-sanitize-recover=all)

build_target() {
  local name=$1 objs=() src obj
  mkdir -p "$build/obj"
  for src in ${sources[$name]}; do
    obj="$build/obj/$(basename "$src" .cpp).o"
    # Sources are shared between targets; compile each once per change.
    if [[ ! -f $obj || $src -nt $obj || include -nt $obj ]] || find include src -newer "$obj" -name '*.hpp' | grep -q .; then
      "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$obj"
    fi
    objs+=("$obj")
  done
  "$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined "tests/fuzz/fuzz_$name.cpp" "${objs[@]}" \
    ${libs[$name]:-} -o "$build/fuzz_$name"
}

if [[ ${1:-} == --make-corpus ]]; then
  mkdir -p "$build"
  "$cxx" -std=c++17 -O1 -Iinclude -Isrc tests/fuzz/make_corpus.cpp src/checkpoint.cpp src/io.cpp -lz \
    -o "$build/make_corpus"
  "$build/make_corpus" tests/fuzz/corpus
  exit 0
fi
build_only=0
if [[ ${1:-} == --build-only ]]; then build_only=1; shift; fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")

for name in "${targets[@]}"; do
  [[ -n ${sources[$name]:-} ]] || { echo "fuzz.sh: unknown target '$name' (known: ${all_targets[*]})" >&2; exit 2; }
  echo "== building fuzz_$name"
  build_target "$name"
done
[[ $build_only == 1 ]] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for name in "${targets[@]}"; do
  # The committed seeds stay untouched: new coverage goes to a scratch corpus.
  work="$build/corpus/$name" findings="$build/findings/$name"
  mkdir -p "$work" "$findings"
  echo "== fuzz_$name for ${seconds}s"
  if ! "$build/fuzz_$name" "$work" "tests/fuzz/corpus/$name" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$findings/" \
      > "$build/fuzz_$name.log" 2>&1; then
    failed+=("$name")
    tail -n 60 "$build/fuzz_$name.log"
    echo "fuzz_$name FAILED: see $build/fuzz_$name.log and $findings/"
  else
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$build/fuzz_$name.log" | tr '\n' ' '
    echo
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: failures in ${failed[*]}"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets clean after ${seconds}s each"
