// AVX-512 GEMM kernels (F/BW/VL; VNNI for int8/int4 and BF16 for bf16 when the CPU has them).
//
// Structure (all formats): the activations X are packed once per call into M-tiles of up to
// kMR rows, K-interleaved in 4-byte units (f32 value | bf16 pair | 4 int8), so the
// micro-kernel broadcasts one unit per row and step. The weights are already packed in
// 16-row panels (weight_formats.h). A micro-kernel computes an (mr x 16*np) block of Y for a
// K-block, with mr <= 8 rows and np <= 3 panels (24 zmm accumulators; 4 panels for int8/int4
// decode, M <= 2). Full int8/int4 tiles (8 x 48) run in inline asm (quant_half_tile_asm).
// Work is split over OpenMP threads by N-chunks of ~32 panels, a multiple of the panel step
// (and by M-chunks when N is too small to share).
//   for each (N-chunk, M-chunk) item of this thread:
//     for each K-block (np panels x K-block = 24 KB of weights, stays in L1; none for M <= 8):
//       for each group of np panels:  for each M-tile:  micro-kernel
// int8/int4: for every weight group, exact int32 dot products (vpdpbusd, weights are the u8
// operand with zero point 128 / 8, corrected by corr = -zp * sum(q_x)), then
// acc = fma(float(isum), scale, acc) in group order; y = fma(acc, sx, bias) (or acc * sx) at the end. This
// is the same operation sequence as ref::gemm, so the results are bit-identical.
#include <immintrin.h>
#include <omp.h>

// GCC 12's avx512fintrin.h builds some intrinsics on _mm512_undefined_*(), which trips
// -Wuninitialized / -Wmaybe-uninitialized inside the system header after inlining.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "kernels/gemm_internal.h"
#include "kernels/isa.h"
#include "kernels/weight_formats.h"

namespace recap::kernels::avx512 {
namespace {

using wf::kPanelRows;
constexpr int kMR = 8;       // rows per M-tile
constexpr int kNP = 3;       // panels per micro-kernel call (f32, bf16)
constexpr int kNPQuant = 3;  // int8/int4: 24 int32 accumulators + 3 weights + mask in 32 zmm
// int8/int4 with M <= 2 (decode): each accumulator is one dependent chain of vpdpbusd per
// group (8 long for int4) followed by the float step through Y, so one panel's stream is
// latency-bound; 4 panels in flight keep enough independent chains to stream at bandwidth.
constexpr int kNPQuantNarrow = 4;
// Bytes ahead of the current weight line that the decode micro-kernels prefetch.
constexpr int64_t kPrefetchAhead = 1024;

// Bytes of the packed-activation tile area and its units.
struct ActPack {
  const uint32_t* units = nullptr;  // tile t at units + t * kMR * kunits, layout [kunits][mr]
  const int32_t* corr = nullptr;    // tile t at corr + t * kMR * groups, layout [groups][mr]
  const float* sx = nullptr;        // [m] activation scales (int formats)
  int64_t kunits = 0, groups = 0;
};

// vpdpbusd through inline asm: with the intrinsic, GCC 12 copies and spills the 24
// accumulators inside the hot loop (the tied destination confuses its register allocator).
inline __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u8), [s] "v"(s8));
  return acc;
}

inline __mmask16 tail_mask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << valid) - 1u);
}

// ---------------------------------------------------------------- activation packing
// Quantizes one row per the contract (bit-identical to detail::quantize_row_ref).
void quantize_row(const float* x, int64_t k, int64_t kp, int64_t group, int32_t zp, int8_t* q, float* sx,
                  int32_t* corr) {
  __m512i amax = _mm512_setzero_si512();
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
  int64_t i = 0;
  for (; i + 16 <= k; i += 16)
    amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_loadu_si512(x + i), absmask));
  if (i < k)
    amax =
        _mm512_max_epu32(amax, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail_mask(k - i), x + i), absmask));
  const uint32_t amax_bits = _mm512_reduce_max_epu32(amax);
  if (amax_bits >= 0x7f800000u || amax_bits == 0) {
    std::memset(q, 0, static_cast<size_t>(kp));
    *sx = amax_bits == 0 ? 0.f : __builtin_nanf("");
  } else {
    float a;
    std::memcpy(&a, &amax_bits, 4);
    const __m512 inv = _mm512_set1_ps(127.f / a);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (i = 0; i < kp; i += 16) {
      const __mmask16 mk = tail_mask(std::max<int64_t>(0, k - i));
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + i), inv));
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(v));
    }
    *sx = a / 127.f;
  }
  for (int64_t g = 0; g < kp / group; ++g) {
    __m512i s = _mm512_setzero_si512();
    for (int64_t j = 0; j < group; j += 16)
      s = _mm512_add_epi32(
          s, _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * group + j))));
    corr[g] = -zp * _mm512_reduce_add_epi32(s);
  }
}

