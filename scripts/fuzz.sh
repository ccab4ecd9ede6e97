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
# Environment: FUZZ_SECONDS, FUZZ_JOBS (fuzzers run at once, default one per core), FUZZ_BUILD
# (default build-fuzz), CLANGXX (default clang++-14).
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
  [optimizer]="src/spec.cpp src/optimizer.cpp src/packing.cpp src/device.cpp src/serialize.cpp tests/fuzz/optimizer_launch_stubs.cpp"
  [idx]="src/data_idx.cpp src/data_io.cpp"
  [csv]="src/data_csv.cpp"
  [checkpoint]="src/checkpoint.cpp src/serialize.cpp src/io.cpp"
  [sweep]="src/sweep_report.cpp src/plot.cpp src/io.cpp"
  [config]="src/cli/config_file.cpp src/cli/options.cpp"
)
# Extra link flags: parse_optimizer shares src/optimizer.cpp with the CUDA-backed Optimizer (its
# update loops are replaced by tests/fuzz/optimizer_launch_stubs.cpp).
declare -A libs=(
  [optimizer]="-L$cuda/lib64 -lcudart_static -ldl -lpthread -lrt -lz"
  [idx]="-lz"
  [checkpoint]="-lz"
)
all_targets=(schedule optimizer idx csv checkpoint sweep config)

flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -Iinclude -Isrc -I"$cuda/include" -fno-sanitize-recover=all)

# Compiles and links run FUZZ_JOBS at a time (default: one per core), as do the fuzzers themselves.
parallel=${FUZZ_JOBS:-$(nproc)}
[[ $parallel =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: FUZZ_JOBS=$parallel is not a positive integer" >&2; exit 2; }
# Returns once fewer than $parallel background jobs run; `wait PID` still gives each one's status.
throttle() { while (( $(jobs -rp | wc -l) >= parallel )); do wait -n || true; done; }
wait_all() {
  local pid status=0
  for pid in "$@"; do wait "$pid" || status=1; done
  return $status
}

build_targets() {
  local name src obj pids=()
  local -A seen=() object_of=()
  mkdir -p "$build/obj"
  # Sources are shared between targets: each is compiled once, and only when it or a header changed.
  # Objects are named by the source's base name, so two sources may not share one (their compiles
  # run at once and would write the same file).
  for name in "$@"; do
    for src in ${sources[$name]}; do
      [[ -z ${seen[$src]:-} ]] || continue
      seen[$src]=1
      obj="$build/obj/$(basename "$src" .cpp).o"
      if [[ -n ${object_of[$obj]:-} ]]; then
        echo "fuzz.sh: $src and ${object_of[$obj]} would both compile to $obj" >&2
        exit 2
      fi
      object_of[$obj]=$src
      if [[ ! -f $obj || $src -nt $obj || include -nt $obj || -n $(find include src -newer "$obj" -name '*.hpp' -print -quit) ]]; then
        throttle
        "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$obj" &
        pids+=($!)
      fi
    done
  done
  wait_all "${pids[@]}" || { echo "fuzz.sh: compiling failed" >&2; exit 1; }
  pids=()
  for name in "$@"; do
    echo "== building fuzz_$name"
    local objs=()
    for src in ${sources[$name]}; do objs+=("$build/obj/$(basename "$src" .cpp).o"); done
    throttle
    "$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined "tests/fuzz/fuzz_$name.cpp" "${objs[@]}" \
      ${libs[$name]:-} -o "$build/fuzz_$name" &
    pids+=($!)
  done
  wait_all "${pids[@]}" || { echo "fuzz.sh: building the fuzzers failed" >&2; exit 1; }
}

if [[ ${1:-} == --make-corpus ]]; then
  mkdir -p "$build"
  "$cxx" -std=c++17 -O1 -Iinclude -Isrc tests/fuzz/make_corpus.cpp src/checkpoint.cpp src/serialize.cpp src/io.cpp -lz \
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
done
build_targets "${targets[@]}"
[[ $build_only == 1 ]] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Each fuzzer runs on one core: with $parallel side by side, the run takes FUZZ_SECONDS per round of
# them instead of per target.
fuzz_one() {
  local name=$1
  # The committed seeds stay untouched: new coverage goes to a scratch corpus.
  local work="$build/corpus/$name" findings="$build/findings/$name"
  mkdir -p "$work" "$findings"
  "$build/fuzz_$name" "$work" "tests/fuzz/corpus/$name" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$findings/" \
    > "$build/fuzz_$name.log" 2>&1
}
declare -A pids=()
echo "== ${#targets[@]} fuzzers for ${seconds}s each, $parallel at a time"
for name in "${targets[@]}"; do
  throttle
  fuzz_one "$name" &
  pids[$name]=$!
done
failed=()
for name in "${targets[@]}"; do
  if ! wait "${pids[$name]}"; then
    failed+=("$name")
    tail -n 60 "$build/fuzz_$name.log"
    echo "fuzz_$name FAILED: see $build/fuzz_$name.log and $build/findings/$name/"
  else
    echo "fuzz_$name: $(grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$build/fuzz_$name.log" | tr '\n' ' ')"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: failures in ${failed[*]}"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets clean after ${seconds}s each"
