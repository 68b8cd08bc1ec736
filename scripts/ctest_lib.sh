# shellcheck shell=bash
# Sourced by test.sh / sanitize.sh: runs ctest and keeps a tally over every run.
# run_ctest LABEL ARGS...: runs `ctest ARGS...`, prints its output, adds its counts to
# CTEST_PASSED / CTEST_FAILED, and records LABEL in CTEST_FAILED_RUNS if it failed.
CTEST_PASSED=0
CTEST_FAILED=0
CTEST_FAILED_RUNS=()

run_ctest() {
  local label=$1
  shift
  local log rc=0
  log=$(mktemp)
  ctest "$@" 2>&1 | tee "$log" || rc=$?
  # "100% tests passed, 0 tests failed out of 41"
  local line total failed
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ -n $line ]]; then
    failed=$(sed -E 's/.*passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.*passed, ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    CTEST_PASSED=$((CTEST_PASSED + total - failed))
    CTEST_FAILED=$((CTEST_FAILED + failed))
  elif grep -q 'No tests were found' "$log"; then
    echo "($label: no tests with these labels)"
  elif ((rc != 0)); then
    CTEST_FAILED=$((CTEST_FAILED + 1))  # ctest itself failed (e.g. a broken build tree)
  fi
  rm -f "$log"
  if ((rc != 0)); then
    CTEST_FAILED_RUNS+=("$label")
  fi
  return 0
}

# Prints the tally as a closing line ("NAME: P passed, F failed"), appends "P F" to
# $RECAP_TALLY_FILE when set (.ci/run adds up its scripts), returns non-zero if any run failed.
ctest_summary() {
  local name=$1
  if ((${#CTEST_FAILED_RUNS[@]})); then
    echo "$name: failing runs: ${CTEST_FAILED_RUNS[*]}"
  fi
  echo "$name: $CTEST_PASSED passed, $CTEST_FAILED failed"
  if [[ -n ${RECAP_TALLY_FILE:-} ]]; then
    echo "$CTEST_PASSED $CTEST_FAILED" >>"$RECAP_TALLY_FILE"
  fi
  ((${#CTEST_FAILED_RUNS[@]} == 0))
}

# True when this CPU (as the kernel reports it) has the instructions of a kernel path.
cpu_has_isa() {
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  local need
  case $1 in
    ref) return 0 ;;
    avx2) need="avx2 fma f16c" ;;
    avx512) need="avx512f avx512bw avx512vl avx512dq" ;;
    *) return 1 ;;
  esac
  for f in $need; do
    [[ $flags == *" $f "* ]] || return 1
  done
  return 0
}
