// AVX2 + FMA GEMM kernels: the fallback for CPUs without AVX-512 (and for formats whose
// AVX-512 instructions, VNNI or BF16, the CPU lacks). Same blocking scheme as
// gemm_avx512.cpp with ymm registers: micro-kernels of up to 6 rows (f32/bf16; 4 for
// int8/int4) x one 16-row panel (two ymm halves).
//   int8: s8 x s8 products through the sign trick: maddubs(|a|, sign(w, a)) is exact since
//         |a|, |w| <= 127 (pair sums <= 32258 never saturate), then madd with ones -> int32.
//   int4: maddubs(nibble u8 in [0,15], a s8): pair sums <= 3810, summed over a group's 8 units
//         in int16 lanes (<= 30480, exact) and widened once per group; the zero point 8 is
//         removed by the same corr = -8 * sum(q_x) as the VNNI kernel.
//   int8/int4 register-accumulator scheme (issue 16): the group's integer sums of a tile stay
//         in ymm registers over the whole group (full 4-row tiles: inline asm, operands pinned),
//         then one conversion to float and one fma with the group's scales per group; the
//         float accumulators of a 4-row tile do not fit beside them in 16 ymm and live in the
//         tile of Y (L1), those of tiles of <= 2 rows in registers (see micro_quant).
//   bf16: weights widened to f32 exactly (bf16 << 16); X rounded to bf16 like every ISA.
// The int32 dot products equal the reference's exactly and the float steps are the same, so
// int8/int4 results are bit-identical to ref::gemm.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/gemm_internal.h"
#include "kernels/weight_formats.h"

namespace recap::kernels::avx2 {
namespace {

using wf::kPanelRows;
constexpr int kMR = 6;       // f32 / bf16 tile rows: 12 ymm accumulators
constexpr int kMRQuant = 4;  // int8 / int4: 8 integer accumulators + temporaries in 16 ymm

inline __m256i tail_mask8(int64_t valid) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(valid, 0, 8))), idx);
}
inline uint32_t hmax_epu32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}
inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Bit-identical to detail::quantize_row_ref.
void quantize_row(const float* x, int64_t k, int64_t kp, int64_t group, int32_t zp, int8_t* q, float* sx,
                  int32_t* corr) {
  __m256i amax = _mm256_setzero_si256();
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  for (int64_t i = 0; i < k; i += 8) {
    const __m256i v = _mm256_maskload_epi32(reinterpret_cast<const int*>(x + i), tail_mask8(k - i));
    amax = _mm256_max_epu32(amax, _mm256_and_si256(v, absmask));
  }
  const uint32_t amax_bits = hmax_epu32(amax);
  if (amax_bits >= 0x7f800000u || amax_bits == 0) {
    std::memset(q, 0, static_cast<size_t>(kp));
    *sx = amax_bits == 0 ? 0.f : __builtin_nanf("");
  } else {
    float a;
    std::memcpy(&a, &amax_bits, 4);
    const __m256 inv = _mm256_set1_ps(127.f / a);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    alignas(32) int32_t tmp[8];
    for (int64_t i = 0; i < kp; i += 8) {
      const __m256 v = _mm256_maskload_ps(x + i, tail_mask8(k - i));
      __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
      qi = _mm256_min_epi32(_mm256_max_epi32(qi, lo), hi);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), qi);
      for (int j = 0; j < 8; ++j) q[i + j] = static_cast<int8_t>(tmp[j]);
    }
    *sx = a / 127.f;
  }
  for (int64_t g = 0; g < kp / group; ++g) {
    __m256i s = _mm256_setzero_si256();
    for (int64_t j = 0; j < group; j += 8)
      s = _mm256_add_epi32(
          s, _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + g * group + j))));
    corr[g] = -zp * hsum_epi32(s);
  }
}

// out[i] = the bytewise |in[i]| of count 4-byte units (int8 values in [-127, 127]).
void abs_units(const uint32_t* in, int64_t count, uint32_t* out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm256_abs_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i))));
  for (; i < count; ++i) {
    const __m128i v = _mm_abs_epi8(_mm_cvtsi32_si128(static_cast<int>(in[i])));
    out[i] = static_cast<uint32_t>(_mm_cvtsi128_si32(v));
  }
}

