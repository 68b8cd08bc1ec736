#!/usr/bin/env bash
# Portability under emulation: the CTest label `portability` (tests/portability/): the tiny-model
# golden tests and the ISA-selection check under `qemu-x86_64 -cpu Haswell` (must select avx2)
# and `-cpu Nehalem` (must select ref), with the same goldens, and the disassembly check of the
# kernels' object files. Builds first (scripts/build.sh installs qemu-user via setup.sh).
#   BUILD_DIR (default build), JOBS (default nproc), CTEST_TIMEOUT seconds per test (default 1800)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
export BUILD_DIR JOBS
# shellcheck source=scripts/ctest_lib.sh
source scripts/ctest_lib.sh

scripts/build.sh

start=$(date +%s)
# RECAP_FORCE_ISA would override the selection under test; the tests unset it themselves too.
unset RECAP_FORCE_ISA
run_ctest "portability" --test-dir "$BUILD_DIR" --output-on-failure --parallel "$JOBS" \
  --timeout "${CTEST_TIMEOUT:-1800}" -L portability
echo "test_portability: label portability took $(($(date +%s) - start)) s"
ctest_summary test_portability
