#include "models/family.h"

#include <stdexcept>

#include "models/config.h"

namespace recap::models {

namespace {

// One row per family: adding a family is a row here, its enum value, its tensor names
// (models/weight_names.cpp) and its template (models/chat_template.cpp).
const FamilySpec kFamilies[] = {
    {ModelFamily::LlavaLlama3, "llava-llama3", TokenizerKind::Llama3Bpe, "llava-llama3"},
    {ModelFamily::ClipVision, "clip-vision", TokenizerKind::None, ""},
};

}  // namespace

const FamilySpec& family_spec(ModelFamily family) {
  for (const FamilySpec& f : kFamilies)
    if (f.family == family) return f;
  throw std::logic_error("family_spec: family without a row in kFamilies");
}

ModelFamily parse_model_family(const std::string& name) {
  std::string known;
  for (const FamilySpec& f : kFamilies) {
    if (name == f.name) return f.family;
    known += (known.empty() ? "" : ", ") + std::string(f.name);
  }
  throw std::invalid_argument("unknown model family \"" + name + "\" (known: " + known + ")");
}

const char* tokenizer_kind_name(TokenizerKind kind) {
  switch (kind) {
    case TokenizerKind::None:
      return "none";
    case TokenizerKind::Llama3Bpe:
      return "llama3-bpe";
  }
  return "?";
}

ModelFamily family_for_layout(Layout layout) {
  switch (layout) {
    case Layout::LlavaOrig:
    case Layout::LlavaHf:
      return ModelFamily::LlavaLlama3;
    case Layout::ClipVision:
    case Layout::ClipFull:
      return ModelFamily::ClipVision;
  }
  throw std::logic_error("family_for_layout: unknown layout");
}

Tokenizer open_tokenizer(const ModelConfig& cfg, const std::string& path) {
  switch (cfg.tokenizer_kind) {
    case TokenizerKind::Llama3Bpe:
      return Tokenizer::from_file(path);
    case TokenizerKind::None:
      break;
  }
  throw std::invalid_argument(cfg.weights_dir + ": a " + family_spec(cfg.family).name +
                              " checkpoint has no language model, so no tokenizer");
}

void set_model_family(ModelConfig& cfg, ModelFamily family) {
  const FamilySpec& f = family_spec(family);
  cfg.family = f.family;
  cfg.tokenizer_kind = f.tokenizer;
  cfg.default_template = f.default_template;
}

}  // namespace recap::models