struct MicroArgs {
  const uint32_t* a;
  const uint32_t* a_abs;  // int8: |a| of every byte of the units at a (same layout)
  const uint8_t* b;       // panel data at the K-block start
  const uint16_t* s;      // panel scales at the K-block start (int formats)
  const int32_t* corr;    // this tile's corrections at the K-block's first group
  int64_t kunits;
  float* y;
  int64_t ldy;
  const float* bias;  // at the panel's first column, or null
  const float* sx;
  int64_t valid_cols;  // columns of this panel inside n (1..16)
  bool first, last;
  // Full int8/int4 tiles: the first tile of a panel's K-block prefetches the same lines of the
  // next panel (this many bytes further), which the next tiles' loop reads next; else 0.
  int64_t prefetch_bytes = 0;
};

// Loads / stores one 16-wide row piece of Y honouring the column tail.
inline void load_row(const float* y, int64_t valid, __m256& lo, __m256& hi) {
  if (valid >= 16) {
    lo = _mm256_loadu_ps(y);
    hi = _mm256_loadu_ps(y + 8);
  } else {
    lo = _mm256_maskload_ps(y, tail_mask8(valid));
    hi = _mm256_maskload_ps(y + 8, tail_mask8(valid - 8));
  }
}
inline void store_row(float* y, int64_t valid, __m256 lo, __m256 hi) {
  if (valid >= 16) {
    _mm256_storeu_ps(y, lo);
    _mm256_storeu_ps(y + 8, hi);
  } else {
    _mm256_maskstore_ps(y, tail_mask8(valid), lo);
    _mm256_maskstore_ps(y + 8, tail_mask8(valid - 8), hi);
  }
}

template <int MR, bool BF16>
void micro_float(const MicroArgs& g) {
  __m256 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (g.first)
      acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    else
      load_row(g.y + i * g.ldy, g.valid_cols, acc[i][0], acc[i][1]);
  }
  const uint32_t* a = g.a;
  const uint8_t* b = g.b;
  if constexpr (BF16) {
    const __m256i himask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    for (int64_t u = 0; u < g.kunits; ++u) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
      const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
      const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
      const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, himask));
      const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, himask));
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const uint32_t au = a[i];
        float ae, ao;
        const uint32_t aeb = au << 16, aob = au & 0xffff0000u;
        std::memcpy(&ae, &aeb, 4);
        std::memcpy(&ao, &aob, 4);
        const __m256 ve = _mm256_set1_ps(ae), vo = _mm256_set1_ps(ao);
        acc[i][0] = _mm256_fmadd_ps(ve, e0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(ve, e1, acc[i][1]);
        acc[i][0] = _mm256_fmadd_ps(vo, o0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(vo, o1, acc[i][1]);
      }
      a += MR;
      b += 64;
    }
  } else {
    for (int64_t u = 0; u < g.kunits; ++u) {
      const __m256 w0 = _mm256_loadu_ps(reinterpret_cast<const float*>(b));
      const __m256 w1 = _mm256_loadu_ps(reinterpret_cast<const float*>(b + 32));
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        float av;
        std::memcpy(&av, &a[i], 4);
        const __m256 v = _mm256_set1_ps(av);
        acc[i][0] = _mm256_fmadd_ps(v, w0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(v, w1, acc[i][1]);
      }
      a += MR;
      b += 64;
    }
  }
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  const bool add_bias = g.last && g.bias;
  if (add_bias) load_row(g.bias, g.valid_cols, b0, b1);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (add_bias) {
      acc[i][0] = _mm256_add_ps(acc[i][0], b0);
      acc[i][1] = _mm256_add_ps(acc[i][1], b1);
    }
    store_row(g.y + i * g.ldy, g.valid_cols, acc[i][0], acc[i][1]);
  }
}