// ---------------------------------------------------------------- micro-kernels
// Shared store step: rows i < MR, panels j < NP; the last panel may be partial (mask).
template <int MR, int NP>
inline void store_block(__m512 (&acc)[MR][NP], float* y, int64_t ldy, __mmask16 last_mask) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      if (j == NP - 1)
        _mm512_mask_storeu_ps(y + i * ldy + 16 * j, last_mask, acc[i][j]);
      else
        _mm512_storeu_ps(y + i * ldy + 16 * j, acc[i][j]);
    }
}
template <int MR, int NP>
inline void load_block(__m512 (&acc)[MR][NP], const float* y, int64_t ldy, __mmask16 last_mask) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j)
      acc[i][j] = j == NP - 1 ? _mm512_maskz_loadu_ps(last_mask, y + i * ldy + 16 * j)
                              : _mm512_loadu_ps(y + i * ldy + 16 * j);
}
template <int NP>
inline void add_bias(__m512 (&b)[NP], const float* bias, __mmask16 last_mask) {
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j)
    b[j] = j == NP - 1 ? _mm512_maskz_loadu_ps(last_mask, bias + 16 * j) : _mm512_loadu_ps(bias + 16 * j);
}

// Arguments of one micro-kernel call.
struct MicroArgs {
  const uint32_t* a;     // packed activation units of this tile, at the K-block start
  const uint8_t* b;      // first panel's data at the K-block start
  int64_t panel_stride;  // bytes between panels' data
  const uint16_t* s;     // first panel's scales at the K-block start (int formats)
  int64_t scale_stride;  // f16 elements between panels' scales
  const int32_t* corr;   // this tile's corrections at the K-block's first group
  int64_t kunits;        // units in this K-block
  float* y;
  int64_t ldy;
  const float* bias;  // at the first column, or null
  const float* sx;    // this tile's activation scales (int formats)
  __mmask16 last_mask;
  bool first, last;    // first / last K-block
  bool prefetch_next;  // int8/int4 full tiles: prefetch the next K-block's weights
};

// A micro-kernel's float accumulators at the start of a K-block: zero on the first, else the
// partial sums the previous K-block left in Y.
template <int MR, int NP>
inline void start_block(__m512 (&acc)[MR][NP], const MicroArgs& g) {
  if (g.first) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
  } else {
    load_block<MR, NP>(acc, g.y, g.ldy, g.last_mask);
  }
}

template <int MR, int NP, bool BF16>
void micro_float(const MicroArgs& g) {
  __m512 acc[MR][NP];
  start_block<MR, NP>(acc, g);
  const uint32_t* a = g.a;
  const uint8_t* b = g.b;
  for (int64_t u = 0; u < g.kunits; ++u) {
    __m512 w[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j)
      w[j] = _mm512_loadu_ps(reinterpret_cast<const float*>(b + j * g.panel_stride));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      if constexpr (BF16) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i]));
#pragma GCC unroll 16
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, (__m512bh)w[j]);
      } else {
        float av_s;
        std::memcpy(&av_s, &a[i], 4);
        const __m512 av = _mm512_set1_ps(av_s);
#pragma GCC unroll 16
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_fmadd_ps(av, w[j], acc[i][j]);
      }
    }
    a += MR;
    b += 64;
  }
  if (g.last && g.bias) {
    __m512 bv[NP];
    add_bias<NP>(bv, g.bias, g.last_mask);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_add_ps(acc[i][j], bv[j]);
  }
  store_block<MR, NP>(acc, g.y, g.ldy, g.last_mask);
}

