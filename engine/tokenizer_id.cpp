#include "engine/tokenizer_id.h"

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <utility>

#include "io/digest.h"

namespace recap::engine {

namespace {

// sha256 of tokenizer.json files whose vocabulary and merges are known to be right.
constexpr std::pair<const char*, const char*> kKnownTokenizers[] = {
    // Llama 3 (Meta-Llama-3-8B-Instruct's vocabulary and merges, ByteLevel post-processor):
    // tests/data/llama3-tokenizer/tokenizer.json, see its NOTICE.md.
    {"c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78", "Llama-3"},
};

}  // namespace

std::string describe_tokenizer(const std::string& path) {
  const std::string sha = io::file_sha256(path);
  for (const auto& [known, name] : kKnownTokenizers)
    if (sha == known) return std::string(name) + " (sha256 " + sha + ")";
  return "unrecognised (sha256 " + sha + ")";
}

}  // namespace recap::engine