// ---------------------------------------------------------------- full 4-row tiles in asm
// One weight group of a full 4 x 16 tile, in inline asm: GCC 12 compiles the intrinsics of
// these loops with two of the eight accumulators spilled to the stack and a register copy per
// accumulator and unit (the int4 loop far worse), which costs more than the loop's multiplies.
// Register allocation: the 8 accumulators (row i, half-panel h) and the constants are asm
// operands the compiler places; ymm8-13 are the loop's temporaries (clobbered):
//   ymm8, ymm9   the weight unit's two half-panels (int8: as s8; int4: the packed line)
//   ymm10, ymm11 int8: broadcast unit of a row and its |a|; int4: the unpacked nibbles
//   ymm12, ymm13 products (int4: ymm12 the broadcast unit)
// The operation sequence per row and half-panel is the intrinsics loop's (micro_quant), so the
// sums are the same exact integers.
#define RECAP_AVX2_STR(x) RECAP_AVX2_STR_(x)
#define RECAP_AVX2_STR_(x) #x
#define RECAP_AVX2_TILE_ROWS 4    // rows of the asm tile (kMRQuant)
#define RECAP_AVX2_UNIT_BYTES 16  // one unit of the tile's rows: 4 x 4 bytes
#define RECAP_AVX2_INT8_UNITS 16  // units per int8 group
#define RECAP_AVX2_INT4_LINES 4   // 64-byte weight lines (2 units each) per int4 group
// int8 row i of one unit: acc[i][h] += madd(maddubs(|a_i|, sign(w_h, a_i)), ones).
#define RECAP_AVX2_I8_ROW(i, acc0, acc1)     \
  "vpbroadcastd " #i                         \
  "*4(%[a]), %%ymm10\n\t"                    \
  "vpbroadcastd " #i                         \
  "*4(%[aa]), %%ymm11\n\t"                   \
  "vpsignb %%ymm10, %%ymm8, %%ymm12\n\t"     \
  "vpsignb %%ymm10, %%ymm9, %%ymm13\n\t"     \
  "vpmaddubsw %%ymm12, %%ymm11, %%ymm12\n\t" \
  "vpmaddubsw %%ymm13, %%ymm11, %%ymm13\n\t" \
  "vpmaddwd %[ones], %%ymm12, %%ymm12\n\t"   \
  "vpmaddwd %[ones], %%ymm13, %%ymm13\n\t"   \
  "vpaddd %%ymm12, %[" #acc0 "], %[" #acc0   \
  "]\n\t"                                    \
  "vpaddd %%ymm13, %[" #acc1 "], %[" #acc1 "]\n\t"
// int4 row i of one unit (nibbles in ymm10/11): acc[i][h] += maddubs(nib_h, a_i) in int16.
#define RECAP_AVX2_I4_ROW(off, acc0, acc1)   \
  "vpbroadcastd " #off                       \
  "(%[a]), %%ymm12\n\t"                      \
  "vpmaddubsw %%ymm12, %%ymm10, %%ymm13\n\t" \
  "vpmaddubsw %%ymm12, %%ymm11, %%ymm12\n\t" \
  "vpaddw %%ymm13, %[" #acc0 "], %[" #acc0   \
  "]\n\t"                                    \
  "vpaddw %%ymm12, %[" #acc1 "], %[" #acc1 "]\n\t"
#define RECAP_AVX2_ZERO_ACC          \
  "vpxor %[c00], %[c00], %[c00]\n\t" \
  "vpxor %[c01], %[c01], %[c01]\n\t" \
  "vpxor %[c10], %[c10], %[c10]\n\t" \
  "vpxor %[c11], %[c11], %[c11]\n\t" \
  "vpxor %[c20], %[c20], %[c20]\n\t" \
  "vpxor %[c21], %[c21], %[c21]\n\t" \
  "vpxor %[c30], %[c30], %[c30]\n\t" \
  "vpxor %[c31], %[c31], %[c31]\n\t"
static_assert(RECAP_AVX2_TILE_ROWS == kMRQuant);
static_assert(RECAP_AVX2_UNIT_BYTES == kMRQuant * 4);
static_assert(RECAP_AVX2_INT8_UNITS == wf::kInt8Group / 4);
static_assert(RECAP_AVX2_INT4_LINES == wf::kInt4Group / 8);
static_assert(wf::kPanelRows * 4 == 64, "one int8 unit / int4 line of a panel is 64 bytes");