// int8 (INT4 = false) / int4 (INT4 = true) micro-kernel over whole weight groups.
// The MR x NP int32 accumulators (24 zmm) live in registers for one group; the float
// accumulators live in the Y tile itself (L1): y = fma(float(isum), scale, y) per group.
// Keeping both sets in registers would need 48 zmm, and GCC then spills inside the hot loop.
template <int MR, int NP, bool INT4>
void micro_quant(const MicroArgs& g) {
  constexpr int64_t kGroup = INT4 ? wf::kInt4Group : wf::kInt8Group;
  constexpr int64_t kUnitsPerGroup = kGroup / 4;
  constexpr int64_t kGroupBytes = INT4 ? kGroup * 8 : kGroup * 16;  // per panel
  const int64_t groups = g.kunits / kUnitsPerGroup;
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const uint32_t* a = g.a;
  const uint8_t* b = g.b;
  float* const y = g.y;
  // Decode shapes (MR x NP <= 8): the float accumulators fit in registers too, which takes
  // the load/store through Y (a store-to-load chain per group) off each panel's critical path.
  constexpr bool kRegAcc = MR * NP <= 8;
  __m512 facc[MR][NP];
  if constexpr (kRegAcc) start_block<MR, NP>(facc, g);
  const int64_t ldy = g.ldy;
  const __mmask16 lm = g.last_mask;
  for (int64_t gi = 0; gi < groups; ++gi) {
    __m512i acc[MR][NP];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512i c = _mm512_set1_epi32(g.corr[gi * MR + i]);
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) acc[i][j] = c;
    }
    if constexpr (INT4) {
      for (int64_t o = 0; o < kUnitsPerGroup / 2; ++o) {
#pragma GCC unroll 16
        for (int half = 0; half < 2; ++half) {
          __m512i w[NP];
#pragma GCC unroll 16
          for (int j = 0; j < NP; ++j) {
            // Decode streams every panel once: fetch ahead of the hardware prefetcher.
            if (MR <= 2 && half == 0)
              _mm_prefetch(reinterpret_cast<const char*>(b + j * g.panel_stride + o * 64 + kPrefetchAhead),
                           _MM_HINT_T0);
            const __m512i v = _mm512_loadu_si512(b + j * g.panel_stride + o * 64);
            w[j] = _mm512_and_si512(half ? _mm512_srli_epi16(v, 4) : v, nib);
          }
          const uint32_t* au = a + (2 * o + half) * MR;
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const __m512i av = _mm512_set1_epi32(static_cast<int>(au[i]));
#pragma GCC unroll 16
            for (int j = 0; j < NP; ++j) acc[i][j] = dpbusd(acc[i][j], w[j], av);
          }
        }
      }
    } else {
      for (int64_t u = 0; u < kUnitsPerGroup; ++u) {
        __m512i w[NP];
#pragma GCC unroll 16
        for (int j = 0; j < NP; ++j) {
          if (MR <= 2)
            _mm_prefetch(reinterpret_cast<const char*>(b + j * g.panel_stride + u * 64 + kPrefetchAhead),
                         _MM_HINT_T0);
          w[j] = _mm512_loadu_si512(b + j * g.panel_stride + u * 64);
        }
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const __m512i av = _mm512_set1_epi32(static_cast<int>(a[u * MR + i]));
#pragma GCC unroll 16
          for (int j = 0; j < NP; ++j) acc[i][j] = dpbusd(acc[i][j], w[j], av);
        }
      }
    }
    const bool fresh = g.first && gi == 0;
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      const __m512 sw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.s + j * g.scale_stride + gi * 16)));
      if constexpr (kRegAcc) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i)
          facc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), sw, facc[i][j]);
      } else {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          float* yp = y + i * ldy + 16 * j;
          // fma with +0 for the first group, exactly like the reference's acc = 0.f start.
          const __m512 prev = fresh         ? _mm512_setzero_ps()
                              : j == NP - 1 ? _mm512_maskz_loadu_ps(lm, yp)
                                            : _mm512_loadu_ps(yp);
          const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), sw, prev);
          if (j == NP - 1)
            _mm512_mask_storeu_ps(yp, lm, v);
          else
            _mm512_storeu_ps(yp, v);
        }
      }
    }
    a += kUnitsPerGroup * MR;
    b += kGroupBytes;
  }
  if constexpr (kRegAcc) store_block<MR, NP>(facc, y, ldy, lm);
  if (g.last) {
    __m512 bv[NP] = {};
    if (g.bias) add_bias<NP>(bv, g.bias, lm);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 s = _mm512_set1_ps(g.sx[i]);
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) {
        float* yp = y + i * ldy + 16 * j;
        const __m512 acc = j == NP - 1 ? _mm512_maskz_loadu_ps(lm, yp) : _mm512_loadu_ps(yp);
        const __m512 v = g.bias ? _mm512_fmadd_ps(acc, s, bv[j]) : _mm512_mul_ps(acc, s);
        if (j == NP - 1)
          _mm512_mask_storeu_ps(yp, lm, v);
        else
          _mm512_storeu_ps(yp, v);
      }
    }
  }
}

