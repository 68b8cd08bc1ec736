#!/usr/bin/env bash
# check_isa_objects.sh OBJDIR: disassembles every kernels object file and fails if one holds an
# instruction its ISA pattern does not allow. The static half of the portability proof: it
# covers what qemu cannot emulate (AVX-512 and its VNNI/BF16 extensions), and inline asm, which
# the compiler's -m flags do not constrain.
#   *_avx512.cpp.o      AVX-512 F/BW/VL/DQ: no VNNI, BF16 or other AVX-512 extensions
#   *_avx512vnni.cpp.o  + VNNI only          *_avx512bf16.cpp.o  + BF16 only
#   *_avx2.cpp.o        no EVEX (zmm, opmask, xmm16-31, embedded broadcast), no VNNI/BF16
#   anything else       baseline x86-64: no VEX/EVEX, no SSE3+ or BMI instructions
set -euo pipefail
objdir=${1:?usage: check_isa_objects.sh OBJDIR}
vnni='vpdpbusds?|vpdpwssds?'
bf16='vdpbf16ps|vcvtne2ps2bf16|vcvtneps2bf16'
# CD, VBMI, VBMI2, IFMA, BITALG, VPOPCNTDQ, FP16, VP2INTERSECT mnemonics
avx512_other='vpconflict[dq]|vplzcnt[dq]|vpermb|vpermi2b|vpermt2b|vpmultishiftqb|vpshl?dv?[wdq]|vpshrdv?[wdq]|vpcompressb|vpcompressw|vpexpandb|vpexpandw|vpmadd52[lh]uq|vpopcnt[bwdq]|vpshufbitqmb|vp2intersect[dq]|v(add|sub|mul|div|min|max|sqrt|rcp|rsqrt|scalef|getexp|cmp)[ps]h|vf(n?m(add|sub)|maddsub|msubadd)[0-9]+[ps]h'
evex='%zmm|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|\{1to'
baseline_extra='\b(pshufb|palignr|phaddw|phaddd|phsubw|phsubd|pmaddubsw|pabs[bwd]|psign[bwd]|pmulhrsw|ptest|pmulld|pmin[su][bwd]|pmax[su][bwd]|round[sp][sd]|blendv?p[sd]|pblendvb|pblendw|pinsr[bdq]|pextr[bdq]|pmov[sz]x[bwd][wdq]|packusdw|pcmpeqq|pcmpgtq|dpp[sd]|insertps|extractps|mpsadbw|phminposuw|movntdqa|haddp[sd]|hsubp[sd]|addsubp[sd]|movddup|movs[hl]dup|lddqu|popcnt|lzcnt|andn|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|mulx|rorx|sarx|shlx|shrx|movbe|crc32)\b'

fail=0
checked=0
check() {  # object, forbidden regex, what
  local hits
  hits=$(objdump -d --no-show-raw-insn "$1" | awk -F'\t' 'NF >= 2 {print $2}' | grep -E -- "$2" | sort | uniq -c | sort -rn | head -5 || true)
  if [[ -n $hits ]]; then
    echo "FAIL: $(basename "$1") has $3:" >&2
    echo "$hits" >&2
    fail=1
  fi
}
while IFS= read -r obj; do
  checked=$((checked + 1))
  case $(basename "$obj") in
    *_avx512vnni.cpp.o) check "$obj" "^($bf16|$avx512_other)\b" "instructions beyond AVX-512 F/BW/VL/DQ + VNNI" ;;
    *_avx512bf16.cpp.o) check "$obj" "^($vnni|$avx512_other)\b" "instructions beyond AVX-512 F/BW/VL/DQ + BF16" ;;
    *_avx512.cpp.o) check "$obj" "^($vnni|$bf16|$avx512_other)\b" "instructions beyond AVX-512 F/BW/VL/DQ" ;;
    *_avx2.cpp.o) check "$obj" "($evex)|^(\{vex\} *)?($vnni|$bf16)\b" "AVX-512 (EVEX) instructions" ;;
    *) check "$obj" "^v[a-z]|%[yz]mm|$baseline_extra" "instructions beyond baseline x86-64" ;;
  esac
done < <(find "$objdir" -name '*.o' | sort)
# Controls: the check must see the instructions it looks for, or it proves nothing.
require() {  # object name, regex, what
  local obj
  obj=$(find "$objdir" -name "$1" | head -1)
  if [[ -z $obj ]] || ! objdump -d --no-show-raw-insn "$obj" | awk -F'\t' 'NF >= 2 {print $2}' | grep -E -- "$2" >/dev/null; then
    echo "FAIL: expected $3 in $1 (the disassembly check is blind)" >&2
    fail=1
  fi
}
require gemm_avx512vnni.cpp.o '^vpdpbusd ' "vpdpbusd"
require gemm_avx512bf16.cpp.o '^vdpbf16ps ' "vdpbf16ps"
require gemm_avx512.cpp.o '%zmm' "zmm registers"
if ((checked == 0)); then
  echo "FAIL: no object files under $objdir" >&2
  exit 1
fi
echo "checked $checked kernels object files"
exit $fail