// acc[i][h] = the int32 (int8) / int16-lane (int4) sums of one group of a full 4-row tile.
// a, aa, b: the group's first unit of the tile (aa: int8 |a|) and weight bytes. For every
// 64-byte weight line read, the line pf bytes further is prefetched (the next panel's same
// line; pf = 0 touches the line being read, a no-op).
template <bool INT4>
inline void group_sums_asm(const uint32_t* a, const uint32_t* aa, const uint8_t* b, int64_t pf,
                           __m256i (&acc)[4][2]) {
  long count = INT4 ? RECAP_AVX2_INT4_LINES : RECAP_AVX2_INT8_UNITS;
  if constexpr (INT4) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    __asm__ volatile(
        RECAP_AVX2_ZERO_ACC
        "1:\n\t"
        "prefetcht0 (%[b], %[pf])\n\t"
        "vmovdqu (%[b]), %%ymm8\n\t"
        "vmovdqu 32(%[b]), %%ymm9\n\t"
        "vpand %[nib], %%ymm8, %%ymm10\n\t"
        "vpand %[nib], %%ymm9, %%ymm11\n\t"  //
        RECAP_AVX2_I4_ROW(0, c00, c01) RECAP_AVX2_I4_ROW(4, c10, c11) RECAP_AVX2_I4_ROW(8, c20, c21)
            RECAP_AVX2_I4_ROW(12, c30, c31)  //
        "vpsrlw $4, %%ymm8, %%ymm8\n\t"
        "vpsrlw $4, %%ymm9, %%ymm9\n\t"
        "vpand %[nib], %%ymm8, %%ymm10\n\t"
        "vpand %[nib], %%ymm9, %%ymm11\n\t"  //
        RECAP_AVX2_I4_ROW(16, c00, c01) RECAP_AVX2_I4_ROW(20, c10, c11) RECAP_AVX2_I4_ROW(24, c20, c21)
            RECAP_AVX2_I4_ROW(28, c30, c31)  //
        "add $64, %[b]\n\t"
        "add $32, %[a]\n\t"
        "dec %[count]\n\t"
        "jnz 1b\n\t"
        : [c00] "=&x"(acc[0][0]), [c01] "=&x"(acc[0][1]), [c10] "=&x"(acc[1][0]), [c11] "=&x"(acc[1][1]),
          [c20] "=&x"(acc[2][0]), [c21] "=&x"(acc[2][1]), [c30] "=&x"(acc[3][0]), [c31] "=&x"(acc[3][1]),
          [a] "+r"(a), [b] "+r"(b), [count] "+r"(count)
        : [nib] "x"(nib), [pf] "r"(pf)
        : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "cc", "memory");
  } else {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    __asm__ volatile(RECAP_AVX2_ZERO_ACC
                     "1:\n\t"
                     "prefetcht0 (%[b], %[pf])\n\t"
                     "vpxor (%[b]), %[flip], %%ymm8\n\t"
                     "vpxor 32(%[b]), %[flip], %%ymm9\n\t"  //
                     RECAP_AVX2_I8_ROW(0, c00, c01) RECAP_AVX2_I8_ROW(1, c10, c11) RECAP_AVX2_I8_ROW(2, c20, c21)
                         RECAP_AVX2_I8_ROW(3, c30, c31)  //
                     "add $64, %[b]\n\t"
                     "add $" RECAP_AVX2_STR(RECAP_AVX2_UNIT_BYTES) ", %[a]\n\t"
                     "add $" RECAP_AVX2_STR(RECAP_AVX2_UNIT_BYTES) ", %[aa]\n\t"
                     "dec %[count]\n\t"
                     "jnz 1b\n\t"
                     : [c00] "=&x"(acc[0][0]), [c01] "=&x"(acc[0][1]), [c10] "=&x"(acc[1][0]),
                       [c11] "=&x"(acc[1][1]), [c20] "=&x"(acc[2][0]), [c21] "=&x"(acc[2][1]),
                       [c30] "=&x"(acc[3][0]), [c31] "=&x"(acc[3][1]), [a] "+r"(a), [aa] "+r"(aa),
                       [b] "+r"(b), [count] "+r"(count)
                     : [ones] "x"(ones), [flip] "x"(flip), [pf] "r"(pf)
                     : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "cc", "memory");
  }
}

