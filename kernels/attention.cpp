// Dispatch points of the attention kernels in kernels/attention.h: argument checks, then one
// switch on active_isa() per kernel.
#include "kernels/attention.h"

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

// The message prefix naming sequence `seq` of a batch ("sequence 3: "), "" for seq < 0 (a
// single-sequence call). Built only when a check fails: the checks run every layer of every step.
std::string where(int64_t seq) {
  return seq < 0 ? std::string() : "sequence " + std::to_string(seq) + ": ";
}

// Block table entries a sequence of `n_pos` positions needs must be valid block ids; `seq` as
// in where().
void check_block_table(const char* kernel, int64_t seq, const KvCacheView& c, const int32_t* block_table,
                       int64_t n_pos) {
  if (n_pos <= 0) return;
  if (block_table == nullptr) fail(kernel, where(seq) + "block_table is null");
  const int64_t n_blocks = (n_pos + c.block_size - 1) / c.block_size;
  for (int64_t j = 0; j < n_blocks; ++j)
    if (block_table[j] < 0)
      fail(kernel, where(seq) + "block_table[" + std::to_string(j) + "] = " + std::to_string(block_table[j]) +
                       " is negative");
}

// The checks of attention_paged_causal that do not depend on the sequence (the cache view
// is checked separately).
void check_paged_heads(const char* kernel, const KvCacheView& cache, int64_t n_heads) {
  if (n_heads <= 0 || n_heads % cache.n_kv_heads != 0)
    fail(kernel, "n_heads " + std::to_string(n_heads) + " is not a positive multiple of n_kv_heads " +
                     std::to_string(cache.n_kv_heads));
}

// The per-sequence checks of attention_paged_causal (after check_kv_view and
// check_paged_heads); `seq` as in where().
void check_paged_seq(const char* kernel, int64_t seq, const KvCacheView& cache, int64_t n_heads,
                     const PagedAttnSeq& s) {
  if (s.start_pos < 0 || s.n_q < 0) fail(kernel, where(seq) + "negative start_pos or n_q");
  if (s.n_q == 0) return;
  const int64_t row = n_heads * cache.head_dim;
  if (s.q == nullptr || s.out == nullptr) fail(kernel, where(seq) + "q or out is null");
  if (s.n_q > 1 && (s.ldq < row || s.ldo < row))
    fail(kernel, where(seq) + "ldq/ldo (" + std::to_string(s.ldq) + "/" + std::to_string(s.ldo) +
                     ") < n_heads*head_dim = " + std::to_string(row));
  check_block_table(kernel, seq, cache, s.block_table, s.start_pos + s.n_q);
}

}  // namespace

void check_kv_view(const char* kernel, const KvCacheView& c) {
  if (c.dtype != KvDType::F32 && c.dtype != KvDType::BF16 && c.dtype != KvDType::F16)
    fail(kernel, "unknown KV cache dtype " + std::to_string(int(c.dtype)));
  if (c.n_kv_heads <= 0 || c.head_dim <= 0 || c.block_size <= 0)
    fail(kernel, "KV cache view needs n_kv_heads, head_dim, block_size > 0 (got " +
                     std::to_string(c.n_kv_heads) + ", " + std::to_string(c.head_dim) + ", " +
                     std::to_string(c.block_size) + ")");
  if (c.block_stride < c.n_kv_heads * c.block_size * c.head_dim)
    fail(kernel, "block_stride " + std::to_string(c.block_stride) + " < n_kv_heads*block_size*head_dim = " +
                     std::to_string(c.n_kv_heads * c.block_size * c.head_dim));
  if (c.k_base == nullptr || c.v_base == nullptr) fail(kernel, "k_base/v_base is null");
}

