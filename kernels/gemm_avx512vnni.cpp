// AVX-512 VNNI GEMM kernels (vpdpbusd) for int8/int4 weights. Compiled with -mavx512vnni
// (cmake/RecapLayer.cmake); called by avx512::gemm only when the active choice has the VNNI
// extension (kernels/isa.h). The inline asm below is in this file for the same reason: the
// assembler accepts any instruction whatever the -m flags, so VNNI asm anywhere else would
// escape the dispatch check.
//
// For every weight group, exact int32 dot products (vpdpbusd, weights are the u8 operand with
// zero point 128 / 8, corrected by corr = -zp * sum(q_x)), then acc = fma(float(isum), scale,
// acc) in group order; y = fma(acc, sx, bias) (or acc * sx) at the end. This is the same
// operation sequence as ref::gemm, so the results are bit-identical. Full int8/int4 tiles
// (8 x 48) run in inline asm (quant_half_tile_asm).
// GCC 12's avx512fintrin.h builds some intrinsics on _mm512_undefined_*(), which trips
// -Wuninitialized / -Wmaybe-uninitialized inside the system header after inlining.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/gemm_avx512_body.h"

namespace recap::kernels::avx512 {
namespace {

// vpdpbusd through inline asm: with the intrinsic, GCC 12 copies and spills the 24
// accumulators inside the hot loop (the tied destination confuses its register allocator).
inline __m512i dpbusd(__m512i acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u8), [s] "v"(s8));
  return acc;
}

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
//
// Every layout number in the asm text is one of the RECAP_ASM_* macros below, stringified
// into it and tied by a static_assert to the C++ constant it mirrors, so a change of tile
// shape, group size or packing that forgets the asm fails to compile instead of computing
// wrong sums. (Register numbers are the allocation drawn above, not layout.)
#define RECAP_ASM_ROW_BYTES 4           // one row's activation unit / int32 correction in a tile
#define RECAP_ASM_TILE_UNIT_BYTES 32    // one unit (or one group's corrections) of the kMR rows
#define RECAP_ASM_PANEL_LINE_BYTES 64   // one line of a weight panel: int8 1 unit, int4 2 units
#define RECAP_ASM_Y_PANEL_BYTES 64      // one panel's kPanelRows f32 outputs in a row of Y
#define RECAP_ASM_SCALE_GROUP_BYTES 32  // one group's kPanelRows f16 scales of a panel
#define RECAP_ASM_INT8_UNITS_PER_GROUP 16
#define RECAP_ASM_INT4_LINES_PER_GROUP 4
#define RECAP_ASM_NIBBLE_BITS 4
#define RECAP_ASM_HALF_ROWS 4  // rows per asm block (RECAP_INIT_ISUMS, RECAP_UNIT_DOTS)
#define RECAP_ASM_PANELS 3     // panels per asm block (zmm24-26, 3 sums per row)
#define RECAP_ASM_STR(x) RECAP_ASM_STR_(x)
#define RECAP_ASM_STR_(x) #x
static_assert(RECAP_ASM_ROW_BYTES == sizeof(uint32_t) && RECAP_ASM_ROW_BYTES == sizeof(int32_t));
static_assert(RECAP_ASM_TILE_UNIT_BYTES == kMR * RECAP_ASM_ROW_BYTES, "tile of kMR rows");
static_assert(RECAP_ASM_PANEL_LINE_BYTES == kPanelRows * 4, "int8: 16 rows x 4 k per unit");
static_assert(RECAP_ASM_PANEL_LINE_BYTES == kPanelRows * 8 / 2, "int4: 16 rows x 8 nibbles per line");
static_assert(RECAP_ASM_Y_PANEL_BYTES == kPanelRows * sizeof(float));
static_assert(RECAP_ASM_SCALE_GROUP_BYTES == kPanelRows * sizeof(uint16_t));
static_assert(RECAP_ASM_INT8_UNITS_PER_GROUP == wf::kInt8Group / 4);
static_assert(RECAP_ASM_INT4_LINES_PER_GROUP == wf::kInt4Group / 8);
static_assert((1 << RECAP_ASM_NIBBLE_BITS) == 2 * wf::kInt4ZeroPoint, "int4 levels");
static_assert(2 * RECAP_ASM_HALF_ROWS == kMR, "two asm halves make a full tile");
static_assert(RECAP_ASM_PANELS == kNPQuant);
#define RECAP_ASM_ROW RECAP_ASM_STR(RECAP_ASM_ROW_BYTES)
#define RECAP_ASM_TILE_UNIT RECAP_ASM_STR(RECAP_ASM_TILE_UNIT_BYTES)
#define RECAP_ASM_LINE RECAP_ASM_STR(RECAP_ASM_PANEL_LINE_BYTES)
#define RECAP_ASM_YP RECAP_ASM_STR(RECAP_ASM_Y_PANEL_BYTES)

