// AVX-512 VNNI loop of the machine-limit probes (kernels/machine_limits.h).
#include <immintrin.h>

#include "kernels/machine_limits.h"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace recap::kernels::avx512vnni {

double int8_dot_loop(long iters) {
  __m512i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  return static_cast<double>(_mm512_reduce_add_epi32(s));
}

}  // namespace recap::kernels::avx512vnni

// ---------------------------------------------------------------- quantized-tile ceilings
// The instruction mix of one 4-row half of the int8/int4 full-tile GEMM (gemm_avx512vnni.cpp,
// quant_half_tile_asm) with every operand at a fixed address in L1, so nothing but the
// instructions themselves limits it. Per unit of 4 k: 3 weight lines (int4: 3 masked nibble
// extractions of a line per unit), 4 activation broadcasts, 12 vpdpbusd. With `groups`, every
// weight group (int8: 16 units, int4: 8) also starts its 12 int32 sums from a broadcast
// correction and ends with the float step the numerics contract requires per accumulator:
// vcvtdq2ps + vfmadd231ps by the group's scales (3 vcvtph2ps).
namespace recap::kernels::avx512vnni {
namespace {

alignas(64) unsigned char g_ceiling_buf[8192];

#define RCL_DOT3(t, a0, a1, a2)              \
  "vpdpbusd %%zmm" #t ", %%zmm24, %%zmm" #a0 \
  "\n\t"                                     \
  "vpdpbusd %%zmm" #t ", %%zmm25, %%zmm" #a1 \
  "\n\t"                                     \
  "vpdpbusd %%zmm" #t ", %%zmm26, %%zmm" #a2 "\n\t"
#define RCL_BC(off, t) "vpbroadcastd " #off "(%[a]), %%zmm" #t "\n\t"
#define RCL_ROW(off, t, a0, a1, a2) RCL_BC(off, t) RCL_DOT3(t, a0, a1, a2)
#define RCL_UNIT_DOTS \
  RCL_ROW(0, 27, 0, 4, 8) RCL_ROW(4, 28, 1, 5, 9) RCL_ROW(8, 27, 2, 6, 10) RCL_ROW(12, 28, 3, 7, 11)
#define RCL_INT8_UNIT                                                                 \
  "vmovdqu64 (%[b]), %%zmm24\n\tvmovdqu64 64(%[b]), %%zmm25\n\tvmovdqu64 128(%[b]), " \
  "%%zmm26\n\t" RCL_UNIT_DOTS
#define RCL_INT4_LINE                                                                               \
  "vpandd (%[b]), %%zmm29, %%zmm24\n\tvpandd 64(%[b]), %%zmm29, %%zmm25\n\t"                        \
  "vpandd 128(%[b]), %%zmm29, %%zmm26\n\t" RCL_UNIT_DOTS                                            \
  "vpsrlw $4, (%[b]), %%zmm24\n\tvpsrlw $4, 64(%[b]), %%zmm25\n\tvpsrlw $4, 128(%[b]), %%zmm26\n\t" \
  "vpandd %%zmm29, %%zmm24, %%zmm24\n\tvpandd %%zmm29, %%zmm25, %%zmm25\n\t"                        \
  "vpandd %%zmm29, %%zmm26, %%zmm26\n\t" RCL_UNIT_DOTS
#define RCL_INIT1(i, a0, a1, a2)                                                   \
  "vpbroadcastd " #i "*4(%[a]), %%zmm" #a0 "\n\tvmovdqa64 %%zmm" #a0 ", %%zmm" #a1 \
  "\n\t"                                                                           \
  "vmovdqa64 %%zmm" #a0 ", %%zmm" #a2 "\n\t"
#define RCL_INIT RCL_INIT1(0, 0, 4, 8) RCL_INIT1(1, 1, 5, 9) RCL_INIT1(2, 2, 6, 10) RCL_INIT1(3, 3, 7, 11)
#define RCL_FMA1(isum, sreg, acc)                                                                      \
  "vcvtdq2ps %%zmm" #isum ", %%zmm" #isum "\n\tvfmadd231ps %%zmm" #sreg ", %%zmm" #isum ", %%zmm" #acc \
  "\n"                                                                                                 \
  "\t"
#define RCL_TAIL                                                                                           \
  "vcvtph2ps 256(%[b]), %%zmm24\n\tvcvtph2ps 288(%[b]), %%zmm25\n\tvcvtph2ps 320(%[b]), "                  \
  "%%zmm26\n\t" RCL_FMA1(0, 24, 12) RCL_FMA1(4, 25, 16) RCL_FMA1(8, 26, 20) RCL_FMA1(1, 24, 13)            \
      RCL_FMA1(5, 25, 17) RCL_FMA1(9, 26, 21) RCL_FMA1(2, 24, 14) RCL_FMA1(6, 25, 18) RCL_FMA1(10, 26, 22) \
          RCL_FMA1(3, 24, 15) RCL_FMA1(7, 25, 19) RCL_FMA1(11, 26, 23)
// Zeroed float accumulators (no denormal or NaN operands); zmm29 stands for the nibble mask.
#define RCL_SETUP                                                                                    \
  "vpxord %%zmm12, %%zmm12, %%zmm12\n\tvmovdqa64 %%zmm12, %%zmm13\n\tvmovdqa64 %%zmm12, %%zmm14\n\t" \
  "vmovdqa64 %%zmm12, %%zmm15\n\tvmovdqa64 %%zmm12, %%zmm16\n\tvmovdqa64 %%zmm12, %%zmm17\n\t"       \
  "vmovdqa64 %%zmm12, %%zmm18\n\tvmovdqa64 %%zmm12, %%zmm19\n\tvmovdqa64 %%zmm12, %%zmm20\n\t"       \
  "vmovdqa64 %%zmm12, %%zmm21\n\tvmovdqa64 %%zmm12, %%zmm22\n\tvmovdqa64 %%zmm12, %%zmm23\n\t"       \
  "vpternlogd $0xff, %%zmm29, %%zmm29, %%zmm29\n\t"
#define RCL_LOOP(body)                                                                                \
  long n = iters;                                                                                     \
  const unsigned char* a = g_ceiling_buf;                                                             \
  const unsigned char* b = g_ceiling_buf + 4096;                                                      \
  __asm__ volatile(RCL_SETUP "1:\n\t" body "dec %[n]\n\tjnz 1b\n\t"                                   \
                   : [n] "+r"(n)                                                                      \
                   : [a] "r"(a), [b] "r"(b)                                                           \
                   : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",  \
                     "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", \
                     "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", \
                     "xmm28", "xmm29", "cc", "memory");

}  // namespace

// One int8 weight group (16 units, 192 vpdpbusd) per iteration.
double quant_tile_loop(long iters, QuantTileMix mix) {
  switch (mix) {
    case QuantTileMix::Int8Dots: {
      RCL_LOOP(".rept 16\n\t" RCL_INT8_UNIT ".endr\n\t")
      break;
    }
    case QuantTileMix::Int8Groups: {
      RCL_LOOP(RCL_INIT ".rept 16\n\t" RCL_INT8_UNIT ".endr\n\t" RCL_TAIL)
      break;
    }
    case QuantTileMix::Int4Dots: {
      RCL_LOOP(".rept 8\n\t" RCL_INT4_LINE ".endr\n\t")
      break;
    }
    case QuantTileMix::Int4Groups: {
      RCL_LOOP(".rept 2\n\t" RCL_INIT ".rept 4\n\t" RCL_INT4_LINE ".endr\n\t" RCL_TAIL ".endr\n\t")
      break;
    }
  }
  return static_cast<double>(g_ceiling_buf[0]);
}

#undef RCL_DOT3
#undef RCL_BC
#undef RCL_ROW
#undef RCL_UNIT_DOTS
#undef RCL_INT8_UNIT
#undef RCL_INT4_LINE
#undef RCL_INIT1
#undef RCL_INIT
#undef RCL_FMA1
#undef RCL_TAIL
#undef RCL_SETUP
#undef RCL_LOOP

}  // namespace recap::kernels::avx512vnni
