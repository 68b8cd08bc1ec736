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

}  // namespace recap::kernels::detail

namespace recap::kernels::avx2 {
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}
namespace recap::kernels::avx512 {
// Uses VNNI / BF16 instructions when cpu_features() has them, else the AVX2 kernels.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}  // namespace recap::kernels::avx512