// ---------------------------------------------------------------- int8/int4 full tile in asm
// The prefill hot path: a full 8 x 48 tile (3 full panels) over whole weight groups, as two
// 4-row halves. Each half is one asm block so that both accumulator sets stay pinned in
// registers for the whole K-block (GCC 12 otherwise shuffles them through extra vmovdqa64
// copies around every vpdpbusd, and keeping the float accumulators in Y costs a load and a
// store per accumulator and group, ~25% of the time):
//   zmm{i}, zmm{4+i}, zmm{8+i}     int32 group sums of row i for panels 0, 1, 2
//   zmm{12+i}, zmm{16+i}, zmm{20+i} float accumulators of row i (= Y between K-blocks)
//   zmm24-26  the three panels' weights of one unit (then their group scales)
//   zmm27-28  the broadcast activation unit of a row (alternating rows)
//   nib       int4 low-nibble mask (0x0f bytes)
// Per group:  isum = corr (zero-point correction of the row, exact int32)
//             isum += u8(w) . s8(x) over the group's units             (vpdpbusd, exact)
//             acc = fma(float(isum), f32(scale), acc)                   (as the reference)
// The same operation sequence as micro_quant and ref::gemm, so results stay bit-identical.
// Register-operand vpdpbusd after an explicit broadcast: on this CPU the {1to16}
// memory-operand form issues ~15% slower.
#define RECAP_ROW_INIT(i, a0, a1, a2)         \
  "vpbroadcastd " #i "*4(%[corr]), %%zmm" #a0 \
  "\n\t"                                      \
  "vmovdqa64 %%zmm" #a0 ", %%zmm" #a1         \
  "\n\t"                                      \
  "vmovdqa64 %%zmm" #a0 ", %%zmm" #a2 "\n\t"
#define RECAP_ROW_DOT(off, t, a0, a1, a2)    \
  "vpbroadcastd " #off "(%[a]), %%zmm" #t    \
  "\n\t"                                     \
  "vpdpbusd %%zmm" #t ", %%zmm24, %%zmm" #a0 \
  "\n\t"                                     \
  "vpdpbusd %%zmm" #t ", %%zmm25, %%zmm" #a1 \
  "\n\t"                                     \
  "vpdpbusd %%zmm" #t ", %%zmm26, %%zmm" #a2 "\n\t"
// The 4 rows' dots for one activation unit; rows sit 4 bytes apart in the packed tile.
#define RECAP_UNIT_DOTS(b0, b1, b2, b3) \
  RECAP_ROW_DOT(b0, 27, 0, 4, 8)        \
  RECAP_ROW_DOT(b1, 28, 1, 5, 9)        \
  RECAP_ROW_DOT(b2, 27, 2, 6, 10)       \
  RECAP_ROW_DOT(b3, 28, 3, 7, 11)
#define RECAP_ACC_FMA(isum, sreg, acc)    \
  "vcvtdq2ps %%zmm" #isum ", %%zmm" #isum \
  "\n\t"                                  \
  "vfmadd231ps %%zmm" #sreg ", %%zmm" #isum ", %%zmm" #acc "\n\t"
#define RECAP_GROUP_TAIL \
  "vcvtph2ps (%[s]), %%zmm24\n\t"                                                               \
  "vcvtph2ps (%[s],%[ss],1), %%zmm25\n\t"                                                       \
  "vcvtph2ps (%[s],%[ss],2), %%zmm26\n\t"                                                       \
  RECAP_ACC_FMA(0, 24, 12) RECAP_ACC_FMA(4, 25, 16) RECAP_ACC_FMA(8, 26, 20)                    \
  RECAP_ACC_FMA(1, 24, 13) RECAP_ACC_FMA(5, 25, 17) RECAP_ACC_FMA(9, 26, 21)                    \
  RECAP_ACC_FMA(2, 24, 14) RECAP_ACC_FMA(6, 25, 18) RECAP_ACC_FMA(10, 26, 22)                   \
  RECAP_ACC_FMA(3, 24, 15) RECAP_ACC_FMA(7, 25, 19) RECAP_ACC_FMA(11, 26, 23)                   \
  "add $32, %[corr]\n\t"                                                                        \
  "add $32, %[s]\n\t"                                                                           \
  "dec %[groups]\n\t"                                                                           \
  "jnz 1b\n\t"
