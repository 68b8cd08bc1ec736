// The model-family seam: what a checkpoint's family brings besides its tensors. A family is
// one decoder + tokenizer + conversation format (LLaVA-1.5 on LLaMA-3 today; next LLaVA-1.5 on
// Vicuna with a SentencePiece tokenizer and the vicuna_v1 template). load_model_config sets
// ModelConfig::family, tokenizer_kind and default_template from the table in models/family.cpp;
// everything above models/ reads them from the config and never names a family itself.
#pragma once
#include <string>

#include "models/tokenizer.h"

namespace recap::models {

enum class Layout;  // models/config.h
struct ModelConfig;

enum class ModelFamily {
  LlavaLlama3,  // CLIP-ViT-L/14-336 -> mlp2x_gelu -> LLaMA-3 (LLaVA-1.5-LLaMA3-8B)
  ClipVision,   // a bare CLIP checkpoint: the vision tower only, no language model
};

enum class TokenizerKind {
  None,       // no language model
  Llama3Bpe,  // tokenizer.json, byte-level BPE with LLaMA-3's pre-tokenizer (models/tokenizer.h)
};

struct FamilySpec {
  ModelFamily family;
  const char* name;  // "llava-llama3", as reports and the quantized cache name it
  TokenizerKind tokenizer;
  // The built-in chat template (models/chat_template.h) a caption run uses when none is given;
  // "" for a family without a language model.
  const char* default_template;
};

const FamilySpec& family_spec(ModelFamily family);
// The family of that name; throws std::invalid_argument naming the known ones.
ModelFamily parse_model_family(const std::string& name);
const char* tokenizer_kind_name(TokenizerKind kind);  // "none", "llama3-bpe"

// The family a checkpoint of this layout belongs to (every LLaVA layout is LLaVA-LLaMA3 today;
// a second LLaVA family is told apart here, from the config).
ModelFamily family_for_layout(Layout layout);
// Sets cfg.family, cfg.tokenizer_kind and cfg.default_template from the family's spec.
void set_model_family(ModelConfig& cfg, ModelFamily family);

// The tokenizer at `path` (models::find_tokenizer), read as cfg.tokenizer_kind says: the one
// place that turns a tokenizer file into a Tokenizer for a model. Throws TokenizerError naming
// the file, or std::invalid_argument for a family without a language model.
Tokenizer open_tokenizer(const ModelConfig& cfg, const std::string& path);

}  // namespace recap::models
