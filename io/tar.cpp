#include "io/tar.h"

#include <archive.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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
  // A ustar or pax name would be cut at the NUL: refused, never written wrong. (A reader may
  // yield such a name from a pax path or GNU long name; the caption pipeline fails that
  // sample on its key, io::key_problem, and never writes it.)
  if (name.find('\0') != std::string::npos) throw TarError("tar member name with a NUL byte");
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

// Where the tar bytes come from. read() returns fewer bytes than asked only at the end of the
// data; skip() is only called for bytes the caller knows exist (file) or reads them (stream).
class TarReader::Source {
 public:
  virtual ~Source() = default;
  virtual size_t read(char* buf, size_t n) = 0;
  // Discards n bytes; returns how many were there (fewer at the end of the data).
  virtual uint64_t skip(uint64_t n) = 0;
  // Bytes left, or -1 when unknown (a decompressed stream).
  virtual int64_t remaining() const = 0;
};

namespace {

// A plain tar file: its size bounds every declared length, skips are seeks.
class FileSource : public TarReader::Source {
 public:
  FileSource(int fd, const std::string& path) : fd_(fd), path_(path) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw TarError("cannot stat " + path + ": " + std::strerror(e));
    }
    // A pipe or device: sizes unknown, skips read (like a decompressed stream).
    sized_ = S_ISREG(st.st_mode);
    size_ = sized_ ? static_cast<uint64_t>(st.st_size) : 0;
  }
  ~FileSource() override { ::close(fd_); }
  size_t read(char* buf, size_t n) override {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, buf + got, n - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw TarError("cannot read " + path_ + ": " + std::strerror(errno));
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    pos_ += got;
    return got;
  }
  uint64_t skip(uint64_t n) override {
    if (!sized_) {
      char buf[1 << 16];
      uint64_t done = 0;
      while (done < n) {
        const size_t got = read(buf, static_cast<size_t>(std::min<uint64_t>(sizeof buf, n - done)));
        if (got == 0) break;
        done += got;
      }
      return done;
    }
    const uint64_t step = std::min<uint64_t>(n, size_ - std::min(pos_, size_));
    if (::lseek(fd_, static_cast<off_t>(pos_ + step), SEEK_SET) < 0)
      throw TarError("cannot seek in " + path_ + ": " + std::strerror(errno));
    pos_ += step;
    return step;
  }
  int64_t remaining() const override {
    return sized_ ? static_cast<int64_t>(size_ - std::min(pos_, size_)) : -1;
  }

 private:
  int fd_;
  bool sized_ = true;
  std::string path_;
  uint64_t size_ = 0, pos_ = 0;
};

// A compressed tar (gzip, bzip2, xz, zstd, lz4, lzip, compress): libarchive only decompresses
// (its "raw" format: the whole decompressed stream as one entry); the tar is parsed here, by
// the same code as plain tars. Nothing is known about sizes in advance, so data is read in
// chunks and skips read and discard: memory stays bounded, time is linear.
class ArchiveSource : public TarReader::Source {
 public:
  explicit ArchiveSource(const std::string& path) : path_(path) {
    a_ = archive_read_new();
    if (!a_) throw TarError(path + ": cannot start libarchive");
    // A constructor that throws runs no destructor: free the reader here (found by fuzz_tar's
    // leak check on a corrupt compressed header).
    try {
      archive_read_support_filter_all(a_);
      archive_read_support_format_raw(a_);
      if (archive_read_open_filename(a_, path.c_str(), 1 << 16) != ARCHIVE_OK) fail("cannot open");
      archive_entry* entry = nullptr;
      const int rc = archive_read_next_header(a_, &entry);
      if (rc == ARCHIVE_EOF) {
        eof_ = true;
      } else if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        fail("cannot decompress");
      }
    } catch (...) {
      archive_read_free(a_);
      a_ = nullptr;
      throw;
    }
  }
  ~ArchiveSource() override {
    if (a_) archive_read_free(a_);
  }
  size_t read(char* buf, size_t n) override {
    size_t got = 0;
    while (got < n && !eof_) {
      const la_ssize_t r = archive_read_data(a_, buf + got, n - got);
      if (r < 0) fail("corrupt compressed data");
      if (r == 0) eof_ = true;
      got += static_cast<size_t>(r);
    }
    return got;
  }
  uint64_t skip(uint64_t n) override {
    char buf[1 << 16];
    uint64_t done = 0;
    while (done < n) {
      const size_t got = read(buf, static_cast<size_t>(std::min<uint64_t>(sizeof buf, n - done)));
      if (got == 0) break;
      done += got;
    }
    return done;
  }
  int64_t remaining() const override { return -1; }

 private:
  [[noreturn]] void fail(const char* what) {
    const char* msg = archive_error_string(a_);
    throw TarError(path_ + ": " + what + " (" + (msg ? msg : "libarchive error") + ")");
  }
  std::string path_;
  archive* a_ = nullptr;
  bool eof_ = false;
};