#define RECAP_ROW_INIT(i, a0, a1, a2)                         \
  "vpbroadcastd " #i "*" RECAP_ASM_ROW "(%[corr]), %%zmm" #a0 \
  "\n\t"                                                      \
  "vmovdqa64 %%zmm" #a0 ", %%zmm" #a1                         \
  "\n\t"                                                      \
  "vmovdqa64 %%zmm" #a0 ", %%zmm" #a2 "\n\t"
#define RECAP_ROW_DOT(u, r, t, a0, a1, a2)                                               \
  "vpbroadcastd " #u "*" RECAP_ASM_TILE_UNIT "+" #r "*" RECAP_ASM_ROW "(%[a]), %%zmm" #t \
  "\n\t"                                                                                 \
  "vpdpbusd %%zmm" #t ", %%zmm24, %%zmm" #a0                                             \
  "\n\t"                                                                                 \
  "vpdpbusd %%zmm" #t ", %%zmm25, %%zmm" #a1                                             \
  "\n\t"                                                                                 \
  "vpdpbusd %%zmm" #t ", %%zmm26, %%zmm" #a2 "\n\t"
// The 4 rows' dots for unit u (0 or 1) after `a`; rows sit RECAP_ASM_ROW bytes apart.
#define RECAP_UNIT_DOTS(u)          \
  RECAP_ROW_DOT(u, 0, 27, 0, 4, 8)  \
  RECAP_ROW_DOT(u, 1, 28, 1, 5, 9)  \
  RECAP_ROW_DOT(u, 2, 27, 2, 6, 10) \
  RECAP_ROW_DOT(u, 3, 28, 3, 7, 11)
#define RECAP_ACC_FMA(isum, sreg, acc)    \
  "vcvtdq2ps %%zmm" #isum ", %%zmm" #isum \
  "\n\t"                                  \
  "vfmadd231ps %%zmm" #sreg ", %%zmm" #isum ", %%zmm" #acc "\n\t"
#define RECAP_GROUP_TAIL \
  "vcvtph2ps (%[s]), %%zmm24\n\t"                                                                      \
  "vcvtph2ps (%[s],%[ss],1), %%zmm25\n\t"                                                              \
  "vcvtph2ps (%[s],%[ss],2), %%zmm26\n\t" RECAP_ACC_FMA(0, 24, 12) RECAP_ACC_FMA(4, 25, 16)            \
      RECAP_ACC_FMA(8, 26, 20) RECAP_ACC_FMA(1, 24, 13) RECAP_ACC_FMA(5, 25, 17) RECAP_ACC_FMA(9, 26, 21) \
          RECAP_ACC_FMA(2, 24, 14) RECAP_ACC_FMA(6, 25, 18) RECAP_ACC_FMA(10, 26, 22)                   \
              RECAP_ACC_FMA(3, 24, 15) RECAP_ACC_FMA(7, 25, 19) RECAP_ACC_FMA(11, 26, 23)               \
  "add $" RECAP_ASM_TILE_UNIT ", %[corr]\n\t"                                                          \
  "add $" RECAP_ASM_STR(RECAP_ASM_SCALE_GROUP_BYTES) ", %[s]\n\t"                                      \
  "dec %[groups]\n\t"                                                                                  \
  "jnz 1b\n\t"
#define RECAP_INIT_ISUMS     \
  RECAP_ROW_INIT(0, 0, 4, 8) \
  RECAP_ROW_INIT(1, 1, 5, 9) RECAP_ROW_INIT(2, 2, 6, 10) RECAP_ROW_INIT(3, 3, 7, 11)
// Moves the float accumulators between Y (4 rows, 3 panels) and zmm12-23.
#define RECAP_ROW_Y(op, a0, a1, a2, base)                                                               \
  op "(" base "), %%zmm" #a0 "\n\t" op RECAP_ASM_YP "(" base "), %%zmm" #a1 "\n\t" op "2*" RECAP_ASM_YP \
     "(" base "), %%zmm" #a2 "\n\t"
