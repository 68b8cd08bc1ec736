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
  // A name holding a NUL (refused by io::tar_member_bytes) is forged as a pax path record, as
  // a hostile or broken writer could make it.
  uint64_t add(const std::string& name, const std::string& data) {
    const uint64_t at = bytes.size();
    if (name.find('\0') == std::string::npos) {
      bytes += recap::io::tar_member_bytes(name, data, 1700000000);
      return at;
    }
    const std::string body = " path=" + name + "\n";
    size_t len = body.size() + 1;
    while (std::to_string(len).size() + body.size() != len) ++len;
    const std::string record = std::to_string(len) + body;
    std::string pax = recap::io::tar_member_bytes("PaxHeaders/forged", record, 1700000000);
    pax[156] = 'x';
    fix_checksum(pax);
    bytes += pax + recap::io::tar_member_bytes("forged-name", data, 1700000000);
    return at;
  }
  // Recomputes a 512-byte header's checksum after a field was changed.
  static void fix_checksum(std::string& h) {
    std::memset(&h[148], ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(h[i]);
    char num[8];
    std::snprintf(num, sizeof num, "%06o", sum);
    std::memcpy(&h[148], num, 6);
    h[154] = '\0';
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
