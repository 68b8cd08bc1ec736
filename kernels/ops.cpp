// Dispatch points of the ops in kernels/ops.h: argument checks, then one switch on
// active_isa() per op. Also build_rope_table (run once at load, not dispatched).
#include "kernels/ops.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/isa.h"
#include "kernels/ops_variants.h"

namespace recap::kernels {

namespace {

[[noreturn]] void fail(const char* kernel, const std::string& what) {
  throw std::invalid_argument(std::string("recap::kernels::") + kernel + ": " + what);
}

void check_ptr(const char* kernel, const void* p, const char* name, bool needed) {
  if (needed && p == nullptr) fail(kernel, std::string(name) + " is null");
}

void check_elementwise(const char* kernel, int64_t n) {
  if (n < 0) fail(kernel, "negative length " + std::to_string(n));
}

}  // namespace

void check_rows_args(const char* kernel, int64_t rows, int64_t dim, int64_t ld_in, int64_t ld_out) {
  if (rows < 0 || dim < 0)
    fail(kernel, "negative shape rows=" + std::to_string(rows) + " dim=" + std::to_string(dim));
  if (rows > 1 && (ld_in < dim || ld_out < dim))
    fail(kernel, "row stride smaller than the row (dim=" + std::to_string(dim) +
                     ", ld_in=" + std::to_string(ld_in) + ", ld_out=" + std::to_string(ld_out) + ")");
}

void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows, int64_t dim,
             float eps) {
  check_rows_args("rmsnorm", rows, dim, ld_x, ld_y);
  if (rows == 0 || dim == 0) return;
  check_ptr("rmsnorm", x, "x", true);
  check_ptr("rmsnorm", w, "w", true);
  check_ptr("rmsnorm", y, "y", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::rmsnorm(x, ld_x, w, y, ld_y, rows, dim, eps);
    case Isa::Avx2:
      return avx2::rmsnorm(x, ld_x, w, y, ld_y, rows, dim, eps);
    case Isa::Ref:
      break;
  }
  ref::rmsnorm(x, ld_x, w, y, ld_y, rows, dim, eps);
}

void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
               int64_t rows, int64_t dim, float eps) {
  check_rows_args("layernorm", rows, dim, ld_x, ld_y);
  if (rows == 0 || dim == 0) return;
  check_ptr("layernorm", x, "x", true);
  check_ptr("layernorm", w, "w", true);
  check_ptr("layernorm", b, "b", true);
  check_ptr("layernorm", y, "y", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::layernorm(x, ld_x, w, b, y, ld_y, rows, dim, eps);
    case Isa::Avx2:
      return avx2::layernorm(x, ld_x, w, b, y, ld_y, rows, dim, eps);
    case Isa::Ref:
      break;
  }
  ref::layernorm(x, ld_x, w, b, y, ld_y, rows, dim, eps);
}

void softmax(float* x, int64_t ld, int64_t rows, int64_t n) {
  check_rows_args("softmax", rows, n, ld, ld);
  if (rows == 0 || n == 0) return;
  check_ptr("softmax", x, "x", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::softmax(x, ld, rows, n);
    case Isa::Avx2:
      return avx2::softmax(x, ld, rows, n);
    case Isa::Ref:
      break;
  }
  ref::softmax(x, ld, rows, n);
}

void gelu_erf(float* x, int64_t n) {
  check_elementwise("gelu_erf", n);
  if (n == 0) return;
  check_ptr("gelu_erf", x, "x", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::gelu_erf(x, n);
    case Isa::Avx2:
      return avx2::gelu_erf(x, n);
    case Isa::Ref:
      break;
  }
  ref::gelu_erf(x, n);
}

void quick_gelu(float* x, int64_t n) {
  check_elementwise("quick_gelu", n);
  if (n == 0) return;
  check_ptr("quick_gelu", x, "x", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::quick_gelu(x, n);
    case Isa::Avx2:
      return avx2::quick_gelu(x, n);
    case Isa::Ref:
      break;
  }
  ref::quick_gelu(x, n);
}

