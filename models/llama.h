// LLaMA-3 decoder (HF LlamaForCausalLM numerics) over a paged KV cache, on the kernels.
//
// One forward() call runs any mix of prefill chunks and single-token decode chunks: the
// tokens of all chunks are stacked into one [T, D] activation matrix, so every projection is
// one GEMM over all T rows (the weights are read once per step, whatever the batch). Only
// RoPE positions, the KV-cache writes and the causal attention are per chunk.
//
// Layer l (SPEC section 5):
//   xn = RMSNorm_in(x)                                  f32
//   q|k|v = xn * Wqkv^T                                 fused [(H + 2*KVH)*hd, D]
//   RoPE (rotate_half, theta from config) on q and k at each token's position
//   K, V -> cache (the cache's dtype); o = causal GQA attention (scale 1/sqrt(hd))
//   x += o * Wo^T
//   xn = RMSNorm_post(x);  g|u = xn * Wgu^T             fused [2F, D]
//   x += (silu(g) * u) * Wdown^T
// logits = lm_head(RMSNorm_final(x)) only for the rows that need them.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/scratch.h"
#include "models/weight_source.h"

namespace recap::models {

class LlamaModel {
 public:
  // Reads the decoder's tensors named by the tensor-name table (models/weight_names.h) under
  // `names` (names.lm_head is the embedding's name when tied).
  LlamaModel(const TextConfig& cfg, WeightSource& weights, const WeightNames& names,
             kernels::WeightFormat format);

  const TextConfig& config() const { return cfg_; }

  // out [n, D] = embedding rows of ids (each in [0, vocab), else std::out_of_range).
  void embed(const int32_t* ids, int64_t n, float* out) const;

  // See LlavaModel::forward. Calls are serialised by a mutex (shared scratch buffers); the
  // scratch grows to the largest batch seen and is reused, so decode steps never allocate.
  int64_t forward(const std::vector<SeqChunk>& chunks, const std::vector<kernels::KvCacheView>& kv,
                  float* logits, LlmTrace* trace) const;

  size_t weight_bytes() const;

 private:
  struct Layer {
    std::vector<float> in_norm, post_norm;
    kernels::PackedWeight qkv;      // [(H + 2 KVH) * hd, D]: rows q | k | v
    kernels::PackedWeight o;        // [D, H * hd]
    kernels::PackedWeight gate_up;  // [2F, D]: rows gate | up
    kernels::PackedWeight down;     // [D, F]
  };

  void check_inputs(const std::vector<SeqChunk>& chunks, const std::vector<kernels::KvCacheView>& kv) const;

  TextConfig cfg_;
  kernels::PackedWeight embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_position, hd/2]

  mutable std::mutex mu_;
  mutable FloatScratch s_x_, s_xn_, s_qkv_, s_attn_, s_tmp_, s_gu_, s_act_, s_rows_;
  mutable std::vector<int32_t> pos_;
  mutable std::vector<int64_t> logit_rows_;
};

}  // namespace recap::models
