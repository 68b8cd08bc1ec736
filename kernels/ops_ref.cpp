// Scalar reference implementations of the row-wise and element-wise ops (kernels/ops.h).
// They define the numerics the SIMD variants are tested against, and follow PyTorch's f32
// formulas operation by operation (same products, same order), using libm for exp/erf.
// Reductions (sum of squares, mean, variance, softmax denominator) accumulate in double:
// PyTorch reduces with many partial sums, so a plain sequential f32 sum would be *less*
// faithful than a double sum rounded once to f32.
#include <cmath>
#include <cstdint>

#include "kernels/ops.h"

namespace recap::kernels::ref {

void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows, int64_t dim,
             float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld_x;
    float* yr = y + r * ld_y;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += double(xr[i]) * double(xr[i]);
    // HF LlamaRMSNorm: variance = mean(x^2) (f32), x * rsqrt(variance + eps), then weight * (.)
    const float variance = float(sum_sq / double(dim));
    const float inv_rms = 1.0f / std::sqrt(variance + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv_rms);
  }
}

void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
               int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld_x;
    float* yr = y + r * ld_y;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean_d = sum / double(dim);
    double sum_dev_sq = 0.0;  // two-pass biased variance (torch.nn.LayerNorm: unbiased=False)
    for (int64_t i = 0; i < dim; ++i) {
      const double d = double(xr[i]) - mean_d;
      sum_dev_sq += d * d;
    }
    const float mean = float(mean_d);
    const float var = float(sum_dev_sq / double(dim));
    const float rstd = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
  }
}

void softmax(float* x, int64_t ld, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * ld;
    if (n <= 0) continue;
    float mx = xr[0];
    for (int64_t i = 1; i < n; ++i) mx = xr[i] > mx ? xr[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      xr[i] = std::exp(xr[i] - mx);
      sum += xr[i];
    }
    const float total = float(sum);
    for (int64_t i = 0; i < n; ++i) xr[i] = xr[i] / total;
  }
}

void gelu_erf(float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = v * 0.5f * (1.0f + std::erf(v * kInvSqrt2));  // torch GeluType::None order
  }
}

void quick_gelu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float sig = 1.0f / (1.0f + std::exp(-(1.702f * v)));  // HF: x * sigmoid(1.702 * x)
    x[i] = v * sig;
  }
}

void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out, int64_t ld_out,
              int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate + r * ld_gate;
    const float* u = up + r * ld_up;
    float* o = out + r * ld_out;
    for (int64_t i = 0; i < n; ++i) {
      const float silu = g[i] / (1.0f + std::exp(-g[i]));  // torch silu: x / (1 + exp(-x))
      o[i] = silu * u[i];
    }
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                const float* cos_table, const float* sin_table) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* c = cos_table + int64_t(pos[t]) * half;
    const float* s = sin_table + int64_t(pos[t]) * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + t * ld + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = xh[i], x2 = xh[i + half];
        // HF: q*cos + rotate_half(q)*sin, rotate_half(q) = cat(-q2, q1); two rounded products, one sum.
        const float a = x1 * c[i];
        const float b = -x2 * s[i];
        const float d = x2 * c[i];
        const float e = x1 * s[i];
        xh[i] = a + b;
        xh[i + half] = d + e;
      }
    }
  }
}

}  // namespace recap::kernels::ref
