// Attention kernels: causal GQA over a paged KV cache (LLaMA) and dense bidirectional
// multi-head attention (ViT). Both are tiled with an online softmax, so scratch memory is
// never O(T^2): O(tile) per thread, plus for the dense kernel one O(T * n_heads * head_dim)
// copy of K and V laid out for its inner loops. Scores and softmax are in f32.
#pragma once
#include <cstdint>

namespace recap::kernels {

enum class KvDType { F32, BF16, F16 };

// One layer's view of a paged KV cache pool.
//   pool layout (K and V each):  block b starts at base + b * block_stride elements;
//   inside a block: [n_kv_heads][block_size][head_dim]   (head-major so one head's keys of a
//   block are contiguous for the dot products).
// A sequence owns a block table: logical block j (positions j*block_size ..) -> physical id.
struct KvCacheView {
  KvDType dtype = KvDType::F32;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;
  void* k_base = nullptr;
  void* v_base = nullptr;
  int64_t block_stride = 0;  // elements between consecutive blocks (= n_kv_heads*block_size*head_dim)
};

// Writes n_tokens rows of K and V (f32, [n_tokens, n_kv_heads*head_dim], strides ldk/ldv)
// for positions start_pos .. start_pos+n_tokens-1 into the cache, converting to the cache dtype.
void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos, int64_t n_tokens,
                    const float* k, int64_t ldk, const float* v, int64_t ldv);

// Causal GQA attention of one sequence. q: [n_q, n_heads*head_dim] (stride ldq) for positions
// start_pos .. start_pos+n_q-1 (RoPE already applied); keys/values for positions
// 0 .. start_pos+n_q-1 are in the cache. Query head h reads KV head h / (n_heads/n_kv_heads).
// out: [n_q, n_heads*head_dim] (stride ldo). scale is usually 1/sqrt(head_dim).
void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                            const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                            int64_t ldo);

// One sequence's part of a batched attention_paged_causal_batch call: the arguments of
// attention_paged_causal that differ between sequences, with the same meaning and layout.
struct PagedAttnSeq {
  const float* q = nullptr;  // [n_q, n_heads*head_dim], row stride ldq (RoPE applied)
  int64_t ldq = 0;
  int64_t n_q = 0;        // queries at positions start_pos .. start_pos+n_q-1 (0: nothing to do)
  int64_t start_pos = 0;  // keys of positions 0 .. start_pos+n_q-1 are in the cache
  const int32_t* block_table = nullptr;  // this sequence's logical -> physical block ids
  float* out = nullptr;                  // [n_q, n_heads*head_dim], row stride ldo
  int64_t ldo = 0;
};

// attention_paged_causal for n_seqs sequences sharing one layer's cache view, n_heads and
// scale, in one call: each sequence's out is exactly (bit for bit) what attention_paged_causal
// gives for it alone, whatever the other sequences are, under every ISA. The point is one
// thread fork/join per layer instead of one per sequence (decode batches are many short
// sequences, each with only n_kv_heads work items). Argument checks are those of
// attention_paged_causal for every sequence; errors name the sequence index.
// Contract: no sequence's out may overlap any sequence's q, out or the cache (sequences run
// concurrently, in no particular order); the cache is only read.
void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                  const KvCacheView& cache, float scale);

// Dense bidirectional MHA (no mask). q,k,v: [T, n_heads*head_dim] with strides; out likewise.
void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                     int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out, int64_t ldo);

namespace ref {
void kv_cache_write(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos, int64_t n_tokens,
                    const float* k, int64_t ldk, const float* v, int64_t ldv);
void attention_paged_causal(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                            const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                            int64_t ldo);
void attention_paged_causal_batch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                  const KvCacheView& cache, float scale);
void attention_dense(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                     int64_t T, int64_t n_heads, int64_t head_dim, float scale, float* out, int64_t ldo);
}  // namespace ref

}  // namespace recap::kernels
