// models/chat_template: the input is a template file (first byte: a .json template or a plain
// text one), loaded, rendered for a sample with and without an image, and tokenized with the
// demo tokenizer. Documented errors: std::runtime_error naming the file or template (the loader
// and renderer), std::invalid_argument (an unknown built-in base).
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "fuzz_util.h"
#include "models/chat_template.h"
#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  static const models::Tokenizer tok =
      models::Tokenizer::from_file(std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json");
  std::string_view in = fuzz::as_view(data, size);
  const bool as_json = (fuzz::take_selector(&in) & 1) == 0;
  const std::string path = fuzz::scratch_dir() + (as_json ? "/template.json" : "/template.txt");
  fuzz::write_file(path, in);
  try {
    const models::ChatTemplate t = models::load_template_file(path);
    (void)models::template_to_json(t);
    for (bool image : {true, false}) {
      models::PromptInputs pin;
      pin.has_image = image;
      pin.fields = {{"original_caption", "a {cat} <image> <|eot_id|>"}, {"key", "000001"}};
      try {
        (void)models::render_prompt(t, pin);
        (void)models::build_prompt_ids(t, tok, pin);
      } catch (const std::runtime_error&) {
      }
    }
    (void)models::stop_token_ids(t, tok, {2});
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
