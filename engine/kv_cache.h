// The paged KV cache: the one KV cache of the engine, used by caption and the C API
// (continuous batching), trace, eval-quant, plan, bench and the golden tests.
//
// Ownership: the model (models/) only reads and writes the cache through per-layer
// kernels::KvCacheView's and each sequence's block table; the memory, block allocation,
// sharing and the element sizes live here, in engine/.
//
// Memory: per layer one K and one V arena of n_blocks blocks; a block holds block_size
// positions laid out as kernels::KvCacheView documents ([n_kv_heads][block_size][head_dim]).
// A sequence owns a block table (logical block j -> physical block id). Blocks are
// reference counted so several captions of one image share the blocks of their common
// prompt (fork_table); the block holding the prompt's last, partial positions is copied,
// since each caption then writes its own tokens into it.
//
// Sizing: from a byte budget (--kv-cache-mb). Admission control asks blocks_needed() first,
// so a sequence is only started when every block it can ever need is available: a running
// sequence never waits for memory and nothing is preempted.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/aligned_buffer.h"
#include "kernels/attention.h"
#include "models/config.h"

namespace recap::engine {

// Positions per KV cache block, for every cache the engine sizes or allocates (caption, the
// C API, plan's memory figures, bench, trace, eval-quant). 16 keeps the partial last block of a
// sequence (the waste of paging) under 16 positions while a block of one layer's K at
// LLaMA-3-8B (8 heads x 128 dims x 16 positions x 2 bytes) is still 32 KiB of contiguous reads.
inline constexpr int64_t kKvBlockPositions = 16;

// Bytes of one cache element: 4 for f32, 2 for bf16 and f16.
size_t kv_dtype_size(kernels::KvDType dtype);
const char* kv_dtype_name(kernels::KvDType dtype);  // "f32" | "bf16" | "f16"
// Throws std::invalid_argument naming the value and the accepted ones.
kernels::KvDType parse_kv_dtype(const std::string& name);

struct KvCacheShape {
  int64_t layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = kKvBlockPositions;
  kernels::KvDType dtype = kernels::KvDType::F32;
  // The cache of `text`'s decoder (layers, kv_heads, head_dim) in `dtype`.
  static KvCacheShape for_text(const models::TextConfig& text, kernels::KvDType dtype,
                               int64_t block_size = kKvBlockPositions);
  // Bytes one block occupies over all layers, K and V.
  size_t bytes_per_block() const;
};

struct KvCacheFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class KvCachePool {
 public:
  KvCachePool(const KvCacheShape& shape, int64_t n_blocks);
  // As many blocks as fit in `budget_bytes` (at least one).
  static int64_t blocks_for_budget(const KvCacheShape& shape, size_t budget_bytes);

  const KvCacheShape& shape() const { return shape_; }
  const std::vector<kernels::KvCacheView>& views() const { return views_; }
  int64_t block_size() const { return shape_.block_size; }
  int64_t total_blocks() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_for_tokens(int64_t tokens) const {
    return (tokens + shape_.block_size - 1) / shape_.block_size;
  }

  // Blocks a request needs: `copies` sequences of up to max_tokens positions sharing the
  // first prefix_tokens positions (only whole blocks are shared).
  int64_t blocks_needed(int64_t prefix_tokens, int64_t max_tokens, int copies) const;

  // A fresh table for up to max_tokens positions. Throws KvCacheFull.
  std::vector<int32_t> allocate(int64_t max_tokens);
  // A table for another sequence continuing `src`'s first prefix_tokens positions: whole
  // blocks are shared (refcount), the partial block is copied, the rest is fresh, up to
  // max_tokens positions. Throws KvCacheFull.
  std::vector<int32_t> fork_table(const std::vector<int32_t>& src, int64_t prefix_tokens, int64_t max_tokens);
  // Drops this table's references; blocks whose count reaches zero become free.
  void release(std::vector<int32_t>& table);

  int refcount(int32_t block) const { return refcount_[static_cast<size_t>(block)]; }

 private:
  int32_t take_block();
  void copy_block(int32_t src, int32_t dst);

  KvCacheShape shape_;
  std::vector<kernels::AlignedBuffer> k_, v_;
  std::vector<kernels::KvCacheView> views_;
  std::vector<int> refcount_;
  std::vector<int32_t> free_;  // stack of free block ids
};

}  // namespace recap::engine
