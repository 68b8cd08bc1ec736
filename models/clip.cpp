#include "models/clip.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "models/weight_names.h"

namespace recap::models {

VisionTower::VisionTower(const VisionConfig& cfg, WeightSource& weights, const WeightNames& names,
                         kernels::WeightFormat format)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, p = cfg.patch_size, C = cfg.channels;
  const int64_t T = cfg.num_patches() + 1;
  if (D <= 0 || I <= 0 || p <= 0 || cfg.image_size % p != 0 || cfg.heads <= 0 || D % cfg.heads != 0)
    throw std::runtime_error("vision config: inconsistent dims (hidden " + std::to_string(D) + ", heads " +
                             std::to_string(cfg.heads) + ", image " + std::to_string(cfg.image_size) +
                             ", patch " + std::to_string(p) + ")");
  const int64_t n_run = cfg.layers_to_run();
  if (n_run < 0 || n_run > cfg.layers)
    throw std::runtime_error("vision config: select_layer " + std::to_string(cfg.select_layer) +
                             " is outside the tower's " + std::to_string(cfg.layers) + " layers");
  if (cfg.hidden_act != "quick_gelu")
    throw std::runtime_error("vision config: hidden_act '" + cfg.hidden_act +
                             "' is not supported (quick_gelu)");

  using VT = VisionTensor;
  using VL = VisionLayerTensor;
  patch_ =
      weights.matrix(tensor_name(names, VT::PatchEmbedding), D, C * p * p, format, /*flatten_trailing=*/true);
  class_emb_ = weights.vector(tensor_name(names, VT::ClassEmbedding), {D});
  pos_emb_ = weights.vector(tensor_name(names, VT::PositionEmbedding), {T, D});
  pre_ln_w_ = weights.vector(tensor_name(names, VT::PreNormWeight), {D});
  pre_ln_b_ = weights.vector(tensor_name(names, VT::PreNormBias), {D});

  layers_.resize(static_cast<size_t>(n_run));
  for (int64_t l = 0; l < n_run; ++l) {
    Layer& y = layers_[static_cast<size_t>(l)];
    auto name = [&](VL t) { return tensor_name(names, t, l); };
    y.ln1_w = weights.vector(name(VL::Norm1Weight), {D});
    y.ln1_b = weights.vector(name(VL::Norm1Bias), {D});
    y.ln2_w = weights.vector(name(VL::Norm2Weight), {D});
    y.ln2_b = weights.vector(name(VL::Norm2Bias), {D});
    y.qkv = weights.matrix({name(VL::QWeight), name(VL::KWeight), name(VL::VWeight)}, {D, D, D}, D, format);
    y.qkv_b = weights.vectors_concat({name(VL::QBias), name(VL::KBias), name(VL::VBias)}, {D, D, D});
    y.out = weights.matrix(name(VL::OutWeight), D, D, format);
    y.out_b = weights.vector(name(VL::OutBias), {D});
    y.fc1 = weights.matrix(name(VL::Fc1Weight), I, D, format);
    y.fc1_b = weights.vector(name(VL::Fc1Bias), {I});
    y.fc2 = weights.matrix(name(VL::Fc2Weight), D, I, format);
    y.fc2_b = weights.vector(name(VL::Fc2Bias), {D});
  }
}

size_t VisionTower::weight_bytes() const {
  size_t b =
      patch_.data.size() + (class_emb_.size() + pos_emb_.size() + pre_ln_w_.size() + pre_ln_b_.size()) * 4;
  for (const Layer& y : layers_) {
    b += y.qkv.data.size() + y.out.data.size() + y.fc1.data.size() + y.fc2.data.size();
    b += (y.ln1_w.size() * 4 + y.qkv_b.size() + y.out_b.size() + y.fc1_b.size() + y.fc2_b.size()) * 4;
  }
  return b;
}

