// Llama-3 byte-level BPE tokenizer, loaded from a Hugging Face tokenizer.json.
//
// Reproduces the Hugging Face fast tokenizer (tokenizers + transformers 4.44) for the Llama-3
// family: added tokens matched as whole strings first (leftmost-longest), the Llama-3 split regex
// (hand-written matcher, Unicode classes from models/unicode_tables.*), GPT-2 byte<->unicode
// mapping, BPE by merge rank with `ignore_merges`, and ByteLevel decoding with U+FFFD for invalid
// UTF-8 (String::from_utf8_lossy). See docs/TOKENIZER.md.
//
// Thread safety: a loaded Tokenizer is immutable; every const method may be called concurrently.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace recap::models {

struct TokenizerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A byte range [begin, end) of an input text.
struct TextRange {
  size_t begin = 0;
  size_t end = 0;
};

class Tokenizer {
 public:
  // Loads tokenizer.json; reads tokenizer_config.json from `config_path`, or when that is empty
  // from the same directory if present (bos_token, clean_up_tokenization_spaces).
  // Throws TokenizerError naming the file and what is wrong.
  static Tokenizer from_file(const std::string& tokenizer_json_path, const std::string& config_path = "");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`, no BOS added. parse_special: special added tokens written in the text
  // (e.g. "<|eot_id|>") become their ids; when false they are tokenized as plain text (non-special
  // added tokens are still matched, as HF's split_special_tokens does).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Same, but no added token is matched that overlaps one of `literal_ranges` (sorted, disjoint):
  // used by the prompt builder so sample fields (captions, keys) are always plain text.
  std::vector<int32_t> encode(std::string_view text, bool parse_special,
                              const std::vector<TextRange>& literal_ranges) const;

  // Text of `ids` (HF decode without clean-up): skip_special drops every added token marked
  // special. Ids outside [0, vocab_size()) or unused ids are skipped, as HF does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  std::string decode(const int32_t* ids, size_t n, bool skip_special = false) const;

  // What a caption pipeline writes (SPEC 7.3): decode skipping special tokens, HF's
  // clean_up_tokenization when tokenizer_config.json asks for it, then Python's str.strip().
  std::string decode_output(const std::vector<int32_t>& ids) const;

  // max id + 1 over the vocab and the added tokens (128256 for Llama 3).
  int32_t vocab_size() const;
  // Id of a token given as written in tokenizer.json (an added token's content, or a vocab entry
  // in byte-level form such as "Ġhello"); -1 if there is none.
  int32_t token_id(std::string_view token) const;
  bool is_special(int32_t id) const;
  // The raw bytes a token stands for (added tokens: their content); empty for unknown ids.
  std::string token_bytes(int32_t id) const;

  // bos_token of tokenizer_config.json, else "<|begin_of_text|>"; -1 if neither exists.
  int32_t bos_id() const;
  // True when tokenizer.json's post_processor prepends BOS by itself (TemplateProcessing, as in
  // Meta-Llama-3-8B-Instruct); the tests/data copy has a ByteLevel post-processor and does not.
  bool add_bos_by_default() const;
  bool clean_up_tokenization_spaces() const;
  const std::string& path() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The pieces the Llama-3 split regex (SPEC 6.2) cuts `text` into (added tokens not considered);
// they tile the text. Exposed for tests and debugging.
std::vector<std::string_view> llama3_pre_tokenize(std::string_view text);

// HF transformers' clean_up_tokenization: " ." -> ".", " ?" -> "?", " !" -> "!", " ," -> ",",
// " ' " -> "'", " n't" -> "n't", " 'm" -> "'m", " 's" -> "'s", " 've" -> "'ve", " 're" -> "'re",
// applied in that order, each over the whole string.
std::string clean_up_tokenization(std::string text);

// Python str.strip() on UTF-8 text (Unicode whitespace per str.isspace()).
std::string strip_python_whitespace(std::string_view text);

// U+FFFD-substituting UTF-8 validation, as Rust's String::from_utf8_lossy (one replacement per
// maximal invalid subpart).
std::string utf8_lossy(std::string_view bytes);

// Where the tokenizer comes from: `explicit_path` (--tokenizer FILE) if given, else
// `weights_dir`/tokenizer.json. Throws TokenizerError with a clear message when neither exists
// (the published checkpoint ships no tokenizer: pass Meta-Llama-3-8B-Instruct's tokenizer.json).
std::string find_tokenizer(const std::string& weights_dir, const std::string& explicit_path);

}  // namespace recap::models
