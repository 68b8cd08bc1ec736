// Weight mapping: the checkpoint name and shape of every tensor the forward pass reads, for
// any supported layout, derived from a resolved ModelConfig (see models/config.h).
//
// Names are prefix + HF sub-name. The prefixes live in ModelConfig::names:
//   vision (CLIP ViT)  <vision_prefix>embeddings.class_embedding, ...encoder.layers.N.mlp.fc1.weight
//   projector          <proj1_prefix>{weight,bias}, <proj2_prefix>{weight,bias}
//   text (LLaMA)       <text_prefix>embed_tokens.weight, ...layers.N.self_attn.q_proj.weight,
//                      <text_prefix>norm.weight, and names.lm_head (== the embedding when tied)
// Vision tensors live in the vision store, the rest in the text store (they may be the same).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/config.h"

namespace recap::models {

enum class Component { Vision, Projector, Text };
const char* component_name(Component c);  // "vision", "projector", "text"

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  Component component = Component::Text;
  // A GEMM weight (or the token embedding table): stored in the chosen precision
  // (f32/bf16/int8/int4) as a [shape[0], numel/shape[0]] matrix. Everything else (norms,
  // biases, class/position embeddings) stays f32.
  bool matrix = false;
  // False for vision encoder layers past layers_to_run(): present and validated, but the
  // forward pass never reads them (hidden_states[-2] needs one layer fewer than the tower has).
  bool used = true;
  int64_t numel() const;
};

// Per-tensor name helpers (sub names are HF's, e.g. "mlp.fc1.weight").
std::string vision_tensor_name(const ModelConfig& cfg, const std::string& sub);
std::string vision_layer_tensor_name(const ModelConfig& cfg, int64_t layer, const std::string& sub);
std::string text_tensor_name(const ModelConfig& cfg, const std::string& sub);
std::string text_layer_tensor_name(const ModelConfig& cfg, int64_t layer, const std::string& sub);

// Every tensor the model needs, in a stable order (vision, projector, text), with the shape
// the config implies. A tied lm_head is not listed twice.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg);

}  // namespace recap::models