void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out, int64_t ld_out,
              int64_t rows, int64_t n) {
  check_rows_args("silu_mul", rows, n, ld_gate < ld_up ? ld_gate : ld_up, ld_out);
  if (rows == 0 || n == 0) return;
  check_ptr("silu_mul", gate, "gate", true);
  check_ptr("silu_mul", up, "up", true);
  check_ptr("silu_mul", out, "out", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::silu_mul(gate, ld_gate, up, ld_up, out, ld_out, rows, n);
    case Isa::Avx2:
      return avx2::silu_mul(gate, ld_gate, up, ld_up, out, ld_out, rows, n);
    case Isa::Ref:
      break;
  }
  ref::silu_mul(gate, ld_gate, up, ld_up, out, ld_out, rows, n);
}

void add_inplace(float* y, const float* x, int64_t n) {
  check_elementwise("add_inplace", n);
  if (n == 0) return;
  check_ptr("add_inplace", y, "y", true);
  check_ptr("add_inplace", x, "x", true);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::add_inplace(y, x, n);
    case Isa::Avx2:
      return avx2::add_inplace(y, x, n);
    case Isa::Ref:
      break;
  }
  ref::add_inplace(y, x, n);
}

void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                const float* cos_table, const float* sin_table) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    fail("rope_apply", "head_dim must be even and > 0, got " + std::to_string(head_dim));
  if (n_heads < 0) fail("rope_apply", "negative n_heads " + std::to_string(n_heads));
  check_rows_args("rope_apply", n_tokens, n_heads * head_dim, ld, ld);
  if (n_tokens == 0 || n_heads == 0) return;
  check_ptr("rope_apply", x, "x", true);
  check_ptr("rope_apply", pos, "pos", true);
  check_ptr("rope_apply", cos_table, "cos_table", true);
  check_ptr("rope_apply", sin_table, "sin_table", true);
  for (int64_t t = 0; t < n_tokens; ++t)
    if (pos[t] < 0)
      fail("rope_apply", "negative position " + std::to_string(pos[t]) + " at token " + std::to_string(t));
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::rope_apply(x, ld, n_tokens, n_heads, head_dim, pos, cos_table, sin_table);
    case Isa::Avx2:
      return avx2::rope_apply(x, ld, n_tokens, n_heads, head_dim, pos, cos_table, sin_table);
    case Isa::Ref:
      break;
  }
  ref::rope_apply(x, ld, n_tokens, n_heads, head_dim, pos, cos_table, sin_table);
}

void build_rope_table(int64_t max_pos, int64_t head_dim, float theta, float* cos_table, float* sin_table) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    fail("build_rope_table", "head_dim must be even and > 0, got " + std::to_string(head_dim));
  if (max_pos < 0) fail("build_rope_table", "negative max_pos " + std::to_string(max_pos));
  if (!(theta > 0.0f) || !std::isfinite(theta)) fail("build_rope_table", "theta must be finite and > 0");
  if (max_pos == 0) return;
  check_ptr("build_rope_table", cos_table, "cos_table", true);
  check_ptr("build_rope_table", sin_table, "sin_table", true);
  const int64_t half = head_dim / 2;
  // HF: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all f32:
  // f32 exponent (2i)/dim, f32 pow of the f32 base, f32 reciprocal.
  float inv_freq[4096];
  float* inv = half <= 4096 ? inv_freq : new float[size_t(half)];
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = float(2 * i) / float(head_dim);
    inv[i] = 1.0f / std::pow(theta, exponent);
  }
  // freqs = position (f32) * inv_freq (one rounded f32 product); cos/sin of that f32 angle.
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv[i];
      cos_table[p * half + i] = std::cos(angle);
      sin_table[p * half + i] = std::sin(angle);
    }
  }
  if (inv != inv_freq) delete[] inv;
}

}  // namespace recap::kernels
