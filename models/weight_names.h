// The tensor-name table: the one place that names every tensor the forward pass reads, for
// every supported layout. Validation (expected_tensors -> checkpoint_problems, inspect, the
// memory plan) and loading (clip.cpp, projector.cpp, llama.cpp) both take names from here, so
// a tensor the loader reads is always one that validation checked.
//
// A name is a part's prefix + a HF sub-name:
//   vision (CLIP ViT)  <vision_prefix>embeddings.class_embedding, ...encoder.layers.N.mlp.fc1.weight
//   projector          <proj1_prefix>{weight,bias}, <proj2_prefix>{weight,bias}
//   text (LLaMA)       <text_prefix>embed_tokens.weight, ...layers.N.self_attn.q_proj.weight,
//                      <text_prefix>norm.weight, and names.lm_head (== the embedding when tied)
// The sub-names are the same in every layout (the roles below); the prefixes differ per layout
// and per transformers version that wrote the checkpoint (layout_naming). Vision tensors live
// in the vision store, the rest in the text store (they may be the same).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/config.h"

namespace recap::models {

// ---- Prefixes, per layout ------------------------------------------------------------------

// Where a layout's checkpoints put each part, as prefixes (a full name for lm_head), newest
// naming first. Each list is probed in order: the first whose probe tensor the checkpoint holds
// wins, else the last one (the oldest naming) is used and validation reports what is missing.
//   vision: probe <p>embeddings.class_embedding or <p>embeddings.patch_embedding.weight
//   text: probe <p>embed_tokens.weight     lm_head: probe the name itself
//   projector_1 / projector_2: probe <projector_1>weight (the two always come together)
struct LayoutNaming {
  Layout layout;
  std::vector<std::string> vision;
  std::vector<std::string> text;  // empty lists: the layout has no language model
  std::vector<std::string> lm_head;
  std::vector<std::string> projector_1, projector_2;
};
const LayoutNaming& layout_naming(Layout layout);
// Every vision prefix of every layout, in the order a store of unknown layout is searched (a
// separate tower directory, --vision-weights).
const std::vector<std::string>& known_vision_prefixes();
// The text, lm_head and projector names a checkpoint of `layout` uses; `has` says whether the
// checkpoint holds a tensor. vision_prefix is left empty (the tower may be another store: see
// load_model_config). A tied lm_head is set by the caller once the config says so.
WeightNames resolve_text_names(Layout layout, const std::function<bool(const std::string&)>& has);

// ---- Roles: every tensor the forward pass reads ------------------------------------------

enum class VisionTensor { ClassEmbedding, PatchEmbedding, PositionEmbedding, PreNormWeight, PreNormBias };
enum class VisionLayerTensor {
  Norm1Weight,
  Norm1Bias,
  Norm2Weight,
  Norm2Bias,
  QWeight,
  QBias,
  KWeight,
  KBias,
  VWeight,
  VBias,
  OutWeight,
  OutBias,
  Fc1Weight,
  Fc1Bias,
  Fc2Weight,
  Fc2Bias,
};
enum class ProjectorTensor { Linear1Weight, Linear1Bias, Linear2Weight, Linear2Bias };
enum class TextTensor { Embedding, FinalNorm, LmHead };
enum class TextLayerTensor {
  InputNorm,
  PostAttentionNorm,
  QWeight,
  KWeight,
  VWeight,
  OWeight,
  Gate,
  Up,
  Down
};

// The checkpoint name of a role under `names` (a ModelConfig's resolved prefixes).
std::string tensor_name(const WeightNames& names, VisionTensor t);
std::string tensor_name(const WeightNames& names, VisionLayerTensor t, int64_t layer);
std::string tensor_name(const WeightNames& names, ProjectorTensor t);
std::string tensor_name(const WeightNames& names, TextTensor t);
std::string tensor_name(const WeightNames& names, TextLayerTensor t, int64_t layer);

// ---- Validation -----------------------------------------------------------------------------

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

// Every tensor the model needs, in a stable order (vision, projector, text), with the shape
// the config implies. A tied lm_head is not listed twice.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg);

}  // namespace recap::models
