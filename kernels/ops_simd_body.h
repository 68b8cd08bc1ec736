// Internal to kernels/: the SIMD bodies of the ops in kernels/ops.h, written once against a
// vector-traits class S (SimdAvx2 in ops_simd_avx2.h, SimdAvx512 in ops_simd_avx512.h) and
// instantiated in ops_avx2.cpp / ops_avx512.cpp. Same contracts and formulas as the scalar
// reference (ops_ref.cpp); where they differ (f32 lane-parallel sums instead of double,
// polynomial exp/erf instead of libm) the error bound is in docs/NUMERICS.md.
// Internal linkage throughout (anonymous namespace): see ops_variants.h.
#pragma once
#include <omp.h>

#include <cmath>
#include <cstdint>

namespace recap::kernels {
namespace {

// Rows of a row-wise op are spread over OpenMP threads only when there is enough work to pay
// for waking the team (a decode step's single row never is).
constexpr int64_t kMinElemsPerThread = 1 << 15;
inline bool rows_worth_threading(int64_t rows, int64_t dim) {
  return rows >= 2 && rows * dim >= 2 * kMinElemsPerThread;
}
inline bool elems_worth_threading(int64_t n) {
  return n >= 8 * kMinElemsPerThread;
}

// Sum of x[i] (f32, 4*W lane-parallel partial sums).
template <class S>
float vec_sum(const float* x, int64_t n) {
  using V = typename S::V;
  V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
  int64_t i = 0;
  for (; i + 4 * S::W <= n; i += 4 * S::W) {
    a0 = S::add(a0, S::load(x + i));
    a1 = S::add(a1, S::load(x + i + S::W));
    a2 = S::add(a2, S::load(x + i + 2 * S::W));
    a3 = S::add(a3, S::load(x + i + 3 * S::W));
  }
  for (; i + S::W <= n; i += S::W) a0 = S::add(a0, S::load(x + i));
  if (i < n) a1 = S::add(a1, S::load(x + i, S::mask(n - i)));
  return S::hsum(S::add(S::add(a0, a1), S::add(a2, a3)));
}

// Sum of (x[i] - c)^2 (f32, 4*W lane-parallel partial sums); c = 0 gives the sum of squares.
template <class S>
float vec_sum_sq_dev(const float* x, int64_t n, float c) {
  using V = typename S::V;
  const V vc = S::set1(c);
  V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
  int64_t i = 0;
  for (; i + 4 * S::W <= n; i += 4 * S::W) {
    const V d0 = S::sub(S::load(x + i), vc), d1 = S::sub(S::load(x + i + S::W), vc);
    const V d2 = S::sub(S::load(x + i + 2 * S::W), vc), d3 = S::sub(S::load(x + i + 3 * S::W), vc);
    a0 = S::fmadd(d0, d0, a0);
    a1 = S::fmadd(d1, d1, a1);
    a2 = S::fmadd(d2, d2, a2);
    a3 = S::fmadd(d3, d3, a3);
  }
  for (; i + S::W <= n; i += S::W) {
    const V d = S::sub(S::load(x + i), vc);
    a0 = S::fmadd(d, d, a0);
  }
  if (i < n) {
    const auto m = S::mask(n - i);
    const V d = S::keep(S::sub(S::load(x + i, m), vc), m);  // lanes past n must not add c^2
    a1 = S::fmadd(d, d, a1);
  }
  return S::hsum(S::add(S::add(a0, a1), S::add(a2, a3)));
}

template <class S>
void rmsnorm_row(const float* x, const float* w, float* y, int64_t dim, float eps) {
  using V = typename S::V;
  const float variance = vec_sum_sq_dev<S>(x, dim, 0.0f) / float(dim);
  const V inv_rms = S::set1(1.0f / std::sqrt(variance + eps));
  int64_t i = 0;
  for (; i + S::W <= dim; i += S::W) S::store(y + i, S::mul(S::load(w + i), S::mul(S::load(x + i), inv_rms)));
  if (i < dim) {
    const auto m = S::mask(dim - i);
    S::store(y + i, S::mul(S::load(w + i, m), S::mul(S::load(x + i, m), inv_rms)), m);
  }
}

template <class S>
void rmsnorm_impl(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows,
                  int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows_worth_threading(rows, dim))
  for (int64_t r = 0; r < rows; ++r) rmsnorm_row<S>(x + r * ld_x, w, y + r * ld_y, dim, eps);
}

template <class S>
void layernorm_row(const float* x, const float* w, const float* b, float* y, int64_t dim, float eps) {
  using V = typename S::V;
  const float mean = vec_sum<S>(x, dim) / float(dim);
  const float var = vec_sum_sq_dev<S>(x, dim, mean) / float(dim);
  const V rstd = S::set1(1.0f / std::sqrt(var + eps));
  const V vmean = S::set1(mean);
  int64_t i = 0;
  for (; i + S::W <= dim; i += S::W) {
    const V norm = S::mul(S::sub(S::load(x + i), vmean), rstd);
    S::store(y + i, S::fmadd(norm, S::load(w + i), S::load(b + i)));
  }
  if (i < dim) {
    const auto m = S::mask(dim - i);
    const V norm = S::mul(S::sub(S::load(x + i, m), vmean), rstd);
    S::store(y + i, S::fmadd(norm, S::load(w + i, m), S::load(b + i, m)), m);
  }
}

template <class S>
void layernorm_impl(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
                    int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows_worth_threading(rows, dim))
  for (int64_t r = 0; r < rows; ++r) layernorm_row<S>(x + r * ld_x, w, b, y + r * ld_y, dim, eps);
}

