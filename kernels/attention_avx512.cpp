// AVX512 variants of the attention kernels in kernels/attention.h: the bodies of
// attention_simd_body.h instantiated with the SimdAvx512 traits (this file gets the avx512 flags
// from cmake/RecapLayer.cmake).
#include "kernels/ops_simd_avx512.h"
// (traits first: the body is written against them)
#include "kernels/attention_simd_body.h"
#include "kernels/ops_variants.h"

namespace recap::kernels::avx512 {

using S = SimdAvx512;

void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos, int64_t n_tokens,
                    const float* k, int64_t ldk, const float* v, int64_t ldv) {
  kv_cache_write_impl<S>(cache, block_table, start_pos, n_tokens, k, ldk, v, ldv);
}

void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                            const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                            int64_t ldo) {
  paged_causal_dispatch<S>(q, ldq, n_q, start_pos, n_heads, cache, block_table, scale, out, ldo);
}

void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                  const KvCacheView& cache, float scale) {
  paged_causal_batch_dispatch<S>(seqs, n_seqs, n_heads, cache, scale);
}

void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                     int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out, int64_t ldo) {
  dense_impl<S>(q, ldq, k, ldk, v, ldv, T, n_heads, head_dim, scale, out, ldo);
}

}  // namespace recap::kernels::avx512
