// models/tokenizer encode/decode on arbitrary bytes with the bundled demo tokenizer: byte-level
// BPE loses nothing, so decode(encode(text)) must equal text with invalid UTF-8 replaced by
// U+FFFD (utf8_lossy), for plain-text encoding (no special tokens parsed). Encoding with special
// tokens parsed must not crash either. No errors are documented for encode/decode.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  static const models::Tokenizer tok =
      models::Tokenizer::from_file(std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json");
  const std::string_view text = fuzz::as_view(data, size);
  const std::vector<int32_t> ids = tok.encode(text, /*parse_special=*/false);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  if (tok.decode(ids) != models::utf8_lossy(text)) __builtin_trap();
  const std::vector<int32_t> special = tok.encode(text, /*parse_special=*/true);
  (void)tok.decode(special, /*skip_special=*/true);
  (void)models::llama3_pre_tokenize(text);
  (void)models::strip_python_whitespace(text);
  return 0;
}
