// Scalar reference attention (kernels/attention.h): the numerics every SIMD variant is
// tested against. One query row at a time, keys in tiles, online softmax:
//   per tile: s_j = scale * (q . k_j) (f32 dot, sequential), m' = max(m, max_j s_j),
//   l = l * exp(m - m') + sum_j exp(s_j - m'),  o = o * exp(m - m') + sum_j exp(s_j - m') v_j,
// and out = o / l at the end. Scratch is one tile of scores plus one head_dim accumulator.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ops_variants.h"

namespace recap::kernels::ref {
namespace {

constexpr int64_t kKeyTile = 64;

// Reads element i of a K/V row in the cache dtype as f32.
inline float load_cache(const void* row, KvDType dtype, int64_t i) {
  switch (dtype) {
    case KvDType::F32:
      return static_cast<const float*>(row)[i];
    case KvDType::BF16:
      return bf16_bits_to_f32(static_cast<const uint16_t*>(row)[i]);
    case KvDType::F16:
      return f16_bits_to_f32(static_cast<const uint16_t*>(row)[i]);
  }
  return 0.0f;
}

// Running state of one query row's online softmax.
struct OnlineSoftmaxRow {
  float max = -INFINITY;
  float sum = 0.0f;
  std::vector<float> acc;  // [head_dim]
};

// Folds a tile of keys (score already computed) into the running state. v_row(j) gives the
// value row of key j of the tile as (pointer, dtype).
template <class ValueRow>
void fold_tile(OnlineSoftmaxRow& st, const float* scores, int64_t n, int64_t head_dim, KvDType dtype,
               ValueRow value_row) {
  float tile_max = -INFINITY;
  for (int64_t j = 0; j < n; ++j) tile_max = scores[j] > tile_max ? scores[j] : tile_max;
  const float new_max = tile_max > st.max ? tile_max : st.max;
  const float correction = std::exp(st.max - new_max);  // exp(-inf) = 0 on the first tile
  st.sum *= correction;
  for (int64_t d = 0; d < head_dim; ++d) st.acc[d] *= correction;
  for (int64_t j = 0; j < n; ++j) {
    const float p = std::exp(scores[j] - new_max);
    st.sum += p;
    const void* v = value_row(j);
    for (int64_t d = 0; d < head_dim; ++d) st.acc[d] += p * load_cache(v, dtype, d);
  }
  st.max = new_max;
}

inline const void* cache_row(const void* base, const KvCacheView& c, const int32_t* block_table,
                             int64_t kv_head, int64_t pos) {
  const int64_t block = block_table[pos / c.block_size];
  const int64_t elem = block * c.block_stride + (kv_head * c.block_size + pos % c.block_size) * c.head_dim;
  return static_cast<const uint8_t*>(base) + elem * kv_dtype_bytes(c.dtype);
}

inline void* cache_row_mut(void* base, const KvCacheView& c, const int32_t* block_table, int64_t kv_head,
                           int64_t pos) {
  return const_cast<void*>(cache_row(base, c, block_table, kv_head, pos));
}

void store_row(void* dst, KvDType dtype, const float* src, int64_t n) {
  switch (dtype) {
    case KvDType::F32:
      for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[i] = src[i];
      break;
    case KvDType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16_bits(src[i]);
      break;
    case KvDType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16_bits(src[i]);
      break;
  }
}

}  // namespace

void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos, int64_t n_tokens,
                    const float* k, int64_t ldk, const float* v, int64_t ldv) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < cache.n_kv_heads; ++h) {
      const int64_t p = start_pos + t;
      store_row(cache_row_mut(cache.k_base, cache, block_table, h, p), cache.dtype,
                k + t * ldk + h * cache.head_dim, cache.head_dim);
      store_row(cache_row_mut(cache.v_base, cache, block_table, h, p), cache.dtype,
                v + t * ldv + h * cache.head_dim, cache.head_dim);
    }
  }
}

void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                            const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                            int64_t ldo) {
  const int64_t hd = cache.head_dim;
  const int64_t group = n_heads / cache.n_kv_heads;
  float scores[kKeyTile];
  OnlineSoftmaxRow st;
  st.acc.resize(size_t(hd));
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t n_keys = start_pos + i + 1;  // causal: positions 0 .. start_pos + i
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t kvh = h / group;
      const float* qr = q + i * ldq + h * hd;
      st.max = -INFINITY;
      st.sum = 0.0f;
      for (auto& a : st.acc) a = 0.0f;
      for (int64_t j0 = 0; j0 < n_keys; j0 += kKeyTile) {
        const int64_t n = n_keys - j0 < kKeyTile ? n_keys - j0 : kKeyTile;
        for (int64_t j = 0; j < n; ++j) {
          const void* kr = cache_row(cache.k_base, cache, block_table, kvh, j0 + j);
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qr[d] * load_cache(kr, cache.dtype, d);
          scores[j] = dot * scale;
        }
        fold_tile(st, scores, n, hd, cache.dtype,
                  [&](int64_t j) { return cache_row(cache.v_base, cache, block_table, kvh, j0 + j); });
      }
      float* o = out + i * ldo + h * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] = st.acc[d] / st.sum;
    }
  }
}

// The reference of the batch is its definition: each sequence on its own.
void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                  const KvCacheView& cache, float scale) {
  for (int64_t i = 0; i < n_seqs; ++i) {
    const PagedAttnSeq& s = seqs[i];
    if (s.n_q > 0)
      ref::attention_paged_causal(s.q, s.ldq, s.n_q, s.start_pos, n_heads, cache, s.block_table, scale, s.out,
                                  s.ldo);
  }
}

void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                     int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out, int64_t ldo) {
  const int64_t hd = head_dim;
  float scores[kKeyTile];
  OnlineSoftmaxRow st;
  st.acc.resize(size_t(hd));
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const float* qr = q + i * ldq + h * hd;
      st.max = -INFINITY;
      st.sum = 0.0f;
      for (auto& a : st.acc) a = 0.0f;
      for (int64_t j0 = 0; j0 < T; j0 += kKeyTile) {
        const int64_t n = T - j0 < kKeyTile ? T - j0 : kKeyTile;
        for (int64_t j = 0; j < n; ++j) {
          const float* kr = k + (j0 + j) * ldk + h * hd;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qr[d] * kr[d];
          scores[j] = dot * scale;
        }
        fold_tile(st, scores, n, hd, KvDType::F32, [&](int64_t j) { return v + (j0 + j) * ldv + h * hd; });
      }
      float* o = out + i * ldo + h * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] = st.acc[d] / st.sum;
    }
  }
}

}  // namespace recap::kernels::ref
