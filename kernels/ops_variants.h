// Internal to kernels/: the per-ISA entry points of the ops and attention kernels (same
// signatures as the public functions in ops.h / attention.h), the argument checks every
// dispatcher runs, and the scalar f16/bf16 conversions the KV cache uses.
//
// Everything defined in this header has internal linkage (static / anonymous namespace): it
// is included by translation units compiled with different ISA flags, and an inline function
// with external linkage would let the linker keep the AVX-512 copy for the scalar path.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace recap::kernels {

#define RECAP_OPS_DECLARE_VARIANT(ns)                                                                        \
  namespace ns {                                                                                             \
  void rmsnorm(const float* x, int64_t ld_x, const float* w, float* y, int64_t ld_y, int64_t rows,           \
               int64_t dim, float eps);                                                                      \
  void layernorm(const float* x, int64_t ld_x, const float* w, const float* b, float* y, int64_t ld_y,       \
                 int64_t rows, int64_t dim, float eps);                                                      \
  void softmax(float* x, int64_t ld, int64_t rows, int64_t n);                                               \
  void gelu_erf(float* x, int64_t n);                                                                        \
  void quick_gelu(float* x, int64_t n);                                                                      \
  void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, float* out,              \
                int64_t ld_out, int64_t rows, int64_t n);                                                    \
  void add_inplace(float* y, const float* x, int64_t n);                                                     \
  void rope_apply(float* x, int64_t ld, int64_t n_tokens, int64_t n_heads, int64_t head_dim,                 \
                  const int32_t* pos, const float* cos_table, const float* sin_table);                       \
  void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos,               \
                      int64_t n_tokens, const float* k, int64_t ldk, const float* v, int64_t ldv);           \
  void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,  \
                              const KvCacheView& cache, const int32_t* block_table, float scale, float* out, \
                              int64_t ldo);                                                                  \
  void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,               \
                                    const KvCacheView& cache, float scale);                                  \
  void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v,             \
                       int64_t ldv, int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out,   \
                       int64_t ldo);                                                                         \
  }

RECAP_OPS_DECLARE_VARIANT(avx2)
RECAP_OPS_DECLARE_VARIANT(avx512)
#undef RECAP_OPS_DECLARE_VARIANT

namespace {

// IEEE binary16 -> f32, exact (handles subnormals, inf, NaN).
[[maybe_unused]] inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalise the mantissa.
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// f32 -> IEEE binary16 with round-to-nearest-even (what F16C's vcvtps2ph with imm 0 does):
// overflow goes to inf, tiny values to (correctly rounded) subnormals or zero, NaN stays NaN.
[[maybe_unused]] inline uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u)
    return uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? (0x200u | ((abs >> 13) & 0x3ffu)) : 0u));
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs >= 0x38800000u) {                                 // normal half range (>= 2^-14)
    uint32_t mant = abs + 0xfffu + ((abs >> 13) & 1u);      // RNE at bit 13
    return uint16_t(sign | ((mant - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself is a tie -> 0)
  // Subnormal half: value = m * 2^-24 with m = round(abs_value * 2^24).
  const uint32_t e = abs >> 23;                      // biased f32 exponent, 102..112
  const uint32_t m = (abs & 0x7fffffu) | 0x800000u;  // 24-bit significand
  const uint32_t shift = 126u - e;                   // bits to drop: value = m * 2^(e-150)
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return uint16_t(sign | q);
}

[[maybe_unused]] inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// f32 -> bf16, round-to-nearest-even; NaN stays a (quiet) NaN.
[[maybe_unused]] inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

}  // namespace

// Argument checks shared by the dispatchers (throw std::invalid_argument naming the kernel).
void check_rows_args(const char* kernel, int64_t rows, int64_t dim, int64_t ld_in, int64_t ld_out);
void check_kv_view(const char* kernel, const KvCacheView& cache);

// Element size of a KV cache dtype.
inline int64_t kv_dtype_bytes(KvDType t) {
  return t == KvDType::F32 ? 4 : 2;
}

}  // namespace recap::kernels