// Compressed formats are told by their magic bytes; a file with "ustar" at 257 is a plain tar
// whatever its first bytes (a member name may start like a magic number).
bool looks_compressed(const unsigned char* b, size_t n) {
  if (n >= 262 && std::memcmp(b + 257, "ustar", 5) == 0) return false;
  auto starts = [&](const char* m, size_t len) { return n >= len && std::memcmp(b, m, len) == 0; };
  return starts("\x1f\x8b", 2) || starts("\x1f\x9d", 2) || starts("BZh", 3) ||
         starts(
             "\xfd"
             "7zXZ\0",
             6) ||
         starts("\x28\xb5\x2f\xfd", 4) || starts("\x04\x22\x4d\x18", 4) || starts("LZIP", 4);
}

constexpr uint64_t kMaxPaxHeaderBytes = 1 << 20;  // far above any real pax header
constexpr uint64_t kMaxGnuNameBytes = 1 << 16;    // GNU 'L'/'K' long names

// Decimal digits only, no sign, no overflow.
bool parse_decimal(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

}  // namespace

TarReader::TarReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw TarError("cannot open " + path + ": " + std::strerror(errno));
  unsigned char head[kBlock];
  const ssize_t n = ::pread(fd, head, sizeof head, 0);
  if (n < 0) {
    const int e = errno;
    ::close(fd);
    throw TarError("cannot read " + path + ": " + std::strerror(e));
  }
  if (looks_compressed(head, static_cast<size_t>(n))) {
    ::close(fd);
    src_ = std::make_unique<ArchiveSource>(path);
    compressed_ = true;
  } else {
    src_ = std::make_unique<FileSource>(fd, path);  // owns fd from here (closes it if it throws)
  }
}

TarReader::~TarReader() = default;

std::string TarReader::where(uint64_t offset) const {
  return path_ + ": offset " + std::to_string(offset) + (compressed_ ? " of the decompressed tar" : "");
}

void TarReader::read_exact(char* buf, uint64_t n, uint64_t header_offset, const std::string& what) {
  if (src_->read(buf, static_cast<size_t>(n)) != n)
    throw TarError(where(header_offset) + ": tar truncated in " + what);
  pos_ += n;
}

void TarReader::finish_entry() {
  if (!in_entry_) return;
  in_entry_ = false;
  if (!missing_data_.empty()) throw TarError(missing_data_);
  const uint64_t n = data_left_ + padding_;
  data_left_ = padding_ = 0;
  if (src_->skip(n) != n)
    throw TarError(where(cur_.offset) + ": tar truncated in member '" + cur_.name + "'");
  pos_ += n;
}

