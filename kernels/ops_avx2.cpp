// AVX2 variants of the ops in kernels/ops.h: the bodies of ops_simd_body.h
// instantiated with the SimdAvx2 traits (this file gets the avx2 flags from cmake/RecapLayer.cmake).
#include "kernels/ops_simd_avx2.h"
// (traits first: the body is written against them)
#include "kernels/ops_simd_body.h"
#include "kernels/ops_variants.h"

namespace recap::kernels::avx2 {

using S = SimdAvx2;

void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows, int64_t dim,
             float eps) {
  rmsnorm_impl<S>(x, ld_x, w, y, ld_y, rows, dim, eps);
}

void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
               int64_t rows, int64_t dim, float eps) {
  layernorm_impl<S>(x, ld_x, w, b, y, ld_y, rows, dim, eps);
}

void softmax(float* x, int64_t ld, int64_t rows, int64_t n) {
  softmax_impl<S>(x, ld, rows, n);
}

void gelu_erf(float* x, int64_t n) {
  map_inplace<S>(x, n, [](S::V v) { return gelu_vec<S>(v); });
}

void quick_gelu(float* x, int64_t n) {
  map_inplace<S>(x, n, [](S::V v) { return quick_gelu_vec<S>(v); });
}

void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out, int64_t ld_out,
              int64_t rows, int64_t n) {
  silu_mul_impl<S>(gate, ld_gate, up, ld_up, out, ld_out, rows, n);
}

void add_inplace(float* y, const float* x, int64_t n) {
  add_inplace_impl<S>(y, x, n);
}

void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                const float* cos_table, const float* sin_table) {
  rope_impl<S>(x, ld, n_tokens, n_heads, head_dim, pos, cos_table, sin_table);
}

}  // namespace recap::kernels::avx2