// int8 (INT4 = false) / int4 (INT4 = true) micro-kernel: an MR x 16 block of Y (one panel)
// over the whole weight groups of one K-block. Per group, the exact int32 dot products are
// accumulated in ymm registers over all the group's units, then converted to float once and
// scaled, acc = fma(float(isum), scale, acc), in group order as ref::gemm does; at the end
// y = fma(acc, sx, bias) or acc * sx. Register budget (16 ymm):
//   int8, MR = 4: 8 int32 accumulators, 2 weight vectors, the broadcast unit and its absolute
//     value (|a| comes precomputed: a broadcast load instead of a vpabsb per row and unit),
//     one product temporary, the ones vector: 14.
//   int4, MR = 4: 8 int16 accumulators (see below), 2 nibble vectors, the broadcast unit, one
//     product temporary, the nibble mask: 13.
// So the float accumulators of a full tile cannot stay in registers too (8 more); they live
// in the Y tile (L1): one load, fma and store per row, half-panel and group, 1/16 (int8) or
// 1/8 (int4) of the inner loop's operations, off the critical path (the rows are independent
// chains). Tiles of MR <= 2 rows (decode, and the last tile of M) keep them in registers.
// Exactness (the int32 sums equal the reference's):
//   int8: s8 x s8 through the sign trick, maddubs(|a|, sign(w, a)): |a|, |w| <= 127, so the
//     pair sums are <= 32258 (no saturation), then vpmaddwd with ones -> int32 per unit.
//   int4: maddubs(nibble in [0,15], a s8): pair sums <= 2 * 15 * 127 = 3810, and the 8 units of
//     a group add 8 of them per int16 lane: <= 30480 < 32767, so the group is summed in int16
//     (vpaddw) and widened once per group (vpmaddwd with ones), instead of once per unit: the
//     int4 loop issues 2 multiplies per row and unit instead of 4. The zero point 8 is removed
//     by adding corr = -8 * sum(q_x) to the int32 group sum.
template <int MR, bool INT4>
void micro_quant(const MicroArgs& g) {
  constexpr int64_t kGroup = INT4 ? wf::kInt4Group : wf::kInt8Group;
  constexpr int64_t kUnitsPerGroup = kGroup / 4;
  constexpr int64_t kGroupBytes = INT4 ? kGroup * 8 : kGroup * 16;
  static_assert(!INT4 || kUnitsPerGroup * 2 * 15 * 127 <= 32767, "int4 group sums must fit int16 lanes");
  constexpr bool kRegFloat = MR <= 2;
  const int64_t groups = g.kunits / kUnitsPerGroup;
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const uint32_t* a = g.a;
  const uint32_t* aa = g.a_abs;
  const uint8_t* b = g.b;
  __m256 facc[MR][2];
  if constexpr (kRegFloat) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      if (g.first)
        facc[i][0] = facc[i][1] = _mm256_setzero_ps();
      else
        load_row(g.y + i * g.ldy, g.valid_cols, facc[i][0], facc[i][1]);
    }
  }
  for (int64_t gi = 0; gi < groups; ++gi) {
    __m256i acc[MR][2];
    if constexpr (MR == kMRQuant) {
      group_sums_asm<INT4>(a, aa, b, 0, acc);
      if constexpr (INT4) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const __m256i c = _mm256_set1_epi32(g.corr[gi * MR + i]);
          acc[i][0] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][0], ones16), c);
          acc[i][1] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][1], ones16), c);
        }
      }
    } else if constexpr (INT4) {
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
      for (int64_t o = 0; o < kUnitsPerGroup / 2; ++o) {
        const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + o * 64));
        const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + o * 64 + 32));
#pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          const __m256i w0 = _mm256_and_si256(half ? _mm256_srli_epi16(v0, 4) : v0, nib);
          const __m256i w1 = _mm256_and_si256(half ? _mm256_srli_epi16(v1, 4) : v1, nib);
          const uint32_t* au = a + (2 * o + half) * MR;
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const __m256i av = _mm256_set1_epi32(static_cast<int>(au[i]));
            acc[i][0] = _mm256_add_epi16(acc[i][0], _mm256_maddubs_epi16(w0, av));
            acc[i][1] = _mm256_add_epi16(acc[i][1], _mm256_maddubs_epi16(w1, av));
          }
        }
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m256i c = _mm256_set1_epi32(g.corr[gi * MR + i]);
        acc[i][0] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][0], ones16), c);
        acc[i][1] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][1], ones16), c);
      }
    } else {
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();  // no correction
      for (int64_t u = 0; u < kUnitsPerGroup; ++u) {
        const __m256i w0 =
            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + u * 64)), flip);
        const __m256i w1 =
            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + u * 64 + 32)), flip);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const __m256i av = _mm256_set1_epi32(static_cast<int>(a[u * MR + i]));
          const __m256i avabs = _mm256_set1_epi32(static_cast<int>(aa[u * MR + i]));
          const __m256i p0 = _mm256_maddubs_epi16(avabs, _mm256_sign_epi8(w0, av));
          acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones16));
          const __m256i p1 = _mm256_maddubs_epi16(avabs, _mm256_sign_epi8(w1, av));
          acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones16));
        }
      }
    }
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.s + gi * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.s + gi * 16 + 8)));
    if constexpr (kRegFloat) {
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        facc[i][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][0]), s0, facc[i][0]);
        facc[i][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][1]), s1, facc[i][1]);
      }
    } else {
      const bool fresh = g.first && gi == 0;
      const bool finish = g.last && gi == groups - 1;
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();  // fma with +0 first, like ref
        if (!fresh) load_row(g.y + i * g.ldy, g.valid_cols, f0, f1);
        f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][0]), s0, f0);
        f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][1]), s1, f1);
        if (finish) {  // the last group of the last K-block: y = fma(acc, sx, bias) / acc * sx
          // (the bias is loaded here, not kept in 2 ymm across the loop: GCC would spill)
          __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
          if (g.bias) load_row(g.bias, g.valid_cols, bias0, bias1);
          const __m256 sx = _mm256_set1_ps(g.sx[i]);
          f0 = g.bias ? _mm256_fmadd_ps(f0, sx, bias0) : _mm256_mul_ps(f0, sx);
          f1 = g.bias ? _mm256_fmadd_ps(f1, sx, bias1) : _mm256_mul_ps(f1, sx);
        }
        store_row(g.y + i * g.ldy, g.valid_cols, f0, f1);
      }
    }
    a += kUnitsPerGroup * MR;
    if constexpr (!INT4) aa += kUnitsPerGroup * MR;
    b += kGroupBytes;
  }
  if constexpr (kRegFloat) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      __m256 f0 = facc[i][0], f1 = facc[i][1];
      if (g.last) {
        __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
        if (g.bias) load_row(g.bias, g.valid_cols, bias0, bias1);
        const __m256 sx = _mm256_set1_ps(g.sx[i]);
        f0 = g.bias ? _mm256_fmadd_ps(f0, sx, bias0) : _mm256_mul_ps(f0, sx);
        f1 = g.bias ? _mm256_fmadd_ps(f1, sx, bias1) : _mm256_mul_ps(f1, sx);
      }
      store_row(g.y + i * g.ldy, g.valid_cols, f0, f1);
    }
  }
}

