#!/usr/bin/env bash
# README command (2): sets up the machine, builds (Release) and runs every test.
# Tests labelled `kernels` run once per kernel path (RECAP_FORCE_ISA=ref, avx2, avx512; a path
# this CPU lacks is skipped with a message); all other tests run once, except the label
# `portability` (qemu emulation, scripts/test_portability.sh, which .ci/run calls next).
#   BUILD_DIR (default build), JOBS (default nproc), CTEST_TIMEOUT seconds per test (default 1800)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
export BUILD_DIR JOBS
# shellcheck source=scripts/ctest_lib.sh
source scripts/ctest_lib.sh

scripts/build.sh

args=(--test-dir "$BUILD_DIR" --output-on-failure --parallel "$JOBS" --timeout "${CTEST_TIMEOUT:-1800}")
for isa in ref avx2 avx512; do
  if ! cpu_has_isa "$isa"; then
    echo "test: skipping kernels tests with RECAP_FORCE_ISA=$isa: this CPU lacks $isa"
    continue
  fi
  echo "test: kernels tests with RECAP_FORCE_ISA=$isa"
  RECAP_FORCE_ISA=$isa run_ctest "kernels/$isa" "${args[@]}" -L kernels
done
echo "test: every other test (labels unit, golden, cli, slow)"
run_ctest "non-kernels" "${args[@]}" -LE 'kernels|portability'
ctest_summary test
