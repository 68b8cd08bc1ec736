#include "models/kv_pool.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace recap::models {

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

SimpleKvPool::SimpleKvPool(const TextConfig& text, kernels::KvDType dtype, int64_t block_size,
                           int64_t n_blocks)
    : block_size_(block_size), n_blocks_(n_blocks) {
  if (block_size <= 0 || n_blocks <= 0) throw std::invalid_argument("SimpleKvPool: empty pool");
  const int64_t block_elems = text.kv_heads * block_size * text.head_dim;
  const size_t bytes = static_cast<size_t>(block_elems * n_blocks) * kv_dtype_size(dtype);
  for (int64_t l = 0; l < text.layers; ++l) {
    k_.emplace_back(bytes);
    v_.emplace_back(bytes);
    // Zero-filled so that a kernel reading past what was written shows up as a wrong value,
    // not as uninitialised memory.
    std::memset(k_.back().data(), 0, bytes);
    std::memset(v_.back().data(), 0, bytes);
    kernels::KvCacheView view;
    view.dtype = dtype;
    view.n_kv_heads = text.kv_heads;
    view.head_dim = text.head_dim;
    view.block_size = block_size;
    view.k_base = k_.back().data();
    view.v_base = v_.back().data();
    view.block_stride = block_elems;
    views_.push_back(view);
  }
}

std::vector<int32_t> SimpleKvPool::allocate(int64_t max_tokens) {
  const int64_t need = (max_tokens + block_size_ - 1) / block_size_;
  if (need > blocks_free())
    throw std::runtime_error("KV pool exhausted: " + std::to_string(need) + " blocks needed, " +
                             std::to_string(blocks_free()) + " free");
  std::vector<int32_t> table;
  for (int64_t i = 0; i < need; ++i) table.push_back(static_cast<int32_t>(next_block_++));
  return table;
}

}  // namespace recap::models
