// models/tokenizer loading: the input is a tokenizer.json (seeds: the demo tokenizer and
// hand-made variants); when it loads, a fixed text goes through encode and decode. Documented
// errors: models::TokenizerError.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  const std::string path = fuzz::scratch_dir() + "/tokenizer.json";
  fuzz::write_file(path, fuzz::as_view(data, size));
  try {
    // An explicit (empty) config path: no tokenizer_config.json next to the scratch file is read.
    models::Tokenizer tok = models::Tokenizer::from_file(path, "");
    const std::vector<int32_t> ids = tok.encode("Hello <|eot_id|> world! 123 caf\xc3\xa9 \xf0\x9f\x98\x80\n");
    (void)tok.decode(ids);
    (void)tok.decode_output(ids);
    (void)tok.decode({-1, 0, tok.vocab_size(), tok.vocab_size() - 1, 1 << 30});
    for (int32_t id = 0; id < tok.vocab_size() && id < 64; ++id) (void)tok.token_bytes(id);
  } catch (const models::TokenizerError&) {
  }
  return 0;
}