template <class S>
void softmax_row(float* x, int64_t n) {
  using V = typename S::V;
  const int64_t n_full = n / S::W * S::W;
  const bool has_tail = n_full < n;
  const auto m = S::mask(n - n_full);
  V vmax = S::set1(-INFINITY);
  for (int64_t i = 0; i < n_full; i += S::W) vmax = S::max(vmax, S::load(x + i));
  if (has_tail) vmax = S::max(vmax, S::keep_else(S::load(x + n_full, m), m, S::set1(-INFINITY)));
  const V vm = S::set1(S::hmax(vmax));
  V vsum = S::zero();
  for (int64_t i = 0; i < n_full; i += S::W) {
    const V e = S::exp(S::sub(S::load(x + i), vm));
    S::store(x + i, e);
    vsum = S::add(vsum, e);
  }
  if (has_tail) {
    const V e = S::keep(S::exp(S::sub(S::load(x + n_full, m), vm)), m);
    S::store(x + n_full, e, m);
    vsum = S::add(vsum, e);
  }
  const V inv = S::set1(1.0f / S::hsum(vsum));
  for (int64_t i = 0; i < n_full; i += S::W) S::store(x + i, S::mul(S::load(x + i), inv));
  if (has_tail) S::store(x + n_full, S::mul(S::load(x + n_full, m), inv), m);
}

template <class S>
void softmax_impl(float* x, int64_t ld, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows_worth_threading(rows, n))
  for (int64_t r = 0; r < rows; ++r) softmax_row<S>(x + r * ld, n);
}

// 1 + erf(z), accurate in *relative* terms also where it is tiny (z << 0), so that GELU of
// negative inputs keeps its relative accuracy. a = |z|:
//   a < 1:  erf(a) = a * P(a^2), P a degree-6 Chebyshev fit (rel. err < 2e-7 in f32);
//   a >= 1: erfc(a) = t * H(t) * e^(-a^2), t = 2/(2+a), H a degree-8 Chebyshev fit of
//           erfc(a) e^(a^2) / t on a in [1, 10.5] (rel. err < 3e-7 in f32); e^(-a^2) is
//           computed from a^2 = hi + lo (fma) as e^(-hi) * (1 - lo) so the rounding of a^2
//           does not cost relative accuracy. Beyond a = 10.5, e^(-a^2) underflows to 0.
// then 1 + erf(z) = 1 +- erf(a) (a < 1) or 2 - erfc(a) / erfc(a) (z >= 0 / z < 0).
// Coefficients fitted with mpmath.chebyfit at 40 digits, then rounded to f32.
template <class S>
typename S::V one_plus_erf(typename S::V z) {
  using V = typename S::V;
  // |z| clamped at 16 (erfc(16) ~ 1e-113 is 0 in f32; keeps a^2 finite for huge/inf inputs);
  // min(bound, x) keeps a NaN.
  const V a = S::min(S::set1(16.0f), S::abs(z));
  // Small branch.
  const V s = S::mul(a, a);
  V p = S::set1(7.875874871e-05f);
  p = S::fmadd(p, s, S::set1(-8.016864303e-04f));
  p = S::fmadd(p, s, S::set1(5.189087242e-03f));
  p = S::fmadd(p, s, S::set1(-2.685421146e-02f));
  p = S::fmadd(p, s, S::set1(1.128359437e-01f));
  p = S::fmadd(p, s, S::set1(-3.761262596e-01f));
  p = S::fmadd(p, s, S::set1(1.128379107e+00f));
  const V erf_small = S::mul(p, a);
  // Large branch.
  const V t = S::div(S::set1(2.0f), S::add(S::set1(2.0f), a));
  V h = S::set1(-4.157442972e-02f);
  h = S::fmadd(h, t, S::set1(2.306446135e-01f));
  h = S::fmadd(h, t, S::set1(-4.189294875e-01f));
  h = S::fmadd(h, t, S::set1(2.326555848e-01f));
  h = S::fmadd(h, t, S::set1(-9.908269159e-03f));
  h = S::fmadd(h, t, S::set1(1.995002776e-01f));
  h = S::fmadd(h, t, S::set1(2.433113903e-01f));
  h = S::fmadd(h, t, S::set1(2.823942304e-01f));
  h = S::fmadd(h, t, S::set1(2.820838988e-01f));
  const V sq_hi = s;
  const V sq_lo = S::fmsub(a, a, sq_hi);  // exact: a*a - hi
  V e = S::exp(S::sub(S::zero(), sq_hi));
  e = S::fnmadd(e, sq_lo, e);  // e^(-hi) * (1 - lo)
  const V erfc_large = S::mul(S::mul(t, h), e);
  const V one = S::set1(1.0f), two = S::set1(2.0f);
  const V neg = S::select_lt(z, S::zero(), one, S::zero());  // 1 where z < 0
  // z >= 0: 1 + erf(a) or 2 - erfc(a);  z < 0: 1 - erf(a) or erfc(a).
  const V small_pos = S::add(one, erf_small), small_neg = S::sub(one, erf_small);
  const V large_pos = S::sub(two, erfc_large);
  const V small_res = S::select_lt(neg, S::set1(0.5f), small_pos, small_neg);
  const V large_res = S::select_lt(neg, S::set1(0.5f), large_pos, erfc_large);
  return S::select_lt(a, one, small_res, large_res);
}