// x: [B*(1+P), Dv] <- class/patch embeddings + position embeddings (before pre_layrnorm).
void VisionTower::embed(const float* pixels, int64_t batch, float* x) const {
  const int64_t D = cfg_.hidden, p = cfg_.patch_size, C = cfg_.channels, S = cfg_.image_size;
  const int64_t grid = S / p, P = grid * grid, T = P + 1, K = C * p * p;

  // im2col: one row per patch (row-major over the grid), values ordered (c, ky, kx) like the
  // conv kernel [Dv, C, p, p] flattened.
  float* patches = s_patches_.get(batch * P * K);
  for (int64_t b = 0; b < batch; ++b) {
    const float* img = pixels + b * C * S * S;
    for (int64_t gy = 0; gy < grid; ++gy)
      for (int64_t gx = 0; gx < grid; ++gx) {
        float* row = patches + ((b * P) + gy * grid + gx) * K;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < p; ++ky)
            std::memcpy(row + (c * p + ky) * p, img + (c * S + gy * p + ky) * S + gx * p, sizeof(float) * p);
      }
  }
  float* patch_out = s_patch_out_.get(batch * P * D);
  kernels::gemm(patches, batch * P, K, patch_, nullptr, patch_out, D);

  for (int64_t b = 0; b < batch; ++b) {
    float* xb = x + b * T * D;
    for (int64_t d = 0; d < D; ++d) xb[d] = class_emb_[d] + pos_emb_[d];
    for (int64_t i = 0; i < P; ++i) {
      const float* src = patch_out + (b * P + i) * D;
      const float* pos = pos_emb_.data() + (i + 1) * D;
      float* dst = xb + (i + 1) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = src[d] + pos[d];
    }
  }
}

void VisionTower::forward(const float* pixels, int64_t batch, float* patch_features,
                          VisionTrace* trace) const {
  if (batch <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t D = cfg_.hidden, I = cfg_.intermediate, H = cfg_.heads, hd = D / H;
  const int64_t P = cfg_.num_patches(), T = P + 1, N = batch * T;
  const int64_t n_run = static_cast<int64_t>(layers_.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float eps = cfg_.ln_eps;

  float* h = s_h_.get(N * D);
  float* ln = s_ln_.get(N * D);
  float* qkv = s_qkv_.get(N * 3 * D);
  float* attn = s_attn_.get(N * D);
  float* tmp = s_tmp_.get(N * D);
  float* mlp = s_mlp_.get(N * I);

  const bool tracing = trace && trace->enabled;
  if (tracing) trace->hidden_states.assign(static_cast<size_t>((n_run + 1) * N * D), 0.f);

  embed(pixels, batch, tmp);
  kernels::layernorm(tmp, D, pre_ln_w_.data(), pre_ln_b_.data(), h, D, N, D, eps);
  if (tracing) std::memcpy(trace->hidden_states.data(), h, sizeof(float) * N * D);

  for (int64_t l = 0; l < n_run; ++l) {
    const Layer& y = layers_[static_cast<size_t>(l)];
    // Attention block.
    kernels::layernorm(h, D, y.ln1_w.data(), y.ln1_b.data(), ln, D, N, D, eps);
    kernels::gemm(ln, N, D, y.qkv, y.qkv_b.data(), qkv, 3 * D);
    for (int64_t b = 0; b < batch; ++b) {
      const float* q = qkv + b * T * 3 * D;
      kernels::attention_dense(q, 3 * D, q + D, 3 * D, q + 2 * D, 3 * D, T, H, hd, scale, attn + b * T * D,
                               D);
    }
    kernels::gemm(attn, N, D, y.out, y.out_b.data(), tmp, D);
    kernels::add_inplace(h, tmp, N * D);
    // MLP block.
    kernels::layernorm(h, D, y.ln2_w.data(), y.ln2_b.data(), ln, D, N, D, eps);
    kernels::gemm(ln, N, D, y.fc1, y.fc1_b.data(), mlp, I);
    kernels::quick_gelu(mlp, N * I);
    kernels::gemm(mlp, N, I, y.fc2, y.fc2_b.data(), tmp, D);
    kernels::add_inplace(h, tmp, N * D);
    if (tracing) std::memcpy(trace->hidden_states.data() + (l + 1) * N * D, h, sizeof(float) * N * D);
  }

  // h now holds hidden_states[layers_to_run()] == hidden_states[select_layer].
  if (tracing) trace->selected.assign(h, h + N * D);
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(patch_features + b * P * D, h + (b * T + 1) * D, sizeof(float) * P * D);
}

}  // namespace recap::models
