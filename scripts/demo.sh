#!/usr/bin/env bash
# README command (1): sets up the machine, builds, and runs the main job on the bundled demo.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
scripts/build.sh
BIN=$BUILD_DIR/tools/recap-engine
echo "demo: running recap-engine on the bundled tiny LLaVA model"
set -x
"$BIN" inspect --weights tests/data/tiny/llava_orig_fp32
