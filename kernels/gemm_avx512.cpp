// AVX-512 GEMM front (F/BW/VL/DQ only, Skylake-X and later): the f32 kernels here, the int8/int4
// kernels in gemm_avx512vnni.cpp and the bf16 kernel in gemm_avx512bf16.cpp, each used only
// when the active choice (kernels/isa.h) has that extension; a format whose extension this
// CPU lacks runs the AVX2 kernels, which give the same results (int8/int4 bit-identical).
// The blocking scheme is in gemm_avx512_body.h.
// GCC 12's avx512fintrin.h builds some intrinsics on _mm512_undefined_*(), which trips
// -Wuninitialized / -Wmaybe-uninitialized inside the system header after inlining.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/gemm_avx512_body.h"
#include "kernels/isa.h"

namespace recap::kernels::avx512 {
namespace {

template <int MR, int NP>
struct F32Micro {
  static void run(const MicroArgs& g) { micro_float<MR, NP, false>(g); }
};

MicroFn pick_f32(WeightFormat, int mr, int np, bool) {
  return pick_mr_np<F32Micro>(mr, np);
}

}  // namespace

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  detail::check_gemm_args(x, m, ldx, w, y, ldy);
  if (m == 0) return;
  const IsaChoice choice = active_choice();
  switch (w.format) {
    case WeightFormat::F32:
      return run<&pick_f32>(x, m, ldx, w, bias, y, ldy);
    case WeightFormat::BF16:
      if (choice.avx512bf16) return avx512bf16::gemm(x, m, ldx, w, bias, y, ldy);
      break;
    case WeightFormat::Int8:
    case WeightFormat::Int4:
      if (choice.avx512vnni) return avx512vnni::gemm(x, m, ldx, w, bias, y, ldy);
      break;
  }
  avx2::gemm(x, m, ldx, w, bias, y, ldy);
}

}  // namespace recap::kernels::avx512