// The data of a metadata record (pax, GNU long name), bounded by `limit`.
std::string TarReader::read_meta(uint64_t size, uint64_t limit, uint64_t header_offset, const char* what) {
  if (size > limit)
    throw TarError(where(header_offset) + ": " + what + " of " + std::to_string(size) + " bytes (at most " +
                   std::to_string(limit) + ")");
  check_exists(size, header_offset, what);
  std::string data(size, '\0');
  read_exact(data.data(), size, header_offset, what);
  const uint64_t pad = (kBlock - size % kBlock) % kBlock;
  if (src_->skip(pad) != pad) throw TarError(where(header_offset) + ": tar truncated in " + what);
  pos_ += pad;
  return data;
}

void TarReader::check_exists(uint64_t size, uint64_t header_offset, const std::string& what) const {
  const int64_t rem = src_->remaining();
  if (rem >= 0 && size > static_cast<uint64_t>(rem))
    throw TarError(where(header_offset) + ": " + what + " declares " + std::to_string(size) +
                   " bytes but the file has " + std::to_string(rem) + " left (truncated or corrupt tar)");
}

bool TarReader::next_entry(TarEntry* out) {
  finish_entry();
  if (ended_) return false;
  std::string long_name, pax_path;
  bool have_long_name = false, have_pax_path = false, have_pax_size = false;
  uint64_t pax_size = 0;
  char h[kBlock];
  const uint64_t entry_start = pos_;
  // Each pass consumes one 512-byte header (and its data) or returns: the loop always ends.
  for (;;) {
    const uint64_t header_pos = pos_;
    const size_t got = src_->read(h, kBlock);
    if (got == 0) {  // EOF without end blocks: tolerated (many writers), unless mid-entry
      if (have_long_name || have_pax_path || have_pax_size)
        throw TarError(where(header_pos) + ": tar ends after a long-name or pax header, before its member");
      ended_ = true;
      return false;
    }
    if (got != kBlock) throw TarError(where(header_pos) + ": truncated tar header");
    pos_ += kBlock;
    if (all_zero(h)) {  // end-of-archive marker
      ended_ = true;
      return false;
    }
    if (!checksum_ok(h))
      throw TarError(where(header_pos) + ": bad tar header checksum (not a tar file or corrupt)");
    uint64_t size = 0;
    if (!parse_number(h, kSize, &size)) throw TarError(where(header_pos) + ": bad size field");
    const char type = h[kType.off];
    if (type == 'L' || type == 'K') {  // GNU long name / long link name for the next entry
      std::string v = read_meta(size, kMaxGnuNameBytes, header_pos, "GNU long name");
      while (!v.empty() && v.back() == '\0') v.pop_back();
      if (type == 'L') {
        long_name = std::move(v);
        have_long_name = true;
      }
      continue;
    }
    if (type == 'x' || type == 'g') {
      const std::string recs = read_meta(size, kMaxPaxHeaderBytes, header_pos, "pax header");
      if (type == 'g') continue;  // global defaults: nothing we use
      parse_pax(recs, header_pos, &pax_path, &have_pax_path, &pax_size, &have_pax_size);
      continue;
    }
    if (have_pax_size) size = pax_size;
    TarEntry e;
    e.offset = entry_start;
    e.type = type;
    e.regular = type == '0' || type == '\0' || type == '7';
    if (have_pax_path) {
      e.name = pax_path;
    } else if (have_long_name) {
      e.name = long_name;
    } else {
      e.name = field_str(h, kName);
      const std::string magic(h + kMagic.off, 5);
      const std::string prefix = magic == "ustar" ? field_str(h, kPrefix) : "";
      // GNU format stores atime/ctime where ustar has its prefix; only trust it for POSIX ustar.
      if (magic == "ustar" && h[kMagic.off + 5] == '\0' && !prefix.empty()) e.name = prefix + "/" + e.name;
    }
    // Links and directories carry no data whatever their size field says.
    e.size = (type == '1' || type == '2' || type == '5') ? 0 : size;
    // A size beyond the file is reported when the data is read or skipped, not here: the
    // caller first learns the entry's name (a sample before it may be complete).
    const int64_t rem = src_->remaining();
    missing_data_.clear();
    if (rem >= 0 && e.size > static_cast<uint64_t>(rem))
      missing_data_ = where(e.offset) + ": member '" + e.name + "' declares " + std::to_string(e.size) +
                      " bytes but the file has " + std::to_string(rem) + " left (truncated or corrupt tar)";
    cur_ = e;
    in_entry_ = true;
    data_left_ = e.size;
    padding_ = (kBlock - e.size % kBlock) % kBlock;
    *out = std::move(e);
    return true;
  }
}

