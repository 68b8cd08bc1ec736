// Model configuration: every dimension the engine uses, read from config.json /
// generation_config.json / tensor shapes, for each supported checkpoint layout.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/family.h"

namespace recap::models {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Layout {
  LlavaOrig,   // LlavaLlamaForCausalLM / llava_llama (haotian-liu/LLaVA): model.layers.N...,
               // model.mm_projector.{0,2}
  LlavaHf,     // transformers LlavaForConditionalGeneration: language_model.model...,
               // multi_modal_projector.linear_{1,2}
  ClipVision,  // CLIPVisionModel: vision_model.*
  ClipFull,    // CLIPModel: vision_model.* + text_model.* (text part ignored)
};
const char* layout_name(Layout l);

struct VisionConfig {
  int64_t hidden = 0;        // 1024 for CLIP-L
  int64_t intermediate = 0;  // 4096
  int64_t layers = 0;        // 24 (layers present in the checkpoint)
  int64_t heads = 0;         // 16
  int64_t image_size = 0;    // 336
  int64_t patch_size = 0;    // 14
  int64_t channels = 3;
  float ln_eps = 1e-5f;
  std::string hidden_act = "quick_gelu";
  int64_t select_layer = -2;             // mm_vision_select_layer / vision_feature_layer
  std::string select_feature = "patch";  // "patch" drops CLS
  std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std{0.26862954f, 0.26130258f, 0.27577711f};
  std::array<uint8_t, 3> pad_background{122, 116, 104};  // int(mean*255)
  int64_t resize_shortest_edge = 0;                      // preprocessor "size" (defaults to image_size)
  int64_t crop_size = 0;                                 // preprocessor "crop_size" (defaults to image_size)
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  // Number of encoder layers that must run to produce hidden_states[select_layer].
  int64_t layers_to_run() const { return select_layer < 0 ? layers + 1 + select_layer : select_layer; }
};

struct TextConfig {
  int64_t hidden = 0;        // 4096
  int64_t intermediate = 0;  // 14336
  int64_t layers = 0;        // 32
  int64_t heads = 0;         // 32
  int64_t kv_heads = 0;      // 8
  int64_t head_dim = 0;      // hidden / heads
  int64_t vocab = 0;         // rows of embed_tokens (128256 or 128257)
  float rms_eps = 1e-5f;
  float rope_theta = 500000.f;
  int64_t max_position = 8192;
  bool tie_embeddings = false;
};

struct ProjectorConfig {
  std::string type = "mlp2x_gelu";
  int64_t in = 0;      // vision hidden (mm_hidden_size)
  int64_t hidden = 0;  // rows of linear 1
  int64_t out = 0;     // text hidden
};

struct GenerationConfig {
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // generation_config.json eos (list or int), else config.json
};

// Where each part's tensors are named in this checkpoint: the prefixes the tensor-name table
// (models/weight_names.h: layout_naming, resolve_text_names) resolved for it. Full names are
// made only by models::tensor_name(names, role).
struct WeightNames {
  std::string vision_prefix;  // e.g. "model.vision_tower.vision_tower.vision_model." or "vision_model."
  std::string text_prefix;    // "model." (orig) or "language_model.model." (hf)
  std::string lm_head;        // a full name: "lm_head.weight", or the embedding's when tied
  std::string proj1_prefix;   // "model.mm_projector.0." or "multi_modal_projector.linear_1."
  std::string proj2_prefix;   // "model.mm_projector.2." or "multi_modal_projector.linear_2."
};

// A fully resolved model: which directories hold what, the layout, and every dimension.
struct ModelConfig {
  Layout layout = Layout::LlavaOrig;
  // The family seam (models/family.h): which family the checkpoint is, the tokenizer it reads
  // and the built-in chat template used when a run names none (template_name_for). Set by
  // load_model_config; the defaults are LLaVA-LLaMA3's (synthetic configs).
  ModelFamily family = ModelFamily::LlavaLlama3;
  TokenizerKind tokenizer_kind = family_spec(ModelFamily::LlavaLlama3).tokenizer;
  std::string default_template = family_spec(ModelFamily::LlavaLlama3).default_template;
  std::string weights_dir;         // main checkpoint
  std::string vision_weights_dir;  // where the tower's tensors live (== weights_dir if embedded)
  bool has_vision = false;
  bool has_text = false;  // false for a bare CLIP dir
  VisionConfig vision;
  TextConfig text;
  ProjectorConfig projector;
  GenerationConfig generation;
  WeightNames names;
  int64_t image_token_index = -200;  // id standing for the image in llava-hf configs
  std::string text_dtype;            // torch_dtype as stored, informational
  std::vector<std::string> warnings;
  // Provenance, for reports (inspect): the architecture named in config.json, where the
  // tower's tensors came from, and which file (or preset / tensor shapes) gave its dims
  // and its preprocessing.
  std::string architecture;
  std::string vision_tower_source;   // e.g. "embedded in the checkpoint
                                     // (model.vision_tower.vision_tower.vision_model.*)"
  std::string vision_config_source;  // e.g. "/x/config.json (vision_config)", "built-in preset
                                     // openai/clip-vit-large-patch14-336"
  std::string preprocessor_source;   // a preprocessor_config.json path, or "defaults (CLIP)"
};

struct LoadOptions {
  std::string vision_weights_dir;  // --vision-weights
  std::string vision_config_dir;   // --vision-config (CLIPVisionConfig config.json)
};

// The ranges every config value must lie in (inclusive; eps and theta exclusive of 0), checked
// before anything is allocated from them; a value outside throws ConfigError naming the file,
// key, value and range. Far above any LLaVA/LLaMA/CLIP checkpoint (LLaMA-3-8B: hidden 4096,
// intermediate 14336, 32 layers, 32 heads, head_dim 128, vocab 128256, 8192 positions).
struct ConfigLimits {
  int64_t text_hidden = 65536;
  int64_t text_intermediate = 262144;
  int64_t text_layers = 1024;
  int64_t text_heads = 1024;  // num_attention_heads and num_key_value_heads
  int64_t head_dim = 1024;
  int64_t vocab = int64_t{1} << 22;
  int64_t max_position = int64_t{1} << 20;  // max_position_embeddings
  int64_t vision_hidden = 16384;
  int64_t vision_intermediate = 65536;
  int64_t vision_layers = 256;
  int64_t vision_heads = 256;
  int64_t image_size = 8192;  // also preprocessor size / crop_size
  int64_t patch_size = 1024;
  int64_t channels = 4;
  double max_eps = 1.0;          // rms_norm_eps, layer_norm_eps in (0, 1]
  double max_rope_theta = 1e12;  // rope_theta in (0, 1e12]
  double max_mean_std = 1000.0;  // |image_mean|, |image_std| entries
  // What the dims together imply (computed in double, so no overflow):
  double max_parameters = 2e11;                         // vision + projector + text weights
  double max_rope_table_bytes = 1.0 * (1 << 30);        // max_position x head_dim x 4 bytes (cos + sin)
  double max_kv_bytes_per_position = 64.0 * (1 << 20);  // layers x 2 x kv_heads x head_dim x 4 bytes
};
inline constexpr ConfigLimits kLimits{};

// Built-in dims of a known CLIP vision tower, keyed by its hub id (the real LLaVA checkpoint
// names its tower "openai/clip-vit-large-patch14-336" and carries no CLIP dims). Matches a
// bare id or a path whose last component is the repo name. Null when unknown.
const VisionConfig* vision_preset(const std::string& hub_id_or_path);

}  // namespace recap::models

