// CLIP ViT vision tower (CLIPVisionModel up to mm_vision_select_layer), on the kernels.
//
// Forward (SPEC section 2(c)), for B images at once stacked as B*(1+P) rows:
//   patches = im2col(pixels)                    [B*P, 3*p*p]  channel-major per patch (c, ky, kx)
//   x[b,1+i] = patches[b,i] * W_patch^T         W_patch [Dv, 3*p*p] (the conv kernel, no bias)
//   x[b,0]   = class_embedding
//   x += position_embedding                     [1+P, Dv]
//   h0 = pre_layrnorm(x)                        hidden_states[0]
//   for each of layers_to_run() layers:         (select_layer -2: the last layer never runs)
//     h += out_proj(MHA(LN1(h)))                fused q|k|v GEMM with bias, softmax scale hd^-0.5
//     h += fc2(quick_gelu(fc1(LN2(h))))
//   selected = hidden_states[select_layer]; patch features = selected without the CLS row.
// Attention is per image (dense, bidirectional), every other op runs on all B*(1+P) rows, so
// results do not depend on how images are batched. LayerNorms, softmax and activations are f32;
// only the big matrices are in the chosen weight format.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/scratch.h"
#include "models/weight_source.h"

namespace recap::models {

class VisionTower {
 public:
  // Reads the tower's embeddings, pre-norm and first layers_to_run() encoder layers from
  // `weights`, named by the tensor-name table (models/weight_names.h) under `names`, packing
  // matrices into `format`.
  VisionTower(const VisionConfig& cfg, WeightSource& weights, const WeightNames& names,
              kernels::WeightFormat format);

  const VisionConfig& config() const { return cfg_; }

  // pixel_values [B, 3, S, S] (CLIP-normalised) -> patch_features [B, P, Dv].
  // Thread-safe: concurrent calls are serialised (scratch buffers are shared).
  void forward(const float* pixel_values, int64_t batch, float* patch_features, VisionTrace* trace) const;

  size_t weight_bytes() const;

 private:
  struct Layer {
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
    kernels::PackedWeight qkv;  // [3Dv, Dv]: rows q | k | v
    std::vector<float> qkv_b;   // [3Dv]
    kernels::PackedWeight out;  // [Dv, Dv]
    std::vector<float> out_b;
    kernels::PackedWeight fc1;  // [I, Dv]
    std::vector<float> fc1_b;
    kernels::PackedWeight fc2;  // [Dv, I]
    std::vector<float> fc2_b;
  };

  void embed(const float* pixel_values, int64_t batch, float* x) const;

  VisionConfig cfg_;
  kernels::PackedWeight patch_;  // [Dv, 3*p*p]
  std::vector<float> class_emb_, pos_emb_, pre_ln_w_, pre_ln_b_;
  std::vector<Layer> layers_;

  mutable std::mutex mu_;
  mutable FloatScratch s_patches_, s_patch_out_, s_h_, s_ln_, s_qkv_, s_attn_, s_tmp_, s_mlp_;
};

}  // namespace recap::models
