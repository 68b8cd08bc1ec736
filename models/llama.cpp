#include "models/llama.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/ops.h"
#include "models/weight_names.h"

namespace recap::models {

LlamaModel::LlamaModel(const TextConfig& cfg, WeightSource& weights, const WeightNames& names,
                       kernels::WeightFormat format)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden, F = cfg.intermediate, H = cfg.heads, KVH = cfg.kv_heads, hd = cfg.head_dim;
  const int64_t V = cfg.vocab;
  if (D <= 0 || F <= 0 || H <= 0 || KVH <= 0 || hd <= 0 || V <= 0 || H % KVH != 0 || hd % 2 != 0 ||
      cfg.max_position <= 0)
    throw std::runtime_error("text config: inconsistent dims (hidden " + std::to_string(D) + ", heads " +
                             std::to_string(H) + ", kv_heads " + std::to_string(KVH) + ", head_dim " +
                             std::to_string(hd) + ", vocab " + std::to_string(V) + ")");

  using TL = TextLayerTensor;
  embed_ = weights.matrix(tensor_name(names, TextTensor::Embedding), V, D, format);
  lm_head_ = weights.matrix(tensor_name(names, TextTensor::LmHead), V, D, format);
  final_norm_ = weights.vector(tensor_name(names, TextTensor::FinalNorm), {D});
  layers_.resize(static_cast<size_t>(cfg.layers));
  for (int64_t l = 0; l < cfg.layers; ++l) {
    auto name = [&](TL t) { return tensor_name(names, t, l); };
    Layer& y = layers_[static_cast<size_t>(l)];
    y.in_norm = weights.vector(name(TL::InputNorm), {D});
    y.post_norm = weights.vector(name(TL::PostAttentionNorm), {D});
    y.qkv = weights.matrix({name(TL::QWeight), name(TL::KWeight), name(TL::VWeight)},
                           {H * hd, KVH * hd, KVH * hd}, D, format);
    y.o = weights.matrix(name(TL::OWeight), D, H * hd, format);
    y.gate_up = weights.matrix({name(TL::Gate), name(TL::Up)}, {F, F}, D, format);
    y.down = weights.matrix(name(TL::Down), D, F, format);
  }
  rope_cos_.resize(static_cast<size_t>(cfg.max_position * hd / 2));
  rope_sin_.resize(rope_cos_.size());
  kernels::build_rope_table(cfg.max_position, hd, cfg.rope_theta, rope_cos_.data(), rope_sin_.data());
}

size_t LlamaModel::weight_bytes() const {
  size_t b = embed_.data.size() + lm_head_.data.size() + final_norm_.size() * sizeof(float);
  for (const Layer& y : layers_)
    b += y.qkv.data.size() + y.o.data.size() + y.gate_up.data.size() + y.down.data.size() +
         (y.in_norm.size() + y.post_norm.size()) * sizeof(float);
  return b;
}

void LlamaModel::embed(const int32_t* ids, int64_t n, float* out) const {
  kernels::embedding_gather(embed_, ids, n, out, cfg_.hidden);
}

void LlamaModel::check_inputs(const std::vector<SeqChunk>& chunks,
                              const std::vector<kernels::KvCacheView>& kv) const {
  if (static_cast<int64_t>(kv.size()) != cfg_.layers)
    throw std::invalid_argument("llama forward: " + std::to_string(kv.size()) + " KV cache views for " +
                                std::to_string(cfg_.layers) + " layers");
  for (const kernels::KvCacheView& v : kv)
    if (v.n_kv_heads != cfg_.kv_heads || v.head_dim != cfg_.head_dim || v.block_size <= 0 || !v.k_base ||
        !v.v_base)
      throw std::invalid_argument("llama forward: KV cache view does not match the model (kv_heads " +
                                  std::to_string(v.n_kv_heads) + ", head_dim " + std::to_string(v.head_dim) +
                                  ")");
  for (const SeqChunk& c : chunks) {
    if (c.n_tokens <= 0) throw std::invalid_argument("llama forward: chunk with no tokens");
    if (!c.embeds && !c.ids) throw std::invalid_argument("llama forward: chunk has neither embeds nor ids");
    if (!c.block_table) throw std::invalid_argument("llama forward: chunk has no block table");
    if (c.start_pos < 0 || c.start_pos + c.n_tokens > cfg_.max_position)
      throw std::invalid_argument("llama forward: positions " + std::to_string(c.start_pos) + ".." +
                                  std::to_string(c.start_pos + c.n_tokens - 1) + " exceed max_position " +
                                  std::to_string(cfg_.max_position));
  }
}