namespace recap::io {
class WeightStore;
}

namespace recap::models {

// Reads config.json (+ generation_config.json, preprocessor_config.json when present),
// detects the layout with no flag, resolves where the vision tower lives (embedded, the
// mm_vision_tower local path, opts.vision_weights_dir, or a built-in preset for the hub id
// openai/clip-vit-large-patch14-336), and takes what tensor shapes tell (vocab from
// embed_tokens). Throws ConfigError naming the file, key and value on anything unsupported.
ModelConfig load_model_config(const std::string& weights_dir, const LoadOptions& opts = {});

// An opened checkpoint: the config plus the weight stores (vision may share the text store).
struct Checkpoint {
  ModelConfig config;
  std::shared_ptr<io::WeightStore> text_store;    // null for a bare CLIP dir
  std::shared_ptr<io::WeightStore> vision_store;  // may equal text_store
};

// load_model_config + open stores + validate_checkpoint.
Checkpoint open_checkpoint(const std::string& weights_dir, const LoadOptions& opts = {});
// The same without validate_checkpoint (inspect reports the problems instead of throwing).
Checkpoint open_checkpoint_unchecked(const std::string& weights_dir, const LoadOptions& opts = {});

// Every tensor the forward pass needs is present with the shape the config implies and a
// float dtype; collects every problem found. Throws ConfigError listing them if any.
std::vector<std::string> checkpoint_problems(const Checkpoint& ckpt);
void validate_checkpoint(const Checkpoint& ckpt);

// The text decoder's dimensions as a JSON object (hidden, intermediate, layers, heads,
// kv_heads, head_dim, vocab, rms_eps, rope_theta, max_position, tie_embeddings): the form
// `inspect --json` reports and the quantized cache stores.
nlohmann::json text_config_json(const TextConfig& t);

}  // namespace recap::models
