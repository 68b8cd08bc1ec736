// A minimal paged KV cache for single-process tools and tests (trace, golden tests): one
// contiguous K and V pool per layer, blocks handed out in order, never freed individually.
// The engine's pool (engine/) adds allocation, freeing and memory budgets; this one only
// provides correctly laid-out kernels::KvCacheView's for the model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/aligned_buffer.h"
#include "kernels/attention.h"
#include "models/config.h"

namespace recap::models {

size_t kv_dtype_size(kernels::KvDType dtype);
const char* kv_dtype_name(kernels::KvDType dtype);
kernels::KvDType parse_kv_dtype(const std::string& name);  // "f32" | "bf16" | "f16"

class SimpleKvPool {
 public:
  // n_blocks blocks of block_size positions for every layer of `text`.
  SimpleKvPool(const TextConfig& text, kernels::KvDType dtype, int64_t block_size, int64_t n_blocks);

  // One view per layer, as LlavaModel::forward takes them.
  const std::vector<kernels::KvCacheView>& views() const { return views_; }

  // A block table for a sequence of up to max_tokens positions, taking the next free blocks;
  // throws std::runtime_error when the pool is exhausted.
  std::vector<int32_t> allocate(int64_t max_tokens);
  // Gives every block back (all earlier block tables become invalid).
  void reset() { next_block_ = 0; }

  int64_t block_size() const { return block_size_; }
  int64_t blocks_free() const { return n_blocks_ - next_block_; }

 private:
  int64_t block_size_, n_blocks_, next_block_ = 0;
  std::vector<kernels::AlignedBuffer> k_, v_;
  std::vector<kernels::KvCacheView> views_;
};

}  // namespace recap::models