#define RECAP_INIT_ISUMS     \
  RECAP_ROW_INIT(0, 0, 4, 8) \
  RECAP_ROW_INIT(1, 1, 5, 9) RECAP_ROW_INIT(2, 2, 6, 10) RECAP_ROW_INIT(3, 3, 7, 11)
// Moves the float accumulators between Y (4 rows, 3 panels) and zmm12-23.
#define RECAP_ROW_Y(op, a0, a1, a2, base) \
  op "(" base "), %%zmm" #a0 "\n\t" op "64(" base "), %%zmm" #a1 "\n\t" op "128(" base "), %%zmm" #a2 "\n\t"
#define RECAP_LOAD_Y                                  \
  RECAP_ROW_Y("vmovups ", 12, 16, 20, "%[y]")         \
  RECAP_ROW_Y("vmovups ", 13, 17, 21, "%[y],%[ld],1") \
  RECAP_ROW_Y("vmovups ", 14, 18, 22, "%[y],%[ld],2") RECAP_ROW_Y("vmovups ", 15, 19, 23, "%[y],%[ld3],1")
#define RECAP_ROW_STORE(a0, a1, a2, base) \
  "vmovups %%zmm" #a0 ", (" base          \
  ")\n\t"                                 \
  "vmovups %%zmm" #a1 ", 64(" base        \
  ")\n\t"                                 \
  "vmovups %%zmm" #a2 ", 128(" base ")\n\t"
#define RECAP_STORE_Y                         \
  RECAP_ROW_STORE(12, 16, 20, "%[y]")         \
  RECAP_ROW_STORE(13, 17, 21, "%[y],%[ld],1") \
  RECAP_ROW_STORE(14, 18, 22, "%[y],%[ld],2") RECAP_ROW_STORE(15, 19, 23, "%[y],%[ld3],1")
#define RECAP_ASM_CLOBBERS                                                                                   \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",     \
      "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "cc", "memory"

// Y rows [4][48] (row stride ldy floats) = Y + the K-block's groups, for the 4 rows whose
// activation units start at `a` (8-row packed tile: rows 4 bytes apart, 32 bytes per unit)
// and whose corrections start at `corr` (8 per group).
// One K-block of int8/int4 weights per panel in bytes: kblock_units() x 64 (int8) or x 32
// (int4) bytes per unit. The first tile of a work item prefetches the next K-block's weights
// (PF) while it computes on this one, so small-M calls (batched decode) do not wait on DRAM
// at each K-block start.
constexpr int64_t kQuantKBlockBytes = 8192;  // the "8192" of RECAP_PF_LINE below
#define RECAP_PF_LINE(pf) \
  "prefetcht0 " pf        \
  "(%[b])\n\t"            \
  "prefetcht0 " pf        \
  "(%[b],%[ps],1)\n\t"    \
  "prefetcht0 " pf "(%[b],%[ps],2)\n\t"
#define RECAP_INT8_BODY(pfline) \
  RECAP_LOAD_Y                  \
  "1:\n\t" RECAP_INIT_ISUMS                                              \
  ".rept 16\n\t" pfline                                                  \
  "vmovdqu64 (%[b]), %%zmm24\n\t"                                        \
  "vmovdqu64 (%[b],%[ps],1), %%zmm25\n\t"                                \
  "vmovdqu64 (%[b],%[ps],2), %%zmm26\n\t" RECAP_UNIT_DOTS(0, 4, 8, 12)   \
  "add $32, %[a]\n\t"                                                    \
  "add $64, %[b]\n\t"                                                    \
  ".endr\n\t" RECAP_GROUP_TAIL RECAP_STORE_Y