// The prefill hot path: a full 4-row tile on a full panel (all 16 columns inside N). Same
// operations as micro_quant<kMRQuant, INT4> in the same order, without its per-group branches
// (column tail masks, first-group test), which cost ~15% of the time there: on the first
// K-block the tile of Y is zeroed first, so every group's float step is the same
// y = fma(float(isum), scale, y), the first one with y = +0 exactly like the reference's
// acc = 0.f start; on the last K-block the row scale (and bias) pass follows the groups.
template <bool INT4>
void micro_quant_full_tile(const MicroArgs& g) {
  constexpr int MR = kMRQuant;
  constexpr int64_t kGroup = INT4 ? wf::kInt4Group : wf::kInt8Group;
  constexpr int64_t kUnitsPerGroup = kGroup / 4;
  constexpr int64_t kGroupBytes = INT4 ? kGroup * 8 : kGroup * 16;
  const int64_t groups = g.kunits / kUnitsPerGroup;
  float* const y = g.y;
  const int64_t ldy = g.ldy;
  if (g.first) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(y + i * ldy, _mm256_setzero_ps());
      _mm256_storeu_ps(y + i * ldy + 8, _mm256_setzero_ps());
    }
  }
  const uint32_t* a = g.a;
  const uint32_t* aa = g.a_abs;
  const uint8_t* b = g.b;
  for (int64_t gi = 0; gi < groups; ++gi) {
    __m256i acc[MR][2];
    group_sums_asm<INT4>(a, aa, b, g.prefetch_bytes, acc);
    if constexpr (INT4) {
      const __m256i ones16 = _mm256_set1_epi16(1);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m256i c = _mm256_set1_epi32(g.corr[gi * MR + i]);
        acc[i][0] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][0], ones16), c);
        acc[i][1] = _mm256_add_epi32(_mm256_madd_epi16(acc[i][1], ones16), c);
      }
    }
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.s + gi * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g.s + gi * 16 + 8)));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      float* yr = y + i * ldy;
      _mm256_storeu_ps(yr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][0]), s0, _mm256_loadu_ps(yr)));
      _mm256_storeu_ps(yr + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][1]), s1, _mm256_loadu_ps(yr + 8)));
    }
    a += kUnitsPerGroup * MR;
    if constexpr (!INT4) aa += kUnitsPerGroup * MR;
    b += kGroupBytes;
  }
  if (g.last) {
    const __m256 b0 = g.bias ? _mm256_loadu_ps(g.bias) : _mm256_setzero_ps();
    const __m256 b1 = g.bias ? _mm256_loadu_ps(g.bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      float* yr = y + i * ldy;
      const __m256 sx = _mm256_set1_ps(g.sx[i]);
      const __m256 f0 = _mm256_loadu_ps(yr), f1 = _mm256_loadu_ps(yr + 8);
      _mm256_storeu_ps(yr, g.bias ? _mm256_fmadd_ps(f0, sx, b0) : _mm256_mul_ps(f0, sx));
      _mm256_storeu_ps(yr + 8, g.bias ? _mm256_fmadd_ps(f1, sx, b1) : _mm256_mul_ps(f1, sx));
    }
  }
}

