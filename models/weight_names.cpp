#include "models/weight_names.h"

namespace recap::models {

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

std::string vision_tensor_name(const ModelConfig& cfg, const std::string& sub) {
  return cfg.names.vision_prefix + sub;
}

std::string vision_layer_tensor_name(const ModelConfig& cfg, int64_t layer, const std::string& sub) {
  return cfg.names.vision_prefix + "encoder.layers." + std::to_string(layer) + "." + sub;
}

std::string text_tensor_name(const ModelConfig& cfg, const std::string& sub) {
  return cfg.names.text_prefix + sub;
}

std::string text_layer_tensor_name(const ModelConfig& cfg, int64_t layer, const std::string& sub) {
  return cfg.names.text_prefix + "layers." + std::to_string(layer) + "." + sub;
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
  const VisionConfig& v = cfg.vision;
  const Component c = Component::Vision;
  const int64_t d = v.hidden;
  add(out, vision_tensor_name(cfg, "embeddings.class_embedding"), {d}, c, false);
  // Conv2d with stride = kernel = patch: a GEMM of [D, C*p*p] over flattened patches, no bias.
  add(out, vision_tensor_name(cfg, "embeddings.patch_embedding.weight"),
      {d, v.channels, v.patch_size, v.patch_size}, c, true);
  add(out, vision_tensor_name(cfg, "embeddings.position_embedding.weight"), {v.num_patches() + 1, d}, c,
      false);
  add(out, vision_tensor_name(cfg, "pre_layrnorm.weight"), {d}, c, false);
  add(out, vision_tensor_name(cfg, "pre_layrnorm.bias"), {d}, c, false);
  const int64_t run = v.layers_to_run();
  for (int64_t l = 0; l < v.layers; ++l) {
    const bool used = l < run;
    auto name = [&](const char* sub) { return vision_layer_tensor_name(cfg, l, sub); };
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      add(out, name((std::string(ln) + ".weight").c_str()), {d}, c, false, used);
      add(out, name((std::string(ln) + ".bias").c_str()), {d}, c, false, used);
    }
    for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      add(out, name((std::string("self_attn.") + p + ".weight").c_str()), {d, d}, c, true, used);
      add(out, name((std::string("self_attn.") + p + ".bias").c_str()), {d}, c, false, used);
    }
    add(out, name("mlp.fc1.weight"), {v.intermediate, d}, c, true, used);
    add(out, name("mlp.fc1.bias"), {v.intermediate}, c, false, used);
    add(out, name("mlp.fc2.weight"), {d, v.intermediate}, c, true, used);
    add(out, name("mlp.fc2.bias"), {d}, c, false, used);
  }
}

void add_projector(const ModelConfig& cfg, std::vector<ExpectedTensor>& out) {
  const ProjectorConfig& p = cfg.projector;
  const Component c = Component::Projector;
  add(out, cfg.names.proj1_prefix + "weight", {p.hidden, p.in}, c, true);
  add(out, cfg.names.proj1_prefix + "bias", {p.hidden}, c, false);
  add(out, cfg.names.proj2_prefix + "weight", {p.out, p.hidden}, c, true);
  add(out, cfg.names.proj2_prefix + "bias", {p.out}, c, false);
}

void add_text(const ModelConfig& cfg, std::vector<ExpectedTensor>& out) {
  const TextConfig& t = cfg.text;
  const Component c = Component::Text;
  const int64_t d = t.hidden;
  const int64_t q_rows = t.heads * t.head_dim;
  const int64_t kv_rows = t.kv_heads * t.head_dim;
  const std::string embed = text_tensor_name(cfg, "embed_tokens.weight");
  add(out, embed, {t.vocab, d}, c, true);
  for (int64_t l = 0; l < t.layers; ++l) {
    auto name = [&](const char* sub) { return text_layer_tensor_name(cfg, l, sub); };
    add(out, name("input_layernorm.weight"), {d}, c, false);
    add(out, name("self_attn.q_proj.weight"), {q_rows, d}, c, true);
    add(out, name("self_attn.k_proj.weight"), {kv_rows, d}, c, true);
    add(out, name("self_attn.v_proj.weight"), {kv_rows, d}, c, true);
    add(out, name("self_attn.o_proj.weight"), {d, q_rows}, c, true);
    add(out, name("post_attention_layernorm.weight"), {d}, c, false);
    add(out, name("mlp.gate_proj.weight"), {t.intermediate, d}, c, true);
    add(out, name("mlp.up_proj.weight"), {t.intermediate, d}, c, true);
    add(out, name("mlp.down_proj.weight"), {d, t.intermediate}, c, true);
  }
  add(out, text_tensor_name(cfg, "norm.weight"), {d}, c, false);
  if (cfg.names.lm_head != embed) add(out, cfg.names.lm_head, {t.vocab, d}, c, true);
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