#define RECAP_INT4_BODY(pfline) \
  RECAP_LOAD_Y                  \
  "1:\n\t" RECAP_INIT_ISUMS                                              \
  ".rept 4\n\t" pfline                                                   \
  "vpandd (%[b]), %[nib], %%zmm24\n\t"                                   \
  "vpandd (%[b],%[ps],1), %[nib], %%zmm25\n\t"                           \
  "vpandd (%[b],%[ps],2), %[nib], %%zmm26\n\t" RECAP_UNIT_DOTS(0, 4, 8, 12) \
  "vpsrlw $4, (%[b]), %%zmm24\n\t"                                       \
  "vpsrlw $4, (%[b],%[ps],1), %%zmm25\n\t"                               \
  "vpsrlw $4, (%[b],%[ps],2), %%zmm26\n\t"                               \
  "vpandd %[nib], %%zmm24, %%zmm24\n\t"                                  \
  "vpandd %[nib], %%zmm25, %%zmm25\n\t"                                  \
  "vpandd %[nib], %%zmm26, %%zmm26\n\t" RECAP_UNIT_DOTS(32, 36, 40, 44)  \
  "add $64, %[a]\n\t"                                                    \
  "add $64, %[b]\n\t"                                                    \
  ".endr\n\t" RECAP_GROUP_TAIL RECAP_STORE_Y

// Y rows [4][48] (row stride ldy floats) = Y + the K-block's groups, for the 4 rows whose
// activation units start at `a` (8-row packed tile: rows 4 bytes apart, 32 bytes per unit)
// and whose corrections start at `corr` (8 per group). int8: 16 units per group, per unit 3
// weight loads, 4 broadcasts and 12 vpdpbusd. int4: 8 units per group in 4 lines of 64 bytes
// per panel, the low nibbles holding unit 2o and the high nibbles unit 2o + 1.
template <bool INT4, bool PF>
void quant_half_tile_asm(const MicroArgs& g, const uint32_t* a, const int32_t* corr, float* y) {
  constexpr int64_t kGroup = INT4 ? wf::kInt4Group : wf::kInt8Group;
  int64_t groups = g.kunits / (kGroup / 4);
  if (groups == 0) return;
  const uint8_t* b = g.b;
  const uint16_t* s = g.s;
  const int64_t ps = g.panel_stride, ss = g.scale_stride * 2, ld = g.ldy * 4, ld3 = 3 * ld;
  const __m512i nib = _mm512_set1_epi8(0x0f);
#define RECAP_OPERANDS                                                                   \
  : [a] "+r"(a), [b] "+r"(b), [corr] "+r"(corr), [s] "+r"(s), [groups] "+r"(groups)   \
  : [ps] "r"(ps), [ss] "r"(ss), [y] "r"(y), [ld] "r"(ld), [ld3] "r"(ld3), [nib] "v"(nib) \
  : RECAP_ASM_CLOBBERS
  if constexpr (!INT4 && PF)
    __asm__ volatile(RECAP_INT8_BODY(RECAP_PF_LINE("8192")) RECAP_OPERANDS);
  else if constexpr (!INT4)
    __asm__ volatile(RECAP_INT8_BODY("") RECAP_OPERANDS);
  else if constexpr (PF)
    __asm__ volatile(RECAP_INT4_BODY(RECAP_PF_LINE("8192")) RECAP_OPERANDS);
  else
    __asm__ volatile(RECAP_INT4_BODY("") RECAP_OPERANDS);
#undef RECAP_OPERANDS
}
#undef RECAP_PF_LINE
#undef RECAP_INT8_BODY
#undef RECAP_INT4_BODY
#undef RECAP_ROW_INIT
#undef RECAP_ROW_DOT
#undef RECAP_UNIT_DOTS
#undef RECAP_ACC_FMA
#undef RECAP_GROUP_TAIL
#undef RECAP_INIT_ISUMS
#undef RECAP_ROW_Y
#undef RECAP_LOAD_Y
#undef RECAP_ROW_STORE
#undef RECAP_STORE_Y
#undef RECAP_ASM_CLOBBERS

// Full 8 x 48 int8/int4 tile: zero Y on the first K-block (the reference's acc = +0 start),
// the two asm halves, then y = fma(acc, sx, bias) (or acc * sx) after the last K-block.
template <bool INT4>
void micro_quant_full(const MicroArgs& g) {
  constexpr int MR = 8, NP = 3;
  if (g.first)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NP; ++j) _mm512_storeu_ps(g.y + i * g.ldy + 16 * j, _mm512_setzero_ps());
  if (g.prefetch_next)
    quant_half_tile_asm<INT4, true>(g, g.a, g.corr, g.y);
  else
    quant_half_tile_asm<INT4, false>(g, g.a, g.corr, g.y);
  quant_half_tile_asm<INT4, false>(g, g.a + 4, g.corr + 4, g.y + 4 * g.ldy);
  if (g.last) {
    __m512 bv[NP] = {};
    if (g.bias) add_bias<NP>(bv, g.bias, 0xffff);
    for (int i = 0; i < MR; ++i) {
      const __m512 sx = _mm512_set1_ps(g.sx[i]);
      for (int j = 0; j < NP; ++j) {
        float* yp = g.y + i * g.ldy + 16 * j;
        const __m512 acc = _mm512_loadu_ps(yp);
        _mm512_storeu_ps(yp, g.bias ? _mm512_fmadd_ps(acc, sx, bv[j]) : _mm512_mul_ps(acc, sx));
      }
    }
  }
}