using MicroFn = void (*)(const MicroArgs&);
MicroFn pick_micro(WeightFormat f, int mr) {
#define RECAP_MR_CASE(MR)               \
  case MR:                              \
    switch (f) {                        \
      case WeightFormat::F32:           \
        return &micro_float<MR, false>; \
      case WeightFormat::BF16:          \
        return &micro_float<MR, true>;  \
      case WeightFormat::Int8:          \
        return &micro_quant<MR, false>; \
      case WeightFormat::Int4:          \
        return &micro_quant<MR, true>;  \
    }                                   \
    break;
  switch (mr) {
    RECAP_MR_CASE(1)
    RECAP_MR_CASE(2)
    RECAP_MR_CASE(3)
    RECAP_MR_CASE(4)
    RECAP_MR_CASE(5)
    RECAP_MR_CASE(6)
  }
#undef RECAP_MR_CASE
  return nullptr;
}

}  // namespace

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  detail::check_gemm_args(x, m, ldx, w, y, ldy);
  if (m == 0) return;
  const WeightFormat f = w.format;
  const int64_t n = w.n, k = w.k, kp = wf::padded_k(f, k);
  const bool quant = f == WeightFormat::Int8 || f == WeightFormat::Int4;
  const int64_t kunits = f == WeightFormat::F32 ? k : f == WeightFormat::BF16 ? kp / 2 : kp / 4;
  const int64_t group = quant ? wf::group_size(f) : 4;
  const int64_t groups = quant ? kp / group : 0;
  const int64_t tile_rows = quant ? kMRQuant : kMR;
  const int64_t tiles = (m + tile_rows - 1) / tile_rows;

  const size_t units_bytes = static_cast<size_t>(tiles * tile_rows * kunits * 4);
  const size_t corr_bytes = static_cast<size_t>(tiles * tile_rows * groups * 4);
  const size_t abs_bytes = f == WeightFormat::Int8 ? units_bytes : 0;
  uint8_t* pack = static_cast<uint8_t*>(
      detail::scratch(0, units_bytes + abs_bytes + corr_bytes + static_cast<size_t>(m * 4) + 64));
  uint32_t* units = reinterpret_cast<uint32_t*>(pack);
  uint32_t* units_abs = reinterpret_cast<uint32_t*>(pack + units_bytes);
  int32_t* corr = reinterpret_cast<int32_t*>(pack + units_bytes + abs_bytes);
  float* sx = reinterpret_cast<float*>(pack + units_bytes + abs_bytes + corr_bytes);
  if (quant) {
    detail::pack_units_quantized(x, m, ldx, k, kp, group,
                                 f == WeightFormat::Int8 ? wf::kInt8ZeroPoint : wf::kInt4ZeroPoint, kMRQuant,
                                 &quantize_row, units, corr, sx);
    // int8: |a| of every packed byte, in the same layout (the sign trick's unsigned operand).
    // The tiles are contiguous, so the m * kunits packed units are the first ones.
    if (f == WeightFormat::Int8) abs_units(units, m * kunits, units_abs);
  } else
    detail::pack_units_f32(x, m, ldx, k, kMR, units, f == WeightFormat::BF16);

  const int64_t panels = wf::num_panels(n);
  const int64_t panel_bytes = wf::panel_data_bytes(f, k);
  const int64_t scale_stride = quant ? kp / group * kPanelRows : 0;
  const uint8_t* wdata = w.data.data();
  const uint16_t* wscales =
      quant ? reinterpret_cast<const uint16_t*>(wdata + wf::scales_offset(f, n, k)) : nullptr;
  const int64_t wbytes_per_unit = f == WeightFormat::Int4 ? 32 : 64;
  // Units per K-block (whole groups); a single M-tile reuses no weights: no K-blocking.
  const int64_t kb = tiles == 1 ? kunits : f == WeightFormat::Int4 ? 512 : 256;

  const int threads = omp_get_max_threads();
  const detail::GemmWorkPlan plan = detail::plan_gemm_work(panels, tiles, threads, 1);
  const int64_t items = plan.items;

#pragma omp parallel for schedule(static) if (items > 1 && m * n * k >= (1 << 18))
  for (int64_t it = 0; it < items; ++it) {
    int64_t p0, p1, t0, t1;
    plan.item(it, &p0, &p1, &t0, &t1);
    for (int64_t u0 = 0; u0 < kunits; u0 += kb) {
      const int64_t ku = std::min(kb, kunits - u0);
      // One panel's K-block (16 KB) stays in L1 while every M-tile streams past it.
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t col0 = p * kPanelRows;
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t * tile_rows;
          const int mr = static_cast<int>(std::min<int64_t>(tile_rows, m - r0));
          const int64_t valid_cols = std::min<int64_t>(16, n - col0);
          const MicroFn fn =
              quant && mr == kMRQuant && valid_cols == 16
                  ? (f == WeightFormat::Int4 ? &micro_quant_full_tile<true> : &micro_quant_full_tile<false>)
                  : pick_micro(f, mr);
          MicroArgs g;
          g.a = units + t * tile_rows * kunits + u0 * mr;
          g.a_abs = units_abs + t * tile_rows * kunits + u0 * mr;
          g.b = wdata + p * panel_bytes + u0 * wbytes_per_unit;
          g.s = quant ? wscales + p * scale_stride + (u0 * 4 / group) * kPanelRows : nullptr;
          g.corr = quant ? corr + t * tile_rows * groups + (u0 * 4 / group) * mr : nullptr;
          g.kunits = ku;
          g.y = y + r0 * ldy + col0;
          g.ldy = ldy;
          g.bias = bias ? bias + col0 : nullptr;
          g.sx = quant ? sx + r0 : nullptr;
          g.valid_cols = valid_cols;
          g.first = u0 == 0;
          g.last = u0 + ku == kunits;
          g.prefetch_bytes = t == t0 && p + 1 < p1 ? panel_bytes : 0;
          fn(g);
        }
      }
    }
  }
}

}  // namespace recap::kernels::avx2