#define RECAP_LOAD_Y                                  \
  RECAP_ROW_Y("vmovups ", 12, 16, 20, "%[y]")         \
  RECAP_ROW_Y("vmovups ", 13, 17, 21, "%[y],%[ld],1") \
  RECAP_ROW_Y("vmovups ", 14, 18, 22, "%[y],%[ld],2") RECAP_ROW_Y("vmovups ", 15, 19, 23, "%[y],%[ld3],1")
#define RECAP_ROW_STORE(a0, a1, a2, base)        \
  "vmovups %%zmm" #a0 ", (" base                 \
  ")\n\t"                                        \
  "vmovups %%zmm" #a1 ", " RECAP_ASM_YP "(" base \
  ")\n\t"                                        \
  "vmovups %%zmm" #a2 ", 2*" RECAP_ASM_YP "(" base ")\n\t"
#define RECAP_STORE_Y                         \
  RECAP_ROW_STORE(12, 16, 20, "%[y]")         \
  RECAP_ROW_STORE(13, 17, 21, "%[y],%[ld],1") \
  RECAP_ROW_STORE(14, 18, 22, "%[y],%[ld],2") RECAP_ROW_STORE(15, 19, 23, "%[y],%[ld3],1")
#define RECAP_ASM_CLOBBERS                                                                                   \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",     \
      "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "cc", "memory"

// Prefetch of the next K-block: the 4-row passes over a K-block of kNPQuant panels (two per
// M-tile) take turns, pass i < kNPQuant fetching panel i's next K-block one line per line it
// computes on, at [b + pfd] (pfd = i * panel stride + one K-block). One panel per pass keeps
// the misses in flight spread over the K-block's compute: issuing all three panels' lines from
// the first pass stalled that pass on the core's miss buffers and left the others with no
// memory traffic to overlap (batched decode ran at about the sum of its memory and compute
// times).
#define RECAP_PF_LINE "prefetcht0 (%[b],%[pfd],1)\n\t"
#define RECAP_INT8_BODY(pfline)                                                                \
  RECAP_LOAD_Y                                                                                 \
  "1:\n\t" RECAP_INIT_ISUMS ".rept " RECAP_ASM_STR(                                            \
      RECAP_ASM_INT8_UNITS_PER_GROUP) "\n\t" pfline                                            \
                                      "vmovdqu64 (%[b]), %%zmm24\n\t"                          \
                                      "vmovdqu64 (%[b],%[ps],1), %%zmm25\n\t"                  \
                                      "vmovdqu64 (%[b],%[ps],2), %%zmm26\n\t" RECAP_UNIT_DOTS( \
                                          0) "add $" RECAP_ASM_TILE_UNIT                       \
                                             ", %[a]\n\t"                                      \
                                             "add $" RECAP_ASM_LINE                            \
                                             ", %[b]\n\t"                                      \
                                             ".endr\n\t" RECAP_GROUP_TAIL RECAP_STORE_Y
#define RECAP_INT4_BODY(pfline) \
  RECAP_LOAD_Y                  \
  "1:\n\t" RECAP_INIT_ISUMS ".rept " RECAP_ASM_STR(RECAP_ASM_INT4_LINES_PER_GROUP) \
  "\n\t" pfline                                                                  \
  "vpandd (%[b]), %[nib], %%zmm24\n\t"                                           \
  "vpandd (%[b],%[ps],1), %[nib], %%zmm25\n\t"                                   \
  "vpandd (%[b],%[ps],2), %[nib], %%zmm26\n\t" RECAP_UNIT_DOTS(0)                \
  "vpsrlw $" RECAP_ASM_STR(RECAP_ASM_NIBBLE_BITS) ", (%[b]), %%zmm24\n\t"          \
  "vpsrlw $" RECAP_ASM_STR(RECAP_ASM_NIBBLE_BITS) ", (%[b],%[ps],1), %%zmm25\n\t"  \
  "vpsrlw $" RECAP_ASM_STR(RECAP_ASM_NIBBLE_BITS) ", (%[b],%[ps],2), %%zmm26\n\t"  \
  "vpandd %[nib], %%zmm24, %%zmm24\n\t"                                          \
  "vpandd %[nib], %%zmm25, %%zmm25\n\t"                                          \
  "vpandd %[nib], %%zmm26, %%zmm26\n\t" RECAP_UNIT_DOTS(1)                       \
  "add $2*" RECAP_ASM_TILE_UNIT ", %[a]\n\t"                                     \
  "add $" RECAP_ASM_LINE ", %[b]\n\t"                                            \
  ".endr\n\t" RECAP_GROUP_TAIL RECAP_STORE_Y