void TarReader::parse_pax(const std::string& recs, uint64_t header_pos, std::string* path, bool* have_path,
                          uint64_t* size, bool* have_size) const {
  // Records "LEN key=value\n", LEN counting the whole record. Every record advances p by its
  // LEN, which is at least 4 ("4 k=\n" is the smallest), so the loop always ends.
  size_t p = 0;
  while (p < recs.size()) {
    if (recs.find_first_not_of('\0', p) == std::string::npos) break;  // NUL padding after the records
    const size_t sp = recs.find(' ', p);
    uint64_t len = 0;
    const std::string bad = where(header_pos) + ": malformed pax record at byte " + std::to_string(p) + ": ";
    if (sp == std::string::npos || !parse_decimal(std::string_view(recs).substr(p, sp - p), &len))
      throw TarError(bad + "its length is not a decimal number");
    if (len < sp - p + 4) throw TarError(bad + "length " + std::to_string(len) + " is too small");
    if (len > recs.size() - p)
      throw TarError(bad + "length " + std::to_string(len) + " runs past the header's " +
                     std::to_string(recs.size()) + " bytes");
    if (recs[p + len - 1] != '\n') throw TarError(bad + "it does not end with a newline");
    const std::string_view rec(recs.data() + sp + 1, p + len - 1 - (sp + 1));
    const size_t eq = rec.find('=');
    if (eq == std::string_view::npos) throw TarError(bad + "no '=' in it");
    const std::string_view k = rec.substr(0, eq), v = rec.substr(eq + 1);
    if (k == "path") {
      *path = std::string(v);
      *have_path = true;
    } else if (k == "size") {
      if (!parse_decimal(v, size))
        throw TarError(bad + "size '" + std::string(v.substr(0, 40)) + "' is not a size");
      *have_size = true;
    }
    p += len;
  }
}

void TarReader::read_data(std::string* out) {
  if (!in_entry_) throw std::logic_error("TarReader::read_data without a current entry");
  out->clear();
  if (!missing_data_.empty()) {
    in_entry_ = false;
    throw TarError(missing_data_);
  }
  // Grown as bytes arrive: a stream's declared size is not trusted with an allocation.
  if (src_->remaining() >= 0) out->reserve(data_left_);
  char buf[1 << 16];
  while (data_left_ > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(sizeof buf, data_left_));
    const size_t got = src_->read(buf, want);
    out->append(buf, got);
    pos_ += got;
    data_left_ -= got;
    if (got != want) throw TarError(where(cur_.offset) + ": tar truncated in member '" + cur_.name + "'");
  }
  finish_entry();
}

void TarReader::skip_data() {
  finish_entry();
}

bool TarReader::next(TarMember* out) {
  TarEntry e;
  while (next_entry(&e)) {
    if (!e.regular) continue;
    if (e.size > kMaxMemberBytes)
      throw TarError(where(e.offset) + ": member '" + e.name + "' of " + std::to_string(e.size) +
                     " bytes exceeds the limit of " + std::to_string(kMaxMemberBytes));
    out->name = std::move(e.name);
    out->offset = e.offset;
    read_data(&out->data);
    return true;
  }
  return false;
}

}  // namespace recap::io
