// A webdataset tar built member by member in a test, remembering where each header begins
// (messages name offsets), with forged headers for hostile cases.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "io/tar.h"

namespace recap::testing {

// Builds a tar member by member, remembering where each begins (offsets in messages).
struct TarBuilder {
  std::string bytes;
  uint64_t add(const std::string& name, const std::string& data) {
    const uint64_t at = bytes.size();
    bytes += recap::io::tar_member_bytes(name, data, 1700000000);
    return at;
  }
  // A directory entry (typeflag '5').
  uint64_t add_dir(const std::string& name) {
    const uint64_t at = bytes.size();
    std::string h = recap::io::tar_member_bytes(name, "", 0);
    h[156] = '5';
    std::memset(&h[148], ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    char num[8];
    std::snprintf(num, sizeof num, "%06o", sum);
    std::memcpy(&h[148], num, 6);
    h[154] = '\0';
    bytes += h;
    return at;
  }
  // A member header declaring `size` bytes (data not appended).
  uint64_t add_header(const std::string& name, uint64_t size) {
    const uint64_t at = bytes.size();
    std::string h = recap::io::tar_member_bytes(name, "", 0);
    char num[16];
    std::snprintf(num, sizeof num, "%011llo", static_cast<unsigned long long>(size));
    std::memcpy(&h[124], num, 11);
    std::memset(&h[148], ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(num, sizeof num, "%06o", sum);
    std::memcpy(&h[148], num, 6);
    h[154] = '\0';
    bytes += h;
    return at;
  }
  std::string done() const { return bytes + recap::io::tar_end_bytes(); }
};

}  // namespace recap::testing