using MicroFn = void (*)(const MicroArgs&);

template <int NP>
MicroFn pick_mr(WeightFormat f, int mr) {
#define RECAP_MR_CASE(MR)                   \
  case MR:                                  \
    switch (f) {                            \
      case WeightFormat::F32:               \
        return &micro_float<MR, NP, false>; \
      case WeightFormat::BF16:              \
        return &micro_float<MR, NP, true>;  \
      case WeightFormat::Int8:              \
        return &micro_quant<MR, NP, false>; \
      case WeightFormat::Int4:              \
        return &micro_quant<MR, NP, true>;  \
    }                                       \
    break;
  switch (mr) {
    RECAP_MR_CASE(1)
    RECAP_MR_CASE(2)
    RECAP_MR_CASE(3)
    RECAP_MR_CASE(4)
    RECAP_MR_CASE(5)
    RECAP_MR_CASE(6)
    RECAP_MR_CASE(7)
    RECAP_MR_CASE(8)
  }
#undef RECAP_MR_CASE
  return nullptr;
}
MicroFn pick_micro(WeightFormat f, int mr, int np, bool full_last_panel) {
  if (mr == kMR && np == kNPQuant && full_last_panel) {
    if (f == WeightFormat::Int8) return &micro_quant_full<false>;
    if (f == WeightFormat::Int4) return &micro_quant_full<true>;
  }
  if (np == kNPQuantNarrow) {  // int8/int4 with one or two rows (decode), see run()
    const bool int4 = f == WeightFormat::Int4;
    if (mr == 1) return int4 ? &micro_quant<1, kNPQuantNarrow, true> : &micro_quant<1, kNPQuantNarrow, false>;
    return int4 ? &micro_quant<2, kNPQuantNarrow, true> : &micro_quant<2, kNPQuantNarrow, false>;
  }
  switch (np) {
    case 1:
      return pick_mr<1>(f, mr);
    case 2:
      return pick_mr<2>(f, mr);
    default:
      return pick_mr<3>(f, mr);
  }
}

// K-block in units (4-byte activation units): kNP panels of one K-block take 24 KB (half
// of L1); the packed activations of a K-block (M x 512 B) stay in L2.
int64_t kblock_units(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return 128;  // 128 k
    case WeightFormat::BF16:
      return 128;  // 256 k
    case WeightFormat::Int8:
      return kQuantKBlockBytes / 64;  // 128 units = 512 k = 8 groups
    case WeightFormat::Int4:
      return kQuantKBlockBytes / 32;  // 256 units = 1024 k = 32 groups
  }
  return 128;
}