void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos, int64_t n_tokens,
                    const float* k, int64_t ldk, const float* v, int64_t ldv) {
  const char* kernel = "kv_cache_write";
  check_kv_view(kernel, cache);
  if (start_pos < 0 || n_tokens < 0) fail(kernel, "negative start_pos or n_tokens");
  if (n_tokens == 0) return;
  const int64_t row = cache.n_kv_heads * cache.head_dim;
  if (k == nullptr || v == nullptr) fail(kernel, "k or v is null");
  if (n_tokens > 1 && (ldk < row || ldv < row))
    fail(kernel, "ldk/ldv (" + std::to_string(ldk) + "/" + std::to_string(ldv) +
                     ") < n_kv_heads*head_dim = " + std::to_string(row));
  check_block_table(kernel, -1, cache, block_table, start_pos + n_tokens);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::kv_cache_write(cache, block_table, start_pos, n_tokens, k, ldk, v, ldv);
    case Isa::Avx2:
      return avx2::kv_cache_write(cache, block_table, start_pos, n_tokens, k, ldk, v, ldv);
    case Isa::Ref:
      break;
  }
  ref::kv_cache_write(cache, block_table, start_pos, n_tokens, k, ldk, v, ldv);
}

void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                            const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                            int64_t ldo) {
  const char* kernel = "attention_paged_causal";
  check_kv_view(kernel, cache);
  check_paged_heads(kernel, cache, n_heads);
  check_paged_seq(kernel, -1, cache, n_heads, PagedAttnSeq{q, ldq, n_q, start_pos, block_table, out, ldo});
  if (n_q == 0) return;
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::attention_paged_causal(q, ldq, n_q, start_pos, n_heads, cache, block_table, scale, out,
                                            ldo);
    case Isa::Avx2:
      return avx2::attention_paged_causal(q, ldq, n_q, start_pos, n_heads, cache, block_table, scale, out,
                                          ldo);
    case Isa::Ref:
      break;
  }
  ref::attention_paged_causal(q, ldq, n_q, start_pos, n_heads, cache, block_table, scale, out, ldo);
}

void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                  const KvCacheView& cache, float scale) {
  const char* kernel = "attention_paged_causal_batch";
  check_kv_view(kernel, cache);
  check_paged_heads(kernel, cache, n_heads);
  if (n_seqs < 0) fail(kernel, "negative n_seqs " + std::to_string(n_seqs));
  if (n_seqs == 0) return;
  if (seqs == nullptr) fail(kernel, "seqs is null");
  for (int64_t i = 0; i < n_seqs; ++i) check_paged_seq(kernel, i, cache, n_heads, seqs[i]);
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::attention_paged_causal_batch(seqs, n_seqs, n_heads, cache, scale);
    case Isa::Avx2:
      return avx2::attention_paged_causal_batch(seqs, n_seqs, n_heads, cache, scale);
    case Isa::Ref:
      break;
  }
  ref::attention_paged_causal_batch(seqs, n_seqs, n_heads, cache, scale);
}

void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                     int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out, int64_t ldo) {
  const char* kernel = "attention_dense";
  if (T < 0 || n_heads <= 0 || head_dim <= 0)
    fail(kernel, "bad shape T=" + std::to_string(T) + " n_heads=" + std::to_string(n_heads) +
                     " head_dim=" + std::to_string(head_dim));
  if (T == 0) return;
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr) fail(kernel, "q, k, v or out is null");
  const int64_t row = n_heads * head_dim;
  if (T > 1 && (ldq < row || ldk < row || ldv < row || ldo < row))
    fail(kernel, "a row stride is smaller than n_heads*head_dim = " + std::to_string(row));
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::attention_dense(q, ldq, k, ldk, v, ldv, T, n_heads, head_dim, scale, out, ldo);
    case Isa::Avx2:
      return avx2::attention_dense(q, ldq, k, ldk, v, ldv, T, n_heads, head_dim, scale, out, ldo);
    case Isa::Ref:
      break;
  }
  ref::attention_dense(q, ldq, k, ldk, v, ldv, T, n_heads, head_dim, scale, out, ldo);
}

}  // namespace recap::kernels
