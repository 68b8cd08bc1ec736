#!/usr/bin/env bash
# README command (1): sets up the machine, builds, and runs the main job on the bundled demo:
# `recap-engine caption` with the tiny LLaVA model (tests/data/tiny, random weights, so the
# captions are gibberish by design), the bundled demo tokenizer and the 4 bundled images.
# Output: a webdataset shard in $DEMO_OUT (default $BUILD_DIR/demo-out/): 00000.tar ({key}.png/.jpg,
# {key}.txt with the new caption, {key}.json), 00000.jsonl (one line per sample) and
# 00000_stats.json (written last: the done marker).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
scripts/build.sh
BIN=$BUILD_DIR/tools/recap-engine
OUT=${DEMO_OUT:-$BUILD_DIR/demo-out}
echo "demo: captioning the bundled images with the tiny LLaVA model -> $OUT/"
set -x
"$BIN" caption --weights tests/data/tiny/llava_orig_with_vt_fp32 \
  --tokenizer examples/demo/tokenizer.json \
  --list examples/demo/images.jsonl \
  --out "$OUT" --max-new-tokens 24 --overwrite
set +x
echo
echo "demo: outputs in $OUT/:"
ls -l "$OUT"
echo "demo: members of $OUT/00000.tar:"
tar -tvf "$OUT/00000.tar"
echo "demo: first record of $OUT/00000.jsonl:"
head -n 1 "$OUT/00000.jsonl"
