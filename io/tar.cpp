#include "io/tar.h"

#include <cerrno>
#include <cstring>

namespace recap::io {

namespace {

constexpr size_t kBlock = 512;

// Header field offsets/lengths (POSIX ustar).
struct Field {
  size_t off, len;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12}, kMtime{136, 12},
    kChksum{148, 8}, kType{156, 1}, kMagic{257, 6}, kVersion{263, 2}, kUname{265, 32}, kGname{297, 32},
    kPrefix{345, 155};

std::string field_str(const char* h, Field f) {
  size_t n = 0;
  while (n < f.len && h[f.off + n] != '\0') ++n;
  return std::string(h + f.off, n);
}

// Octal (space/NUL terminated) or GNU base-256 (high bit of the first byte set).
bool parse_number(const char* h, Field f, uint64_t* out) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(h + f.off);
  if (p[0] & 0x80) {
    if (p[0] & 0x40) return false;  // negative
    uint64_t v = p[0] & 0x3f;
    for (size_t i = 1; i < f.len; ++i) {
      if (v >> 56) return false;
      v = (v << 8) | p[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < f.len && p[i] == ' ') ++i;
  uint64_t v = 0;
  bool any = false;
  for (; i < f.len && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) return false;
    v = v * 8 + (p[i] - '0');
    any = true;
  }
  for (; i < f.len; ++i)
    if (p[i] != ' ' && p[i] != '\0') return false;
  *out = any ? v : 0;
  return true;
}

bool checksum_ok(const char* h) {
  uint64_t stored = 0;
  if (!parse_number(h, kChksum, &stored)) return false;
  uint64_t usum = 0;
  int64_t ssum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_field = i >= kChksum.off && i < kChksum.off + kChksum.len;
    unsigned char c = in_field ? ' ' : static_cast<unsigned char>(h[i]);
    usum += c;
    ssum += static_cast<signed char>(c);
  }
  return stored == usum || static_cast<int64_t>(stored) == ssum;
}

bool all_zero(const char* b) {
  for (size_t i = 0; i < kBlock; ++i)
    if (b[i]) return false;
  return true;
}

void put_octal(char* h, Field f, uint64_t v) {
  // len-1 octal digits, zero padded, NUL terminated.
  std::string s(f.len - 1, '0');
  for (size_t i = f.len - 1; i-- > 0;) {
    s[i] = static_cast<char>('0' + (v & 7));
    v >>= 3;
  }
  std::memcpy(h + f.off, s.data(), f.len - 1);
  h[f.off + f.len - 1] = '\0';
}

void put_str(char* h, Field f, const std::string& s) {
  std::memcpy(h + f.off, s.data(), std::min(s.size(), f.len));
}

std::string make_header(const std::string& name, const std::string& prefix, uint64_t size, int64_t mtime,
                        char type) {
  std::string hdr(kBlock, '\0');
  char* h = hdr.data();
  put_str(h, kName, name);
  put_octal(h, kMode, 0644);
  put_octal(h, kUid, 0);
  put_octal(h, kGid, 0);
  put_octal(h, kSize, size);
  put_octal(h, kMtime, mtime < 0 ? 0 : static_cast<uint64_t>(mtime));
  h[kType.off] = type;
  std::memcpy(h + kMagic.off, "ustar", 6);  // "ustar\0"
  std::memcpy(h + kVersion.off, "00", 2);
  put_str(h, kUname, "recap");
  put_str(h, kGname, "recap");
  put_str(h, kPrefix, prefix);
  std::memset(h + kChksum.off, ' ', kChksum.len);
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += static_cast<unsigned char>(h[i]);
  // 6 octal digits, NUL, space (the traditional layout every reader accepts).
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06o", static_cast<unsigned>(sum & 0777777));
  std::memcpy(h + kChksum.off, buf, 6);
  h[kChksum.off + 6] = '\0';
  h[kChksum.off + 7] = ' ';
  return hdr;
}

void pad_to_block(std::string* s) {
  size_t rem = s->size() % kBlock;
  if (rem) s->append(kBlock - rem, '\0');
}

// One pax record "LEN key=value\n" where LEN counts the whole record including itself.
std::string pax_record(const std::string& key, const std::string& value) {
  size_t body = key.size() + value.size() + 3;  // ' ' '=' '\n'
  size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

// ustar split of a long name into prefix (<=155) + name (<=100) at a '/'.
bool ustar_split(const std::string& full, std::string* prefix, std::string* name) {
  if (full.size() <= kName.len) {
    *prefix = "";
    *name = full;
    return true;
  }
  if (full.size() > kName.len + kPrefix.len + 1) return false;
  for (size_t i = full.size() - 1; i > 0; --i) {
    if (full[i] != '/') continue;
    if (i <= kPrefix.len && full.size() - i - 1 <= kName.len && full.size() - i - 1 > 0) {
      *prefix = full.substr(0, i);
      *name = full.substr(i + 1);
      return true;
    }
  }
  return false;
}

}  // namespace

std::string tar_member_bytes(const std::string& name, std::string_view data, int64_t mtime) {
  if (name.empty()) throw TarError("tar member with an empty name");
  std::string out;
  std::string prefix, short_name;
  bool ascii = true;
  for (unsigned char c : name)
    if (c >= 0x80) ascii = false;
  constexpr uint64_t kMaxOctalSize = 077777777777ull;  // 11 octal digits
  bool fits = ascii && ustar_split(name, &prefix, &short_name) && data.size() <= kMaxOctalSize;
  if (!fits) {
    std::string records = pax_record("path", name);
    if (data.size() > kMaxOctalSize) records += pax_record("size", std::to_string(data.size()));
    std::string base =
        name.substr(name.find_last_of('/') == std::string::npos ? 0 : name.find_last_of('/') + 1);
    std::string pax_name = ("PaxHeaders/" + base).substr(0, 99);
    // Non-ASCII bytes in the pax header's own name are harmless but keep it plain.
    for (auto& c : pax_name)
      if (static_cast<unsigned char>(c) >= 0x80) c = '_';
    out += make_header(pax_name, "", records.size(), mtime, 'x');
    out += records;
    pad_to_block(&out);
    // The ustar name is a truncated fallback for readers without pax support.
    short_name = name.substr(0, std::min<size_t>(name.size(), kName.len));
    prefix.clear();
  }
  out += make_header(short_name, prefix, data.size() > kMaxOctalSize ? 0 : data.size(), mtime, '0');
  out.append(data.data(), data.size());
  pad_to_block(&out);
  return out;
}

std::string tar_end_bytes() {
  return std::string(2 * kBlock, '\0');
}

void split_wds_name(const std::string& name, std::string* key, std::string* ext) {
  size_t slash = name.find_last_of('/');
  size_t start = slash == std::string::npos ? 0 : slash + 1;
  size_t dot = name.find('.', start);
  if (dot == std::string::npos) {
    *key = name;
    ext->clear();
    return;
  }
  *key = name.substr(0, dot);
  *ext = name.substr(dot + 1);
}

// ---------------------------------------------------------------- reader

TarReader::TarReader(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "rb");
  if (!f_) throw TarError("cannot open " + path + ": " + std::strerror(errno));
}

