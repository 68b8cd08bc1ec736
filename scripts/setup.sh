#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the benchmarks need.
# Quick when everything is present: apt-get runs only if a package is missing.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev libwebp-dev
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev libssl-dev libxxhash-dev libarchive-dev python3 python3-numpy clang-format tar
  clang-14 libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer (-fsanitize=fuzzer,address,undefined)
  qemu-user  # the portability label runs the golden tests as Haswell and Nehalem CPUs
  slurm-wlm munge  # the Slurm array tests (label slow) run a one-node cluster on localhost
)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
