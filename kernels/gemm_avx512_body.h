// The blocking scheme shared by the AVX-512 GEMM files (included by gemm_avx512.cpp,
// gemm_avx512vnni.cpp and gemm_avx512bf16.cpp only; each compiles its own internal copy with
// its own ISA flags, so nothing here may need more than AVX-512 F/BW/VL/DQ).
//
// Structure (all formats): the activations X are packed once per call into M-tiles of up to
// kMR rows, K-interleaved in 4-byte units (f32 value | bf16 pair | 4 int8), so the
// micro-kernel broadcasts one unit per row and step. The weights are already packed in
// 16-row panels (weight_formats.h). A micro-kernel computes an (mr x 16*np) block of Y for a
// K-block, with mr <= 8 rows and np <= 3 panels (24 zmm accumulators; 4 panels for int8/int4
// decode, M <= 2). Work is split over OpenMP threads by N-chunks of ~32 panels, a multiple of
// the panel step (and by M-chunks when N is too small to share).
//   for each (N-chunk, M-chunk) item of this thread:
//     for each K-block (np panels x K-block = 24 KB of weights, stays in L1; none for M <= 8):
//       for each group of np panels:  for each M-tile:  micro-kernel
// except int8/int4 with M <= 16 (batched decode), where the weights are the traffic and each
// group of np panels is streamed once over all of K (group outside K-block), see run().
#pragma once
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/gemm_internal.h"
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
// int8/int4 calls with at most this many M-tiles (M <= 16: batched decode) stream each panel
// group once over all of K (panel-outer loop order in run()).
constexpr int64_t kSmallMTiles = 2;
// Bytes ahead of the current weight line that the decode micro-kernels prefetch.
constexpr int64_t kPrefetchAhead = 1024;
// One K-block of int8/int4 weights per panel in bytes: kblock_units() x 64 (int8) or x 32
// (int4) bytes per unit. The full-tile asm (gemm_avx512vnni.cpp) prefetches one K-block ahead.
constexpr int64_t kQuantKBlockBytes = 8192;

// Bytes of the packed-activation tile area and its units.
struct ActPack {
  const uint32_t* units = nullptr;  // tile t at units + t * kMR * kunits, layout [kunits][mr]
  const int32_t* corr = nullptr;    // tile t at corr + t * kMR * groups, layout [groups][mr]
  const float* sx = nullptr;        // [m] activation scales (int formats)
  int64_t kunits = 0, groups = 0;
};

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
  bool prefetch_next;  // int8/int4 full tiles: a next K-block exists, its weights may be prefetched
  int tile_in_item;    // this M-tile's index among its work item's tiles (which pass prefetches)
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

// f32 (BF16 = false) or bf16 (BF16 = true: vdpbf16ps, only instantiated in
// gemm_avx512bf16.cpp) micro-kernel.
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
using MicroFn = void (*)(const MicroArgs&);
// The micro-kernel for an mr x np block of format f (full_last_panel: all 16 columns of the
// last panel are inside N).
using PickMicroFn = MicroFn (*)(WeightFormat f, int mr, int np, bool full_last_panel);

// Every MR in 1..kMR of micro-kernel template Micro<MR, NP>.
template <int NP, template <int, int> class Micro>
MicroFn pick_mr(int mr) {
  switch (mr) {
    case 1:
      return &Micro<1, NP>::run;
    case 2:
      return &Micro<2, NP>::run;
    case 3:
      return &Micro<3, NP>::run;
    case 4:
      return &Micro<4, NP>::run;
    case 5:
      return &Micro<5, NP>::run;
    case 6:
      return &Micro<6, NP>::run;
    case 7:
      return &Micro<7, NP>::run;
    case 8:
      return &Micro<8, NP>::run;
  }
  return nullptr;
}
template <template <int, int> class Micro>
MicroFn pick_mr_np(int mr, int np) {
  switch (np) {
    case 1:
      return pick_mr<1, Micro>(mr);
    case 2:
      return pick_mr<2, Micro>(mr);
    default:
      return pick_mr<3, Micro>(mr);
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

// Y = X W^T (+ bias) with the micro-kernels Pick returns; np_max: panels per call.
template <PickMicroFn Pick>
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

  // One micro-kernel call: panels [p, p + np_max) of M-tile t over the K-block at unit u0.
  auto call = [&](int64_t p, int64_t p1, int64_t u0, int64_t t, int64_t t0) {
    const int64_t ku = std::min(kb, kunits - u0);
    const int np = static_cast<int>(std::min<int64_t>(np_max, p1 - p));
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
    g.prefetch_next = u0 + ku < kunits;
    g.tile_in_item = static_cast<int>(t - t0);
    g.last = u0 + ku == kunits;
    Pick(f, mr, np, last_cols == 16)(g);
  };
  // Batched decode (int8/int4, at most kSmallMTiles M-tiles): the weights are the traffic, so
  // each group of np panels is streamed once from start to end of K (panel-outer order), every
  // tile consuming a K-block while it is in L1 and the first tile prefetching the next one,
  // which is the next bytes of the same panels. Prefill keeps the BLIS order below, where a
  // K-block of the panels is reused by many tiles.
  const bool panel_outer = quant && tiles <= kSmallMTiles;

#pragma omp parallel for schedule(static) if (items > 1 && m * n * k >= (1 << 18))
  for (int64_t it = 0; it < items; ++it) {
    int64_t p0, p1, t0, t1;
    plan.item(it, &p0, &p1, &t0, &t1);
    if (panel_outer) {
      for (int64_t p = p0; p < p1; p += np_max)
        for (int64_t u0 = 0; u0 < kunits; u0 += kb)
          for (int64_t t = t0; t < t1; ++t) call(p, p1, u0, t, t0);
      continue;
    }
    for (int64_t u0 = 0; u0 < kunits; u0 += kb) {
      // The np-panel weight block of one K-block (~24 KB) stays in L1 while every M-tile of
      // this item streams its packed activations past it (BLIS order: jr outside ir).
      for (int64_t p = p0; p < p1; p += np_max)
        for (int64_t t = t0; t < t1; ++t) call(p, p1, u0, t, t0);
    }
  }
}

}  // namespace
}  // namespace recap::kernels::avx512
