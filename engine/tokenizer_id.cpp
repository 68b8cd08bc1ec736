#include "engine/tokenizer_id.h"

#include <openssl/evp.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <utility>

namespace recap::engine {

namespace {

// sha256 of tokenizer.json files whose vocabulary and merges are known to be right.
constexpr std::pair<const char*, const char*> kKnownTokenizers[] = {
    // Llama 3 (Meta-Llama-3-8B-Instruct's vocabulary and merges, ByteLevel post-processor):
    // tests/data/llama3-tokenizer/tokenizer.json, see its NOTICE.md.
    {"c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78", "Llama-3"},
};

}  // namespace

std::string file_sha256(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw std::runtime_error(path + ": cannot open for its sha256");
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("sha256: OpenSSL digest unavailable");
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) EVP_DigestUpdate(ctx.get(), buf, n);
  if (std::ferror(f.get())) throw std::runtime_error(path + ": read error while hashing");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

std::string describe_tokenizer(const std::string& path) {
  const std::string sha = file_sha256(path);
  for (const auto& [known, name] : kKnownTokenizers)
    if (sha == known) return std::string(name) + " (sha256 " + sha + ")";
  return "unrecognised (sha256 " + sha + ")";
}

}  // namespace recap::engine
