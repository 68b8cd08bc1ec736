// AVX-512 BF16 GEMM kernel (vdpbf16ps): bf16 weights, X rounded to bf16, f32 accumulation.
// Compiled with -mavx512bf16 (cmake/RecapLayer.cmake); called by avx512::gemm only when the
// active choice has the BF16 extension (kernels/isa.h).
// GCC 12's avx512fintrin.h builds some intrinsics on _mm512_undefined_*(), which trips
// -Wuninitialized / -Wmaybe-uninitialized inside the system header after inlining.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/gemm_avx512_body.h"

namespace recap::kernels::avx512 {
namespace {

template <int MR, int NP>
struct Bf16Micro {
  static void run(const MicroArgs& g) { micro_float<MR, NP, true>(g); }
};

MicroFn pick_bf16(WeightFormat, int mr, int np, bool) {
  return pick_mr_np<Bf16Micro>(mr, np);
}

}  // namespace
}  // namespace recap::kernels::avx512

namespace recap::kernels::avx512bf16 {

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  avx512::run<&avx512::pick_bf16>(x, m, ldx, w, bias, y, ldy);
}

}  // namespace recap::kernels::avx512bf16
