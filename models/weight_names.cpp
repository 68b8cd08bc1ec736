#include "models/weight_names.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>

namespace recap::models {

namespace {

// The prefixes of each layout (see LayoutNaming). LLaVA-orig: haotian-liu/LLaVA's
// LlavaLlamaForCausalLM (tower embedded by some conversions). llava-hf: transformers >= 4.52
// writes model.language_model.* / model.multi_modal_projector.* / model.vision_tower.* and a
// top-level lm_head, earlier versions language_model.model.* / multi_modal_projector.* /
// vision_tower.* and language_model.lm_head. CLIP: CLIPVisionModel and CLIPModel.
const LayoutNaming kLayoutNamings[] = {
    {Layout::LlavaOrig,
     {"model.vision_tower.vision_tower.vision_model."},
     {"model."},
     {"lm_head.weight"},
     {"model.mm_projector.0."},
     {"model.mm_projector.2."}},
    {Layout::LlavaHf,
     {"model.vision_tower.vision_model.", "vision_tower.vision_model."},
     {"model.language_model.", "language_model.model."},
     {"lm_head.weight", "language_model.lm_head.weight"},
     {"model.multi_modal_projector.linear_1.", "multi_modal_projector.linear_1."},
     {"model.multi_modal_projector.linear_2.", "multi_modal_projector.linear_2."}},
    {Layout::ClipVision, {"vision_model."}, {}, {}, {}, {}},
    {Layout::ClipFull, {"vision_model."}, {}, {}, {}, {}},
};

// HF sub-names of each role, indexed by the enums of weight_names.h (same order).
const char* const kVisionSub[] = {"embeddings.class_embedding", "embeddings.patch_embedding.weight",
                                  "embeddings.position_embedding.weight", "pre_layrnorm.weight",
                                  "pre_layrnorm.bias"};
const char* const kVisionLayerSub[] = {"layer_norm1.weight",
                                       "layer_norm1.bias",
                                       "layer_norm2.weight",
                                       "layer_norm2.bias",
                                       "self_attn.q_proj.weight",
                                       "self_attn.q_proj.bias",
                                       "self_attn.k_proj.weight",
                                       "self_attn.k_proj.bias",
                                       "self_attn.v_proj.weight",
                                       "self_attn.v_proj.bias",
                                       "self_attn.out_proj.weight",
                                       "self_attn.out_proj.bias",
                                       "mlp.fc1.weight",
                                       "mlp.fc1.bias",
                                       "mlp.fc2.weight",
                                       "mlp.fc2.bias"};
const char* const kTextLayerSub[] = {"input_layernorm.weight",  "post_attention_layernorm.weight",
                                     "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                     "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                     "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                     "mlp.down_proj.weight"};
static_assert(std::size(kVisionSub) == static_cast<size_t>(VisionTensor::PreNormBias) + 1);
static_assert(std::size(kVisionLayerSub) == static_cast<size_t>(VisionLayerTensor::Fc2Bias) + 1);
static_assert(std::size(kTextLayerSub) == static_cast<size_t>(TextLayerTensor::Down) + 1);

template <class E>
size_t idx(E e) {
  return static_cast<size_t>(e);
}

// The first candidate `probe` finds, else the last (the oldest naming).
std::string pick(const std::vector<std::string>& candidates,
                 const std::function<bool(const std::string&)>& has, const std::string& probe_suffix) {
  if (candidates.empty()) return {};
  for (const std::string& c : candidates)
    if (has(c + probe_suffix)) return c;
  return candidates.back();
}

}  // namespace

const LayoutNaming& layout_naming(Layout layout) {
  for (const LayoutNaming& n : kLayoutNamings)
    if (n.layout == layout) return n;
  throw std::logic_error("layout_naming: layout without a naming entry");
}

const std::vector<std::string>& known_vision_prefixes() {
  // The bare CLIP name first: a separate tower directory is a CLIP checkpoint.
  static const std::vector<std::string> prefixes = [] {
    std::vector<std::string> out;
    for (Layout l : {Layout::ClipVision, Layout::LlavaOrig, Layout::LlavaHf})
      for (const std::string& p : layout_naming(l).vision)
        if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
    return out;
  }();
  return prefixes;
}

WeightNames resolve_text_names(Layout layout, const std::function<bool(const std::string&)>& has) {
  const LayoutNaming& n = layout_naming(layout);
  WeightNames w;
  w.text_prefix = pick(n.text, has, "embed_tokens.weight");
  w.lm_head = pick(n.lm_head, has, "");
  // The two projector linears come from the same naming: probe linear 1, take its index in both.
  for (size_t i = 0; i < n.projector_1.size(); ++i) {
    if (has(n.projector_1[i] + "weight") || i + 1 == n.projector_1.size()) {
      w.proj1_prefix = n.projector_1[i];
      w.proj2_prefix = n.projector_2[i];
      break;
    }
  }
  return w;
}

std::string tensor_name(const WeightNames& names, VisionTensor t) {
  return names.vision_prefix + kVisionSub[idx(t)];
}

std::string tensor_name(const WeightNames& names, VisionLayerTensor t, int64_t layer) {
  return names.vision_prefix + "encoder.layers." + std::to_string(layer) + "." + kVisionLayerSub[idx(t)];
}

std::string tensor_name(const WeightNames& names, ProjectorTensor t) {
  switch (t) {
    case ProjectorTensor::Linear1Weight:
      return names.proj1_prefix + "weight";
    case ProjectorTensor::Linear1Bias:
      return names.proj1_prefix + "bias";
    case ProjectorTensor::Linear2Weight:
      return names.proj2_prefix + "weight";
    case ProjectorTensor::Linear2Bias:
      return names.proj2_prefix + "bias";
  }
  throw std::logic_error("tensor_name: unknown projector tensor");
}

std::string tensor_name(const WeightNames& names, TextTensor t) {
  switch (t) {
    case TextTensor::Embedding:
      return names.text_prefix + "embed_tokens.weight";
    case TextTensor::FinalNorm:
      return names.text_prefix + "norm.weight";
    case TextTensor::LmHead:
      return names.lm_head;
  }
  throw std::logic_error("tensor_name: unknown text tensor");
}

std::string tensor_name(const WeightNames& names, TextLayerTensor t, int64_t layer) {
  return names.text_prefix + "layers." + std::to_string(layer) + "." + kTextLayerSub[idx(t)];
}

const char* component_name(Component c) {
  switch (c) {
    case Component::Vision:
      return "vision";
    case Component::Projector:
      return "projector";
    case Component::Text:
      return "text";
  }
  return "?";
}

int64_t ExpectedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

void add(std::vector<ExpectedTensor>& out, std::string name, std::vector<int64_t> shape, Component c,
         bool matrix, bool used = true) {
  ExpectedTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.component = c;
  t.matrix = matrix;
  t.used = used;
  out.push_back(std::move(t));
}

void add_vision(const ModelConfig& cfg, std::vector<ExpectedTensor>& out) {
  using VT = VisionTensor;
  using VL = VisionLayerTensor;
  const WeightNames& n = cfg.names;
  const VisionConfig& v = cfg.vision;
  const Component c = Component::Vision;
  const int64_t d = v.hidden;
  add(out, tensor_name(n, VT::ClassEmbedding), {d}, c, false);
  // Conv2d with stride = kernel = patch: a GEMM of [D, C*p*p] over flattened patches, no bias.
  add(out, tensor_name(n, VT::PatchEmbedding), {d, v.channels, v.patch_size, v.patch_size}, c, true);
  add(out, tensor_name(n, VT::PositionEmbedding), {v.num_patches() + 1, d}, c, false);
  add(out, tensor_name(n, VT::PreNormWeight), {d}, c, false);
  add(out, tensor_name(n, VT::PreNormBias), {d}, c, false);
  const int64_t run = v.layers_to_run();
  for (int64_t l = 0; l < v.layers; ++l) {
    const bool used = l < run;
    auto vec = [&](VL t, int64_t len) { add(out, tensor_name(n, t, l), {len}, c, false, used); };
    auto mat = [&](VL t, int64_t rows, int64_t cols) {
      add(out, tensor_name(n, t, l), {rows, cols}, c, true, used);
    };
    vec(VL::Norm1Weight, d);
    vec(VL::Norm1Bias, d);
    vec(VL::Norm2Weight, d);
    vec(VL::Norm2Bias, d);
    mat(VL::QWeight, d, d);
    vec(VL::QBias, d);
    mat(VL::KWeight, d, d);
    vec(VL::KBias, d);
    mat(VL::VWeight, d, d);
    vec(VL::VBias, d);
    mat(VL::OutWeight, d, d);
    vec(VL::OutBias, d);
    mat(VL::Fc1Weight, v.intermediate, d);
    vec(VL::Fc1Bias, v.intermediate);
    mat(VL::Fc2Weight, d, v.intermediate);
    vec(VL::Fc2Bias, d);
  }
}

void add_projector(const ModelConfig& cfg, std::vector<ExpectedTensor>& out) {
  const ProjectorConfig& p = cfg.projector;
  const Component c = Component::Projector;
  add(out, tensor_name(cfg.names, ProjectorTensor::Linear1Weight), {p.hidden, p.in}, c, true);
  add(out, tensor_name(cfg.names, ProjectorTensor::Linear1Bias), {p.hidden}, c, false);
  add(out, tensor_name(cfg.names, ProjectorTensor::Linear2Weight), {p.out, p.hidden}, c, true);
  add(out, tensor_name(cfg.names, ProjectorTensor::Linear2Bias), {p.out}, c, false);
}

void add_text(const ModelConfig& cfg, std::vector<ExpectedTensor>& out) {
  using TL = TextLayerTensor;
  const WeightNames& n = cfg.names;
  const TextConfig& t = cfg.text;
  const Component c = Component::Text;
  const int64_t d = t.hidden;
  const int64_t q_rows = t.heads * t.head_dim;
  const int64_t kv_rows = t.kv_heads * t.head_dim;
  const std::string embed = tensor_name(n, TextTensor::Embedding);
  add(out, embed, {t.vocab, d}, c, true);
  for (int64_t l = 0; l < t.layers; ++l) {
    add(out, tensor_name(n, TL::InputNorm, l), {d}, c, false);
    add(out, tensor_name(n, TL::QWeight, l), {q_rows, d}, c, true);
    add(out, tensor_name(n, TL::KWeight, l), {kv_rows, d}, c, true);
    add(out, tensor_name(n, TL::VWeight, l), {kv_rows, d}, c, true);
    add(out, tensor_name(n, TL::OWeight, l), {d, q_rows}, c, true);
    add(out, tensor_name(n, TL::PostAttentionNorm, l), {d}, c, false);
    add(out, tensor_name(n, TL::Gate, l), {t.intermediate, d}, c, true);
    add(out, tensor_name(n, TL::Up, l), {t.intermediate, d}, c, true);
    add(out, tensor_name(n, TL::Down, l), {d, t.intermediate}, c, true);
  }
  add(out, tensor_name(n, TextTensor::FinalNorm), {d}, c, false);
  if (n.lm_head != embed) add(out, tensor_name(n, TextTensor::LmHead), {t.vocab, d}, c, true);
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg) {
  std::vector<ExpectedTensor> out;
  if (cfg.has_vision) add_vision(cfg, out);
  if (cfg.has_text) {
    add_projector(cfg, out);
    add_text(cfg, out);
  }
  return out;
}

}  // namespace recap::models
