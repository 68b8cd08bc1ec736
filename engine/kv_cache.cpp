#include "engine/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace recap::engine {

size_t kv_dtype_size(kernels::KvDType dtype) {
  return dtype == kernels::KvDType::F32 ? 4 : 2;
}

const char* kv_dtype_name(kernels::KvDType dtype) {
  switch (dtype) {
    case kernels::KvDType::F32:
      return "f32";
    case kernels::KvDType::BF16:
      return "bf16";
    case kernels::KvDType::F16:
      return "f16";
  }
  return "?";
}

kernels::KvDType parse_kv_dtype(const std::string& name) {
  if (name == "f32") return kernels::KvDType::F32;
  if (name == "bf16") return kernels::KvDType::BF16;
  if (name == "f16") return kernels::KvDType::F16;
  throw std::invalid_argument("unknown KV cache dtype '" + name + "' (expected f32, bf16 or f16)");
}

KvCacheShape KvCacheShape::for_text(const models::TextConfig& text, kernels::KvDType dtype,
                                    int64_t block_size) {
  KvCacheShape s;
  s.layers = text.layers;
  s.kv_heads = text.kv_heads;
  s.head_dim = text.head_dim;
  s.block_size = block_size;
  s.dtype = dtype;
  return s;
}

size_t KvCacheShape::bytes_per_block() const {
  return static_cast<size_t>(layers) * 2 * static_cast<size_t>(kv_heads * block_size * head_dim) *
         kv_dtype_size(dtype);
}

int64_t KvCachePool::blocks_for_budget(const KvCacheShape& shape, size_t budget_bytes) {
  size_t per = shape.bytes_per_block();
  if (per == 0) return 1;
  return std::max<int64_t>(1, static_cast<int64_t>(budget_bytes / per));
}

KvCachePool::KvCachePool(const KvCacheShape& shape, int64_t n_blocks) : shape_(shape) {
  if (n_blocks <= 0 || n_blocks > (int64_t(1) << 31) - 1)
    throw std::invalid_argument("KV cache: invalid block count " + std::to_string(n_blocks));
  if (shape.layers <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 || shape.block_size <= 0)
    throw std::invalid_argument("KV cache: invalid shape");
  const int64_t block_elems = shape.kv_heads * shape.block_size * shape.head_dim;
  const size_t bytes = static_cast<size_t>(block_elems * n_blocks) * kv_dtype_size(shape.dtype);
  for (int64_t l = 0; l < shape.layers; ++l) {
    k_.emplace_back(bytes);
    v_.emplace_back(bytes);
    kernels::KvCacheView view;
    view.dtype = shape.dtype;
    view.n_kv_heads = shape.kv_heads;
    view.head_dim = shape.head_dim;
    view.block_size = shape.block_size;
    view.k_base = k_.back().data();
    view.v_base = v_.back().data();
    view.block_stride = block_elems;
    views_.push_back(view);
  }
  refcount_.assign(static_cast<size_t>(n_blocks), 0);
  free_.reserve(static_cast<size_t>(n_blocks));
  // Stack order: block 0 is handed out first.
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvCachePool::blocks_needed(int64_t prefix_tokens, int64_t max_tokens, int copies) const {
  const int64_t full = blocks_for_tokens(max_tokens);
  const int64_t shared = std::min(prefix_tokens / shape_.block_size, full);
  return full + static_cast<int64_t>(copies > 1 ? copies - 1 : 0) * (full - shared);
}

int32_t KvCachePool::take_block() {
  if (free_.empty()) throw KvCacheFull("KV cache full");
  int32_t b = free_.back();
  free_.pop_back();
  refcount_[static_cast<size_t>(b)] = 1;
  return b;
}

std::vector<int32_t> KvCachePool::allocate(int64_t max_tokens) {
  const int64_t need = blocks_for_tokens(max_tokens);
  if (need > free_blocks())
    throw KvCacheFull("KV cache full: " + std::to_string(need) + " blocks needed, " +
                      std::to_string(free_blocks()) + " free");
  std::vector<int32_t> t;
  t.reserve(static_cast<size_t>(need));
  for (int64_t i = 0; i < need; ++i) t.push_back(take_block());
  return t;
}

void KvCachePool::copy_block(int32_t src, int32_t dst) {
  const size_t bytes = static_cast<size_t>(views_[0].block_stride) * kv_dtype_size(shape_.dtype);
  for (size_t l = 0; l < views_.size(); ++l) {
    auto* k = static_cast<uint8_t*>(views_[l].k_base);
    auto* v = static_cast<uint8_t*>(views_[l].v_base);
    std::memcpy(k + static_cast<size_t>(dst) * bytes, k + static_cast<size_t>(src) * bytes, bytes);
    std::memcpy(v + static_cast<size_t>(dst) * bytes, v + static_cast<size_t>(src) * bytes, bytes);
  }
}

std::vector<int32_t> KvCachePool::fork_table(const std::vector<int32_t>& src, int64_t prefix_tokens,
                                             int64_t max_tokens) {
  const int64_t full = blocks_for_tokens(max_tokens);
  const int64_t shared = std::min<int64_t>(prefix_tokens / shape_.block_size, full);
  const bool partial = prefix_tokens % shape_.block_size != 0 && shared < full;
  if (static_cast<int64_t>(src.size()) < shared + (partial ? 1 : 0))
    throw std::invalid_argument("fork_table: source table shorter than the prefix");
  if (full - shared > free_blocks())
    throw KvCacheFull("KV cache full: " + std::to_string(full - shared) + " blocks needed, " +
                      std::to_string(free_blocks()) + " free");
  std::vector<int32_t> t;
  t.reserve(static_cast<size_t>(full));
  for (int64_t j = 0; j < shared; ++j) {
    refcount_[static_cast<size_t>(src[static_cast<size_t>(j)])]++;
    t.push_back(src[static_cast<size_t>(j)]);
  }
  for (int64_t j = shared; j < full; ++j) {
    int32_t b = take_block();
    if (j == shared && partial) copy_block(src[static_cast<size_t>(j)], b);
    t.push_back(b);
  }
  return t;
}

void KvCachePool::release(std::vector<int32_t>& table) {
  for (int32_t b : table) {
    int& rc = refcount_[static_cast<size_t>(b)];
    if (rc <= 0) throw std::logic_error("KV cache: double release of block " + std::to_string(b));
    if (--rc == 0) free_.push_back(b);
  }
  table.clear();
}

}  // namespace recap::engine