void run(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
         int64_t ldy) {
  const WeightFormat f = w.format;
  const int64_t n = w.n, k = w.k, kp = wf::padded_k(f, k);
  const bool quant = f == WeightFormat::Int8 || f == WeightFormat::Int4;
  const int64_t kunits = f == WeightFormat::F32 ? k : f == WeightFormat::BF16 ? kp / 2 : kp / 4;
  const int64_t group = quant ? wf::group_size(f) : 4;
  const int64_t groups = quant ? kp / group : 0;
  const int64_t tiles = (m + kMR - 1) / kMR;

  // Packed activations: units, then (int formats) corrections and row scales.
  const size_t units_bytes = static_cast<size_t>(tiles * kMR * kunits * 4);
  const size_t corr_bytes = static_cast<size_t>(tiles * kMR * groups * 4);
  uint8_t* pack =
      static_cast<uint8_t*>(detail::scratch(0, units_bytes + corr_bytes + static_cast<size_t>(m * 4) + 64));
  ActPack ap;
  ap.units = reinterpret_cast<uint32_t*>(pack);
  ap.corr = reinterpret_cast<int32_t*>(pack + units_bytes);
  ap.sx = reinterpret_cast<float*>(pack + units_bytes + corr_bytes);
  ap.kunits = kunits;
  ap.groups = groups;
  if (quant)
    detail::pack_units_quantized(x, m, ldx, k, kp, group,
                                 f == WeightFormat::Int8 ? wf::kInt8ZeroPoint : wf::kInt4ZeroPoint, kMR,
                                 &quantize_row, const_cast<uint32_t*>(ap.units),
                                 const_cast<int32_t*>(ap.corr), const_cast<float*>(ap.sx));
  else
    detail::pack_units_f32(x, m, ldx, k, kMR, const_cast<uint32_t*>(ap.units), f == WeightFormat::BF16);

  const int64_t panels = wf::num_panels(n);
  const int64_t panel_bytes = wf::panel_data_bytes(f, k);
  const int64_t unit_bytes_per_panel = 64;  // every format: one 64-byte line per unit... per panel
  const int64_t scale_stride = quant ? kp / group * kPanelRows : 0;
  const uint8_t* wdata = w.data.data();
  const uint16_t* wscales =
      quant ? reinterpret_cast<const uint16_t*>(wdata + wf::scales_offset(f, n, k)) : nullptr;
  // Bytes of weight data per activation unit per panel: f32 64, bf16 64, int8 64, int4 32.
  const int64_t wbytes_per_unit = f == WeightFormat::Int4 ? 32 : unit_bytes_per_panel;

  const int threads = omp_get_max_threads();
  const int64_t np_max = !quant ? kNP : m <= 2 ? kNPQuantNarrow : kNPQuant;
  const detail::GemmWorkPlan plan = detail::plan_gemm_work(panels, tiles, threads, np_max);
  const int64_t items = plan.items;
  // A single M-tile (decode, M <= 8) reuses no weights across tiles: no K-blocking, so each
  // panel is one long sequential stream for the prefetchers.
  const int64_t kb = tiles == 1 ? kunits : kblock_units(f);

#pragma omp parallel for schedule(static) if (items > 1 && m * n * k >= (1 << 18))
  for (int64_t it = 0; it < items; ++it) {
    int64_t p0, p1, t0, t1;
    plan.item(it, &p0, &p1, &t0, &t1);
    for (int64_t u0 = 0; u0 < kunits; u0 += kb) {
      const int64_t ku = std::min(kb, kunits - u0);
      // The np-panel weight block of one K-block (~24 KB) stays in L1 while every M-tile of
      // this item streams its packed activations past it (BLIS order: jr outside ir).
      for (int64_t p = p0; p < p1; p += np_max) {
        const int np = static_cast<int>(std::min<int64_t>(np_max, p1 - p));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t * kMR;
          const int mr = static_cast<int>(std::min<int64_t>(kMR, m - r0));
          const int64_t col0 = p * kPanelRows;
          const int64_t last_cols = std::min<int64_t>(n - (col0 + 16 * (np - 1)), 16);
          MicroArgs g;
          g.a = ap.units + t * kMR * kunits + u0 * mr;
          g.b = wdata + p * panel_bytes + u0 * wbytes_per_unit;
          g.panel_stride = panel_bytes;
          g.s = quant ? wscales + p * scale_stride + (u0 * 4 / group) * kPanelRows : nullptr;
          g.scale_stride = scale_stride;
          g.corr = quant ? ap.corr + t * kMR * groups + (u0 * 4 / group) * mr : nullptr;
          g.kunits = ku;
          g.y = y + r0 * ldy + col0;
          g.ldy = ldy;
          g.bias = bias ? bias + col0 : nullptr;
          g.sx = quant ? ap.sx + r0 : nullptr;
          g.last_mask = tail_mask(last_cols);
          g.first = u0 == 0;
          g.prefetch_next = t == t0 && u0 + ku < kunits;
          g.last = u0 + ku == kunits;
          pick_micro(f, mr, np, last_cols == 16)(g);
        }
      }
    }
  }
}

}  // namespace

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  detail::check_gemm_args(x, m, ldx, w, y, ldy);
  if (m == 0) return;
  const CpuFeatures& cf = cpu_features();
  const bool ok = w.format == WeightFormat::F32 || (w.format == WeightFormat::BF16 && cf.avx512bf16) ||
                  ((w.format == WeightFormat::Int8 || w.format == WeightFormat::Int4) && cf.avx512vnni);
  if (!ok) return avx2::gemm(x, m, ldx, w, bias, y, ldy);
  run(x, m, ldx, w, bias, y, ldy);
}

}  // namespace recap::kernels::avx512
