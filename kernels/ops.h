// Element-wise and row-wise transformer ops on f32 activations. Every op dispatches on
// active_isa() to an AVX-512, AVX2 or scalar-reference implementation (namespace ref),
// all with the same signature. Unless stated, in-place use (y == x) is allowed.
#pragma once
#include <cstdint>

namespace recap::kernels {

// RMSNorm over `rows` rows of length `dim` (row stride ld): y = w * (x * rsqrt(mean(x^2) + eps)).
// Matches HF LlamaRMSNorm in f32.
void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows, int64_t dim,
             float eps);
// LayerNorm (biased variance, as torch): y = (x - mean) / sqrt(var + eps) * w + b.
void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
               int64_t rows, int64_t dim, float eps);
// Row softmax in place over `rows` rows of length n (stride ld); max-subtracted.
void softmax(float* x, int64_t ld, int64_t rows, int64_t n);
// Exact-erf GELU: 0.5 x (1 + erf(x / sqrt 2)), over n contiguous values.
void gelu_erf(float* x, int64_t n);
// quick_gelu: x * sigmoid(1.702 x).
void quick_gelu(float* x, int64_t n);
// SwiGLU: out[i] = silu(gate[i]) * up[i] over `rows` rows of `n` (separate strides).
void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out, int64_t ld_out,
              int64_t rows, int64_t n);
// y[i] += x[i] over n values (residual add).
void add_inplace(float* y, const float* x, int64_t n);

// RoPE, HF rotate_half form, in place. x holds n_tokens rows (stride ld) of n_heads heads of
// head_dim values each; token t has position pos[t]. cos_table/sin_table are
// [max_pos, head_dim/2] row-major (build_rope_table). For each head and i < head_dim/2:
//   x'[i]        = x[i] * c - x[i + h/2] * s
//   x'[i + h/2]  = x[i + h/2] * c + x[i] * s      with c, s = table[pos][i]
void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                const float* cos_table, const float* sin_table);
// Fills cos/sin tables [max_pos, head_dim/2] the way HF LlamaRotaryEmbedding does in f32:
// inv_freq[i] = 1 / theta^(2i/head_dim) (f32), angle = f32(pos) * inv_freq[i] (f32 product).
void build_rope_table(int64_t max_pos, int64_t head_dim, float theta, float* cos_table, float* sin_table);

namespace ref {
void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows, int64_t dim,
             float eps);
void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,
               int64_t rows, int64_t dim, float eps);
void softmax(float* x, int64_t ld, int64_t rows, int64_t n);
void gelu_erf(float* x, int64_t n);
void quick_gelu(float* x, int64_t n);
void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out, int64_t ld_out,
              int64_t rows, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);
void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* pos,
                const float* cos_table, const float* sin_table);
}  // namespace ref

}  // namespace recap::kernels
