// Internal interface between the GEMM front end (kernels/gemm.cpp) and its per-ISA
// implementations. Not for use outside kernels/.
#pragma once
#include <cstdint>

#include "kernels/gemm.h"
#include "kernels/weight_formats.h"

namespace recap::kernels::detail {

// Quantizes one activation row by the contract in weight_formats.h. q gets kp bytes (zero
// beyond k); corr gets kp / group values (-zero_point * sum of q over each group).
void quantize_row_ref(const float* x, int64_t k, int64_t kp, int64_t group, int32_t zero_point, int8_t* q,
                      float* sx, int32_t* corr);

// Throws std::invalid_argument unless the arguments describe a valid GEMM.
void check_gemm_args(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* y,
                     int64_t ldy);

// Thread-local scratch that grows and is reused across calls (activation packing).
void* scratch(int slot, size_t bytes);

// Packs f32 activations X[m, k] (row stride ldx) into M-tiles of `tile_rows` rows of 4-byte
// K-units for the SIMD micro-kernels: tile t at out + t * tile_rows * kunits, layout
// [kunits][mr] (mr = rows of that tile), a unit being one f32 (kunits = k) or, with to_bf16,
// a pair of bf16 (round to nearest even, k odd padded with 0; kunits = ceil(k / 2)).
void pack_units_f32(const float* x, int64_t m, int64_t ldx, int64_t k, int tile_rows, uint32_t* out,
                    bool to_bf16);

// Quantizes X[m, k] row by row with `quantize_row` (an ISA's version of quantize_row_ref) and
// packs the int8 rows into M-tiles of `tile_rows` rows of 4-byte units (4 consecutive k):
// tile t at units + t * tile_rows * (kp / 4), layout [kp / 4][mr]; its corrections at
// corr + t * tile_rows * (kp / group), layout [groups][mr]; row scales sx[m].
using QuantizeRowFn = void (*)(const float* x, int64_t k, int64_t kp, int64_t group, int32_t zero_point,
                               int8_t* q, float* sx, int32_t* corr);
void pack_units_quantized(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t kp, int64_t group,
                          int32_t zero_point, int tile_rows, QuantizeRowFn quantize_row, uint32_t* units,
                          int32_t* corr, float* sx);

// How a GEMM's work is cut into OpenMP items: N-chunks cut at multiples of `panel_step` (the
// micro-kernel's panels per call), sized evenly in steps, about kTargetChunkPanels panels each
// and as many as a multiple of the thread count (at most one per step); times M-chunks when N
// has fewer than two chunks per thread. Item `it` covers panels [p0, p1) and M-tiles [t0, t1);
// no two items write the same outputs.
struct GemmWorkPlan {
  static constexpr int64_t kTargetChunkPanels = 32;
  int64_t panels = 0, tiles = 0, panel_step = 1, steps = 0;
  int64_t nchunks = 0, mchunks = 1, tiles_per_mchunk = 0, items = 0;
  void item(int64_t it, int64_t* p0, int64_t* p1, int64_t* t0, int64_t* t1) const;
};
GemmWorkPlan plan_gemm_work(int64_t panels, int64_t tiles, int threads, int64_t panel_step);

}  // namespace recap::kernels::detail

namespace recap::kernels::avx2 {
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}
namespace recap::kernels::avx512 {
// AVX-512 F/BW/VL/DQ. f32 here; bf16 / int8 / int4 through avx512bf16:: / avx512vnni:: when
// active_choice() has that extension, else the AVX2 kernels.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}  // namespace recap::kernels::avx512
namespace recap::kernels::avx512vnni {
// int8 / int4 weights only (gemm_avx512vnni.cpp); arguments already checked, m > 0.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}  // namespace recap::kernels::avx512vnni
namespace recap::kernels::avx512bf16 {
// bf16 weights only (gemm_avx512bf16.cpp); arguments already checked, m > 0.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}  // namespace recap::kernels::avx512bf16
