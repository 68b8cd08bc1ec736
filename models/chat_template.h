// Prompt building: conversation templates as data, rendered per sample and tokenized the way
// LLaVA's tokenizer_image_token does (SPEC 6.5, 7.2). See docs/TOKENIZER.md for the file format.
//
// A template is one text with placeholders:
//   {system}  the template's system text      {prompt}  the instruction (default or --prompt)
//   {name}    a field of the sample ({original_caption}, {key}, any input column), inserted verbatim
//   {{ }}     literal braces                  <image>   where the image goes (the -200 id)
// {system} and {prompt} expand to template text (special tokens such as <|eot_id|> are parsed and
// they may use sample fields); sample field values are always plain text: special-token strings
// or "<image>" inside a caption never become tokens or image slots.
// Without an image (text-only), "<image>" and one newline right after it are left out.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/tokenizer.h"

namespace recap::models {

// LLaVA's IMAGE_TOKEN_INDEX: the id that stands for the projector's image vectors.
constexpr int32_t kImageTokenId = -200;
// The Recap-DataComp-1B caption instruction (SPEC 7.1).
inline constexpr const char* kDefaultCaptionPrompt =
    "Please generate a detailed caption of this image. Please be as descriptive as possible.";

struct ChatTemplate {
  std::string name;
  std::string text;                            // the whole prompt with placeholders (see above)
  std::string system;                          // value of {system}
  std::string prompt = kDefaultCaptionPrompt;  // value of {prompt} unless the caller overrides it
  // true: every chunk between "<image>" markers is tokenized with the tokenizer's BOS prepended and
  // tokenizer_image_token's strip rule applied ([bos] + chunk0 + -200 + chunk1 ...), i.e. what LLaVA
  // produced with Meta's tokenizer (which auto-adds BOS) whatever this tokenizer.json does. With a
  // template text that starts with <|begin_of_text|> this gives the double BOS of SPEC 7.2.
  // false: the chunks are tokenized as written, no BOS added.
  bool bos_per_chunk = true;
  // Tokens (as written, e.g. "<|eot_id|>") that end generation, besides generation_config's eos.
  std::vector<std::string> stop_tokens;
};

// Names of the built-in templates: "llava-llama3" (SPEC 7.2 A, the LLaVA-LLaMA3 family's
// default), "llama3-plain" (B1), "llava-next-llama3" (B2).
std::vector<std::string> builtin_template_names();
// Throws std::invalid_argument listing the known names.
ChatTemplate builtin_template(const std::string& name);

// Loads a user template: a .json file (fields: name, base, template, system, roles, sep, image,
// prompt, bos_per_chunk, stop) or any other file as a plain text template (bos_per_chunk false).
// Throws std::runtime_error naming the file and the problem.
ChatTemplate load_template_file(const std::string& path);
// A built-in name, else a file path.
ChatTemplate resolve_template(const std::string& name_or_path);

// The one place a run's template name gets its default: `requested` (a built-in name or a
// file) when not empty, else the model family's default template (ModelConfig::default_template,
// models/family.cpp). Throws std::invalid_argument when nothing was requested and the family has
// no language model (a bare CLIP checkpoint).
std::string template_name_for(const ModelConfig& cfg, const std::string& requested);
// resolve_template(template_name_for(cfg, requested)).
ChatTemplate resolve_template_for(const ModelConfig& cfg, const std::string& requested);

// Canonical JSON of the template (for run fingerprints and --print-template).
std::string template_to_json(const ChatTemplate& t);

struct PromptInputs {
  bool has_image = true;
  std::string prompt;                         // empty: the template's prompt
  std::map<std::string, std::string> fields;  // sample fields: original_caption, key, other columns
};

// The rendered prompt split at the image: chunks.size() == 1 without an image, 2 with one.
// literal[k] are the byte ranges of chunks[k] that came from sample fields.
struct RenderedPrompt {
  std::vector<std::string> chunks;
  std::vector<std::vector<TextRange>> literal;
  std::string text() const;  // chunks joined with "<image>"
};

// Throws std::runtime_error on an unknown field or when an image is given but the template has
// no "<image>" (or more than one).
RenderedPrompt render_prompt(const ChatTemplate& t, const PromptInputs& in);

// Token ids of the prompt, kImageTokenId at the image position (tokenizer_image_token).
std::vector<int32_t> build_prompt_ids(const ChatTemplate& t, const Tokenizer& tok, const PromptInputs& in);

// generation_config eos ids followed by the template's stop tokens, without duplicates.
// Throws std::runtime_error when a stop token is not in the tokenizer.
std::vector<int32_t> stop_token_ids(const ChatTemplate& t, const Tokenizer& tok,
                                    const std::vector<int64_t>& generation_eos);

}  // namespace recap::models
