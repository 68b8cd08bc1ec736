#!/usr/bin/env bash
# The embedding check (issue 7): installs the build to a temporary prefix, then builds and runs
# the example consumers in examples/embed against the INSTALLED package only:
#   - recap.h compiles as strict C99 (gcc -std=c99 -Wall -Wextra -pedantic -Werror), recap.hpp
#     as C++17, from the installed include dir;
#   - examples/embed configured with find_package(recap CONFIG) (CMAKE_PREFIX_PATH=prefix):
#     caption_cpp (C++ wrapper) and caption_c (C API) caption the 4 bundled demo images with the
#     tiny model + demo tokenizer; every image must get a non-empty caption;
#   - caption_c.c built once more with plain gcc + pkg-config (recap.pc) and run.
# Uses an existing build in $BUILD_DIR (default build; built here if needed). Appends "P F" to
# $RECAP_TALLY_FILE when set (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
passed=0
failed=0
check() {  # check NAME CMD...: runs CMD, counts and reports the outcome
  local name=$1
  shift
  if "$@"; then
    echo "test_install: ok: $name"
    passed=$((passed + 1))
  else
    echo "test_install: FAILED: $name"
    failed=$((failed + 1))
  fi
}
finish() {
  echo "test_install: $passed passed, $failed failed"
  if [[ -n ${RECAP_TALLY_FILE:-} ]]; then echo "$passed $failed" >>"$RECAP_TALLY_FILE"; fi
  ((failed == 0))
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

if [[ ! -f $BUILD_DIR/build.ninja && ! -f $BUILD_DIR/Makefile ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if ! cmake --build "$BUILD_DIR" --parallel "$JOBS" --target recap recap-engine; then
  failed=$((failed + 1))
  echo "test_install: FAILED: building librecap"
  finish
  exit 1
fi
check "cmake --install to $prefix" cmake --install "$BUILD_DIR" --prefix "$prefix"

# Only the public headers are installed.
headers_ok() {
  local got
  got=$(cd "$prefix/include" && find . -type f | sort | tr '\n' ' ')
  [[ $got == "./recap/recap.h ./recap/recap.hpp " ]] || { echo "installed headers: $got"; return 1; }
}
check "installed headers are include/recap/recap.h and recap.hpp only" headers_ok
check "recap.h compiles as C99 -Wall -Wextra -pedantic" \
  gcc -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only -I"$prefix/include" -x c - \
  <<<'#include <recap/recap.h>
int main(void) { return recap_version() == 0; }'
check "recap.hpp compiles as C++17 -Wall -Wextra -pedantic" \
  g++ -std=c++17 -Wall -Wextra -pedantic -Werror -fsyntax-only -I"$prefix/include" -x c++ - \
  <<<'#include <recap/recap.hpp>
int main() { return recap::version().empty(); }'

# The demo inputs (tiny random model, demo tokenizer, bundled images).
weights=$ROOT/tests/data/tiny/llava_orig_with_vt_fp32
tokenizer=$ROOT/examples/demo/tokenizer.json
images=("$ROOT"/tests/data/tiny/images/*)

# Runs an example and checks one non-empty caption line per image.
run_example() {
  local bin=$1 out=$work/$(basename "$1").out
  "$bin" "$weights" "$tokenizer" "${images[@]}" >"$out" || { cat "$out"; return 1; }
  cat "$out"
  local lines
  lines=$(grep -v '^#' "$out" | awk -F'\t' 'NF >= 2 && $2 != ""' | wc -l)
  [[ $lines -eq ${#images[@]} ]] || { echo "expected ${#images[@]} non-empty captions, got $lines"; return 1; }
}

check "configure examples/embed with find_package(recap CONFIG)" \
  cmake -S examples/embed -B "$work/examples" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
check "build examples/embed" cmake --build "$work/examples" --parallel "$JOBS"
check "run caption_cpp (C++ wrapper, CMake package)" run_example "$work/examples/caption_cpp"
check "run caption_c (C API, CMake package)" run_example "$work/examples/caption_c"
same_captions() { diff <(grep -v '^#' "$work/caption_cpp.out") <(grep -v '^#' "$work/caption_c.out"); }
check "C and C++ examples give the same captions" same_captions

pc_build() {
  PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name recap.pc | head -n 1)") || return 1
  export PKG_CONFIG_PATH
  pkg-config --exists recap || return 1
  # Against the system's shared libjpeg/libpng/zlib/libcurl/libwebp (Debian ships libcurl's
  # private dependencies only as shared libraries, so `pkg-config --static` cannot be used here).
  # shellcheck disable=SC2046
  gcc -std=c99 -Wall -Wextra -pedantic -Werror -o "$work/caption_c_pc" examples/embed/caption_c.c \
    $(pkg-config --cflags --libs recap $(pkg-config --print-requires-private recap))
}
check "build caption_c with gcc + pkg-config recap" pc_build
check "run caption_c (pkg-config build)" run_example "$work/caption_c_pc"
finish
