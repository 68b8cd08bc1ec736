#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang-14 in build-fuzz/ (the whole
# library instrumented: -fsanitize=fuzzer-no-link,address,undefined) and runs each for SECONDS
# (default 60) on a scratch copy of its seed corpus tests/fuzz/corpus/<target>/ (the checked-in
# corpus never grows). Exits non-zero on any finding -- crash, leak, UB, uncaught exception,
# an input slower than 10 s, RSS over 2 GB -- printing the input that triggered it.
#   scripts/fuzz.sh [SECONDS]
#   JOBS            parallel build jobs (default: number of CPUs)
#   FUZZ_TARGETS    space-separated target names to run (default: every fuzz_*.cpp)
#   FUZZ_KEEP_DIR   where the scratch corpora and findings go (default: build-fuzz/run)
#   FUZZ_SEED       libFuzzer -seed (default 0: a new random seed each run). CI fixes it so a
#                   CI run explores the same inputs first every time (reproducible); long runs
#                   on a developer machine leave it random to find what is new.
#   FUZZ_RUNS       stop each target after this many executions instead of after SECONDS (the
#                   long run of docs/RELIABILITY.md: FUZZ_RUNS=1000000)
# First every kept regression input (corpus/<target>/crash-*) runs once; then the fuzzing.
# Appends "passed failed" (targets) to $RECAP_TALLY_FILE when set (.ci/run adds it up).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${1:-60}
JOBS=${JOBS:-$(nproc)}
BUILD_DIR=build-fuzz
RUN_DIR=${FUZZ_KEEP_DIR:-$BUILD_DIR/run}

scripts/setup.sh
# A build dir configured with another compiler cannot be switched: start it afresh.
if [[ -f $BUILD_DIR/CMakeCache.txt ]] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++-14$' "$BUILD_DIR/CMakeCache.txt"; then
  rm -rf "$BUILD_DIR"
fi
echo "fuzz: configuring $BUILD_DIR (clang-14, RelWithDebInfo, -DRECAP_FUZZ=ON)"
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRECAP_FUZZ=ON -DRECAP_BUILD_TESTS=OFF -DRECAP_BUILD_BENCH=OFF -DRECAP_WERROR="${RECAP_WERROR:-OFF}" >/dev/null

if [[ -n ${FUZZ_TARGETS:-} ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for src in tests/fuzz/fuzz_*.cpp; do
    targets+=("$(basename "$src" .cpp)")
  done
fi
echo "fuzz: building ${#targets[@]} targets with $JOBS jobs"
cmake --build "$BUILD_DIR" --parallel "$JOBS" --target "${targets[@]}"

# Longest input per target: a little above its largest seed, small enough to stay fast.
max_len_of() {
  case $1 in
    fuzz_braces) echo 256 ;;
    fuzz_safetensors_index | fuzz_chat_template | fuzz_tokenizer_roundtrip) echo 4096 ;;
    fuzz_config | fuzz_lists | fuzz_http) echo 8192 ;;
    fuzz_safetensors) echo 16384 ;;
    fuzz_image | fuzz_tar | fuzz_tokenizer) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
common=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -seed="${FUZZ_SEED:-0}")
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
passed=0
failed=0
failures=()
for t in "${targets[@]}"; do
  bin=$BUILD_DIR/fuzz/$t
  seeds=tests/fuzz/corpus/${t#fuzz_}
  work=$RUN_DIR/$t/corpus
  findings=$RUN_DIR/$t/findings
  log=$RUN_DIR/$t/log
  mkdir -p "$work" "$findings"
  ok=1
  # Regression inputs first: each must now run cleanly.
  shopt -s nullglob
  regressions=("$seeds"/crash-*)
  if ((${#regressions[@]})); then
    if ! "$bin" "${common[@]}" -artifact_prefix="$findings/" "${regressions[@]}" >"$log.regressions" 2>&1; then
      ok=0
      echo "fuzz: $t: a kept regression input fails again:"
      grep -E '^(Running|==[0-9]+==ERROR|SUMMARY)' "$log.regressions" | tail -n 5 || true
      tail -n 30 "$log.regressions"
    fi
  fi
  for f in "$seeds"/*; do
    [[ $(basename "$f") == crash-* ]] || cp "$f" "$work/"
  done
  shopt -u nullglob
  if ((ok)); then
    if [[ -n ${FUZZ_RUNS:-} ]]; then
      budget=(-runs="$FUZZ_RUNS")
    else
      budget=(-max_total_time="$FUZZ_SECONDS")
    fi
    started=$SECONDS
    if "$bin" "${common[@]}" "${budget[@]}" -max_len="$(max_len_of "$t")" \
      -artifact_prefix="$findings/" "$work" >"$log" 2>&1; then
      execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
      echo "fuzz: $t: ok, ${execs:-?} runs in $((SECONDS - started)) s, corpus $(find "$work" -type f | wc -l) inputs"
    else
      ok=0
      echo "fuzz: $t: FINDING"
      tail -n 40 "$log"
      for a in "$findings"/*; do
        [[ -e $a ]] && echo "fuzz: $t: input that triggered it: $a"
      done
    fi
  fi
  if ((ok)); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$t")
  fi
done
if [[ -n ${RECAP_TALLY_FILE:-} ]]; then
  echo "$passed $failed" >>"$RECAP_TALLY_FILE"
fi
if ((failed)); then
  echo "fuzz: findings in: ${failures[*]} (logs and inputs under $RUN_DIR)"
  echo "fuzz: $passed passed, $failed failed"
  exit 1
fi
echo "fuzz: $passed passed, $failed failed"
