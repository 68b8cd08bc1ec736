#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), configures and builds recap-engine.
#   BUILD_DIR  build directory (default: build)
#   BUILD_TYPE CMake build type (default: Release)
#   JOBS       parallel build jobs (default: number of CPUs)
#   RECAP_WERROR  ON: warnings are errors (CI sets it; default OFF so a newer compiler's new
#                 warnings do not stop a user's build)
# Extra arguments are passed to the CMake configure step, e.g. -DRECAP_BUILD_BENCH=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
JOBS=${JOBS:-$(nproc)}

scripts/setup.sh
echo "build: configuring $BUILD_DIR ($BUILD_TYPE, Ninja)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DRECAP_WERROR="${RECAP_WERROR:-OFF}" "$@"
echo "build: building with $JOBS jobs"
cmake --build "$BUILD_DIR" --parallel "$JOBS"
echo "build: done; CLI at $BUILD_DIR/tools/recap-engine"