template <class S>
typename S::V gelu_vec(typename S::V x) {
  const typename S::V z = S::mul(x, S::set1(0.70710678118654752440f));
  return S::mul(S::mul(x, S::set1(0.5f)), one_plus_erf<S>(z));
}

template <class S>
typename S::V quick_gelu_vec(typename S::V x) {
  const typename S::V e = S::exp(S::sub(S::zero(), S::mul(S::set1(1.702f), x)));
  return S::div(x, S::add(S::set1(1.0f), e));
}

template <class S>
typename S::V silu_vec(typename S::V x) {
  return S::div(x, S::add(S::set1(1.0f), S::exp(S::sub(S::zero(), x))));
}

template <class S, class F>
void map_inplace(float* x, int64_t n, F f) {
  const int64_t n_vec = n / S::W;
#pragma omp parallel for schedule(static) if (elems_worth_threading(n))
  for (int64_t v = 0; v < n_vec; ++v) S::store(x + v * S::W, f(S::load(x + v * S::W)));
  const int64_t i = n_vec * S::W;
  if (i < n) {
    const auto m = S::mask(n - i);
    S::store(x + i, f(S::load(x + i, m)), m);
  }
}

template <class S>
void silu_mul_impl(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out,
                   int64_t ld_out, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows_worth_threading(rows, n))
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate + r * ld_gate;
    const float* u = up + r * ld_up;
    float* o = out + r * ld_out;
    int64_t i = 0;
    for (; i + S::W <= n; i += S::W) S::store(o + i, S::mul(silu_vec<S>(S::load(g + i)), S::load(u + i)));
    if (i < n) {
      const auto m = S::mask(n - i);
      S::store(o + i, S::mul(silu_vec<S>(S::load(g + i, m)), S::load(u + i, m)), m);
    }
  }
}

template <class S>
void add_inplace_impl(float* y, const float* x, int64_t n) {
  const int64_t n_vec = n / S::W;
#pragma omp parallel for schedule(static) if (elems_worth_threading(n))
  for (int64_t v = 0; v < n_vec; ++v)
    S::store(y + v * S::W, S::add(S::load(y + v * S::W), S::load(x + v * S::W)));
  const int64_t i = n_vec * S::W;
  if (i < n) {
    const auto m = S::mask(n - i);
    S::store(y + i, S::add(S::load(y + i, m), S::load(x + i, m)), m);
  }
}

// Same arithmetic as ref::rope_apply (two rounded products, one rounded sum; no FMA), so
// the result is bit-identical to the reference.
template <class S>
void rope_impl(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
               const float* cos_table, const float* sin_table) {
  using V = typename S::V;
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows_worth_threading(n_tokens, n_heads * head_dim))
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* c = cos_table + int64_t(pos[t]) * half;
    const float* s = sin_table + int64_t(pos[t]) * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x1p = x + t * ld + h * head_dim;
      float* x2p = x1p + half;
      int64_t i = 0;
      for (; i + S::W <= half; i += S::W) {
        const V x1 = S::load(x1p + i), x2 = S::load(x2p + i), vc = S::load(c + i), vs = S::load(s + i);
        S::store(x1p + i, S::sub(S::opaque(S::mul(x1, vc)), S::opaque(S::mul(x2, vs))));
        S::store(x2p + i, S::add(S::opaque(S::mul(x2, vc)), S::opaque(S::mul(x1, vs))));
      }
      if (i < half) {
        const auto m = S::mask(half - i);
        const V x1 = S::load(x1p + i, m), x2 = S::load(x2p + i, m), vc = S::load(c + i, m),
                vs = S::load(s + i, m);
        S::store(x1p + i, S::sub(S::opaque(S::mul(x1, vc)), S::opaque(S::mul(x2, vs))), m);
        S::store(x2p + i, S::add(S::opaque(S::mul(x2, vc)), S::opaque(S::mul(x1, vs))), m);
      }
    }
  }
}

}  // namespace
}  // namespace recap::kernels