// Y rows [4][48] (row stride ldy floats) = Y + the K-block's groups, for the 4 rows whose
// activation units start at `a` (8-row packed tile: rows 4 bytes apart, 32 bytes per unit)
// and whose corrections start at `corr` (8 per group). int8: 16 units per group, per unit 3
// weight loads, 4 broadcasts and 12 vpdpbusd. int4: 8 units per group in 4 lines of 64 bytes
// per panel, the low nibbles holding unit 2o and the high nibbles unit 2o + 1.
template <bool INT4, bool PF>
void quant_half_tile_asm(const MicroArgs& g, const uint32_t* a, const int32_t* corr, float* y, int64_t pfd) {
  constexpr int64_t kGroup = INT4 ? wf::kInt4Group : wf::kInt8Group;
  int64_t groups = g.kunits / (kGroup / 4);
  if (groups == 0) return;
  const uint8_t* b = g.b;
  const uint16_t* s = g.s;
  const int64_t ps = g.panel_stride, ss = g.scale_stride * 2, ld = g.ldy * 4, ld3 = 3 * ld;
  const __m512i nib = _mm512_set1_epi8(0x0f);
#define RECAP_OPERANDS                                                                                   \
  : [a] "+r"(a), [b] "+r"(b), [corr] "+r"(corr), [s] "+r"(s), [groups] "+r"(groups)   \
  : [ps] "r"(ps), [ss] "r"(ss), [y] "r"(y), [ld] "r"(ld), [ld3] "r"(ld3), [nib] "v"(nib), [pfd] "r"(pfd) \
  : RECAP_ASM_CLOBBERS
  if constexpr (!INT4 && PF)
    __asm__ volatile(RECAP_INT8_BODY(RECAP_PF_LINE) RECAP_OPERANDS);
  else if constexpr (!INT4)
    __asm__ volatile(RECAP_INT8_BODY("") RECAP_OPERANDS);
  else if constexpr (PF)
    __asm__ volatile(RECAP_INT4_BODY(RECAP_PF_LINE) RECAP_OPERANDS);
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
#undef RECAP_ASM_ROW
#undef RECAP_ASM_TILE_UNIT
#undef RECAP_ASM_LINE
#undef RECAP_ASM_YP

// Full 8 x 48 int8/int4 tile: zero Y on the first K-block (the reference's acc = +0 start),
// the two asm halves, then y = fma(acc, sx, bias) (or acc * sx) after the last K-block.
template <bool INT4>
void micro_quant_full(const MicroArgs& g) {
  constexpr int MR = 8, NP = 3;
  if (g.first)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NP; ++j) _mm512_storeu_ps(g.y + i * g.ldy + 16 * j, _mm512_setzero_ps());
  for (int half = 0; half < 2; ++half) {
    const int pass = 2 * g.tile_in_item + half;
    const uint32_t* a = g.a + 4 * half;
    const int32_t* corr = g.corr + 4 * half;
    float* y = g.y + 4 * half * g.ldy;
    if (g.prefetch_next && pass < kNPQuant)
      quant_half_tile_asm<INT4, true>(g, a, corr, y, pass * g.panel_stride + kQuantKBlockBytes);
    else
      quant_half_tile_asm<INT4, false>(g, a, corr, y, 0);
  }
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

template <int MR, int NP>
struct Int8Micro {
  static void run(const MicroArgs& g) { micro_quant<MR, NP, false>(g); }
};
template <int MR, int NP>
struct Int4Micro {
  static void run(const MicroArgs& g) { micro_quant<MR, NP, true>(g); }
};

MicroFn pick_quant(WeightFormat f, int mr, int np, bool full_last_panel) {
  const bool int4 = f == WeightFormat::Int4;
  if (mr == kMR && np == kNPQuant && full_last_panel)
    return int4 ? &micro_quant_full<true> : &micro_quant_full<false>;
  if (np == kNPQuantNarrow) {  // int8/int4 with one or two rows (decode), see run()
    if (mr == 1) return int4 ? &micro_quant<1, kNPQuantNarrow, true> : &micro_quant<1, kNPQuantNarrow, false>;
    return int4 ? &micro_quant<2, kNPQuantNarrow, true> : &micro_quant<2, kNPQuantNarrow, false>;
  }
  return int4 ? pick_mr_np<Int4Micro>(mr, np) : pick_mr_np<Int8Micro>(mr, np);
}

}  // namespace
}  // namespace recap::kernels::avx512

namespace recap::kernels::avx512vnni {

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  avx512::run<&avx512::pick_quant>(x, m, ldx, w, bias, y, ldy);
}

}  // namespace recap::kernels::avx512vnni
