#include "io/keys.h"

#include <cstdio>

namespace recap::io {

std::string key_problem(std::string_view key) {
  if (key.empty()) return "empty key";
  if (key.size() > kMaxKeyBytes)
    return "key of " + std::to_string(key.size()) + " bytes (at most " + std::to_string(kMaxKeyBytes) + ")";
  for (char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/') return "key contains '/'";
    if (c == '\\') return "key contains '\\'";
    if (c == '.') return "key contains '.' (webdataset cuts keys at the first dot)";
    if (u == 0) return "key contains a NUL byte";
    if (u < 0x20 || u == 0x7f) return "key contains a control character";
  }
  return "";
}

std::string printable_key(std::string_view key) {
  std::string out;
  for (char c : key.substr(0, 80)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (key.size() > 80) out += "...";
  return out;
}

}  // namespace recap::io