TarReader::~TarReader() {
  if (f_) std::fclose(f_);
}

bool TarReader::read_block(char* block) {
  size_t n = std::fread(block, 1, kBlock, f_);
  if (n == 0 && std::feof(f_)) return false;
  if (n != kBlock) throw TarError(path_ + ": truncated tar header at offset " + std::to_string(pos_));
  pos_ += kBlock;
  return true;
}

void TarReader::read_exact(std::string* out, uint64_t n, const char* what) {
  if (n > max_member_bytes_)
    throw TarError(path_ + ": " + what + " of " + std::to_string(n) + " bytes at offset " +
                   std::to_string(pos_) + " exceeds the limit");
  out->resize(n);
  if (n && std::fread(out->data(), 1, n, f_) != n)
    throw TarError(path_ + ": truncated " + std::string(what) + " at offset " + std::to_string(pos_));
  pos_ += n;
  skip_padding(n);
}

void TarReader::skip_padding(uint64_t size) {
  uint64_t rem = size % kBlock;
  if (!rem) return;
  char pad[kBlock];
  size_t want = kBlock - rem;
  if (std::fread(pad, 1, want, f_) != want)
    throw TarError(path_ + ": truncated padding at offset " + std::to_string(pos_));
  pos_ += want;
}

bool TarReader::next(TarMember* out) {
  std::string long_name, pax_path;
  uint64_t pax_size = 0;
  bool have_pax_size = false;
  char h[kBlock];
  for (;;) {
    uint64_t header_pos = pos_;
    if (!read_block(h)) return false;  // EOF without end blocks: tolerated (many writers)
    if (all_zero(h)) return false;     // end-of-archive marker
    if (!checksum_ok(h))
      throw TarError(path_ + ": bad tar header checksum at offset " + std::to_string(header_pos) +
                     " (not a tar file or corrupt)");
    uint64_t size = 0;
    if (!parse_number(h, kSize, &size))
      throw TarError(path_ + ": bad size field at offset " + std::to_string(header_pos));
    if (have_pax_size) size = pax_size;
    char type = h[kType.off];
    if (type == 'L') {  // GNU long name for the next member
      read_exact(&long_name, size, "GNU long name");
      while (!long_name.empty() && long_name.back() == '\0') long_name.pop_back();
      continue;
    }
    if (type == 'K') {  // GNU long link name: irrelevant for regular files
      std::string ignored;
      read_exact(&ignored, size, "GNU long link");
      continue;
    }
    if (type == 'x' || type == 'g') {
      std::string recs;
      read_exact(&recs, size, "pax header");
      if (type == 'g') continue;  // global defaults: nothing we use
      size_t p = 0;
      while (p < recs.size()) {
        size_t sp = recs.find(' ', p);
        if (sp == std::string::npos) break;
        uint64_t len = std::strtoull(recs.c_str() + p, nullptr, 10);
        if (len == 0 || p + len > recs.size())
          throw TarError(path_ + ": malformed pax record at offset " + std::to_string(header_pos));
        std::string rec = recs.substr(sp + 1, p + len - sp - 2);  // drop trailing '\n'
        size_t eq = rec.find('=');
        if (eq != std::string::npos) {
          std::string k = rec.substr(0, eq), v = rec.substr(eq + 1);
          if (k == "path") pax_path = v;
          if (k == "size") {
            pax_size = std::strtoull(v.c_str(), nullptr, 10);
            have_pax_size = true;
          }
        }
        p += len;
      }
      continue;
    }
    bool regular = type == '0' || type == '\0' || type == '7';
    if (!regular) {
      // Directory, link, device...: skip its data (usually none).
      if (type != '1' && type != '2' && type != '5' && size) {
        std::string ignored;
        read_exact(&ignored, size, "member");
      }
      long_name.clear();
      pax_path.clear();
      have_pax_size = false;
      continue;
    }
    std::string name;
    if (!pax_path.empty()) {
      name = pax_path;
    } else if (!long_name.empty()) {
      name = long_name;
    } else {
      name = field_str(h, kName);
      std::string magic(h + kMagic.off, 5);
      std::string prefix = magic == "ustar" ? field_str(h, kPrefix) : "";
      // GNU format stores atime/ctime where ustar has its prefix; only trust it for POSIX ustar.
      if (magic == "ustar" && h[kMagic.off + 5] == '\0' && !prefix.empty()) name = prefix + "/" + name;
    }
    out->name = name;
    out->offset = header_pos;
    read_exact(&out->data, size, ("member '" + name + "'").c_str());
    return true;
  }
}

}  // namespace recap::io