int64_t LlamaModel::forward(const std::vector<SeqChunk>& chunks, const std::vector<kernels::KvCacheView>& kv,
                            float* logits, LlmTrace* trace) const {
  if (chunks.empty()) return 0;
  check_inputs(chunks, kv);
  std::lock_guard<std::mutex> lock(mu_);

  const int64_t D = cfg_.hidden, F = cfg_.intermediate, H = cfg_.heads, KVH = cfg_.kv_heads,
                hd = cfg_.head_dim;
  const int64_t V = cfg_.vocab, QKV = (H + 2 * KVH) * hd;
  const float eps = cfg_.rms_eps;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  int64_t T = 0;
  for (const SeqChunk& c : chunks) T += c.n_tokens;

  float* x = s_x_.get(T * D);
  float* xn = s_xn_.get(T * D);
  float* qkv = s_qkv_.get(T * QKV);
  float* attn = s_attn_.get(T * H * hd);
  float* tmp = s_tmp_.get(T * D);
  float* gu = s_gu_.get(T * 2 * F);
  float* act = s_act_.get(T * F);
  pos_.resize(static_cast<size_t>(T));
  logit_rows_.clear();

  // Inputs and positions of every token, chunk after chunk.
  {
    int64_t row = 0;
    for (const SeqChunk& c : chunks) {
      if (c.embeds)
        std::memcpy(x + row * D, c.embeds, sizeof(float) * c.n_tokens * D);
      else
        kernels::embedding_gather(embed_, c.ids, c.n_tokens, x + row * D, D);
      for (int64_t i = 0; i < c.n_tokens; ++i)
        pos_[static_cast<size_t>(row + i)] = static_cast<int32_t>(c.start_pos + i);
      if (c.all_logits)
        for (int64_t i = 0; i < c.n_tokens; ++i) logit_rows_.push_back(row + i);
      else
        logit_rows_.push_back(row + c.n_tokens - 1);
      row += c.n_tokens;
    }
  }

  // Every chunk's attention arguments; the buffers are the same for every layer.
  std::vector<kernels::PagedAttnSeq> attn_seqs(chunks.size());
  {
    int64_t row = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const SeqChunk& c = chunks[i];
      attn_seqs[i] = kernels::PagedAttnSeq{.q = qkv + row * QKV,
                                           .ldq = QKV,
                                           .n_q = c.n_tokens,
                                           .start_pos = c.start_pos,
                                           .block_table = c.block_table,
                                           .out = attn + row * H * hd,
                                           .ldo = H * hd};
      row += c.n_tokens;
    }
  }

  const bool tracing = trace && trace->enabled;
  const int64_t n0 = chunks.front().n_tokens;
  if (tracing) trace->hidden_states.assign(static_cast<size_t>((cfg_.layers + 1) * n0 * D), 0.f);

  for (int64_t l = 0; l < cfg_.layers; ++l) {
    const Layer& y = layers_[static_cast<size_t>(l)];
    const kernels::KvCacheView& cache = kv[static_cast<size_t>(l)];
    if (tracing) std::memcpy(trace->hidden_states.data() + l * n0 * D, x, sizeof(float) * n0 * D);

    // Attention block.
    kernels::rmsnorm(x, D, y.in_norm.data(), xn, D, T, D, eps);
    kernels::gemm(xn, T, D, y.qkv, nullptr, qkv, QKV);
    kernels::rope_apply(qkv, QKV, T, H, hd, pos_.data(), rope_cos_.data(), rope_sin_.data());
    kernels::rope_apply(qkv + H * hd, QKV, T, KVH, hd, pos_.data(), rope_cos_.data(), rope_sin_.data());
    // Every chunk's K/V first, then ONE attention call for all chunks (one thread fork/join
    // per layer, not one per sequence). Writing all chunks before any attends changes no
    // number: a chunk writes only its own positions start_pos .. start_pos+n_tokens-1, which
    // lie in blocks its sequence owns alone (a shared prefix is shared as whole blocks of
    // earlier positions and the partial block is copied, engine/kv_cache.h), and a step holds
    // at most one chunk per sequence; so no chunk reads what another chunk writes, and each
    // reads exactly the keys it read when the writes were interleaved.
    int64_t row = 0;
    for (const SeqChunk& c : chunks) {
      const float* q = qkv + row * QKV;
      kernels::kv_cache_write(cache, c.block_table, c.start_pos, c.n_tokens, q + H * hd, QKV,
                              q + (H + KVH) * hd, QKV);
      row += c.n_tokens;
    }
    kernels::attention_paged_causal_batch(attn_seqs.data(), static_cast<int64_t>(attn_seqs.size()), H, cache,
                                          scale);
    kernels::gemm(attn, T, H * hd, y.o, nullptr, tmp, D);
    kernels::add_inplace(x, tmp, T * D);

    // SwiGLU MLP block.
    kernels::rmsnorm(x, D, y.post_norm.data(), xn, D, T, D, eps);
    kernels::gemm(xn, T, D, y.gate_up, nullptr, gu, 2 * F);
    kernels::silu_mul(gu, 2 * F, gu + F, 2 * F, act, F, T, F);
    kernels::gemm(act, T, F, y.down, nullptr, tmp, D);
    kernels::add_inplace(x, tmp, T * D);
  }

  if (tracing)
    kernels::rmsnorm(x, D, final_norm_.data(), trace->hidden_states.data() + cfg_.layers * n0 * D, D, n0, D,
                     eps);

  // Final norm + lm_head on the rows that need logits only.
  const int64_t R = static_cast<int64_t>(logit_rows_.size());
  float* rows = s_rows_.get(R * D);
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(rows + r * D, x + logit_rows_[static_cast<size_t>(r)] * D, sizeof(float) * D);
  kernels::rmsnorm(rows, D, final_norm_.data(), rows, D, R, D, eps);
  if (logits) kernels::gemm(rows, R, D, lm_head_, nullptr, logits, V);
  return R;
}

}  // namespace recap::models
