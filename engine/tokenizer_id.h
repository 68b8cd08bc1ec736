// Which tokenizer a run uses, for its first lines: the sha256 of tokenizer.json and, when it
// is a known one, its name ("tokenizer: Llama-3 (sha256 c05a3c21...)"). A caption run with
// the wrong tokenizer produces fluent-looking garbage, so the start line says which it got.
#pragma once
#include <string>

namespace recap::engine {

// "Llama-3 (sha256 <hex>)" for the Llama-3 tokenizer.json (tests/data/llama3-tokenizer), else
// "unrecognised (sha256 <hex>)".
std::string describe_tokenizer(const std::string& tokenizer_json_path);

}  // namespace recap::engine
