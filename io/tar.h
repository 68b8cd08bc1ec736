// Tar archives as webdataset uses them.
//
// Reading: ustar / GNU / pax archives, sequentially, plain or compressed (gzip, bzip2, xz,
// zstd, lz4, lzip, compress: told by their magic bytes, whatever the file name; libarchive
// decompresses, the tar itself is always parsed here). Long names come from GNU ././@LongLink
// ('L') records or pax 'path' records, sizes from base-256 fields or pax 'size'. Header
// checksums are verified.
//
// Hostile input is bounded: every declared length is checked against the bytes the file
// still has before anything is allocated (plain files), data of a compressed tar is read in
// chunks (memory follows the bytes that really arrive), pax headers are at most 1 MiB and GNU
// long names 64 KiB, a pax record whose length is not a plain decimal, is too small, or runs
// past its header is refused, and every loop consumes at least one 512-byte block per pass.
// Problems throw TarError naming the file and the offset of the header concerned ("of the
// decompressed tar" for compressed ones).
//
// Writing: each member is one ustar header (+ a pax extended header first when the name does
// not fit ustar's 100+155 byte name/prefix split or is not ASCII), data, zero padding to 512;
// the archive ends with two zero blocks. GNU tar and Python's tarfile read the result.
// Members are produced as byte strings so a caller can append them to a file it manages
// (the caption pipeline appends to a partial tar and truncates back on resume).
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace recap::io {

struct TarError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TarMember {
  std::string name;
  std::string data;
  uint64_t offset = 0;  // byte offset of the member's first header in the archive
};

// One entry's header, data not yet read.
struct TarEntry {
  std::string name;
  uint64_t size = 0;    // data bytes (0 for links and directories)
  uint64_t offset = 0;  // offset of its first header (pax / long-name records included)
  char type = '0';      // ustar typeflag
  bool regular = false;
};

class TarReader {
 public:
  class Source;  // tar.cpp: a plain file or a decompressed stream

  // Throws TarError when the file cannot be opened or its compression is unreadable.
  explicit TarReader(const std::string& path);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // The next entry (regular file, directory, link, ...; pax and GNU long-name records are
  // consumed, not returned); false at the end of the archive (end blocks or end of file). The
  // previous entry's unread data is skipped (a seek for plain files). Throws TarError.
  bool next_entry(TarEntry* out);
  // The current entry's data (call at most once per entry). Throws TarError when truncated,
  // at once and without allocating when the header declared more than the file has.
  void read_data(std::string* out);
  // Leaves the current entry's data unread (next_entry() does this too). Throws TarError when
  // the data is not all there.
  void skip_data();

  // Next regular file with its data; false at the end of the archive. Members larger than
  // kMaxMemberBytes (4 GiB) throw TarError.
  bool next(TarMember* out);
  const std::string& path() const { return path_; }
  bool compressed() const { return compressed_; }
  // "path: offset N" (plus " of the decompressed tar"), for messages.
  std::string where(uint64_t offset) const;

 private:
  void read_exact(char* buf, uint64_t n, uint64_t header_offset, const std::string& what);
  std::string read_meta(uint64_t size, uint64_t limit, uint64_t header_offset, const char* what);
  void check_exists(uint64_t size, uint64_t header_offset, const std::string& what) const;
  void parse_pax(const std::string& recs, uint64_t header_pos, std::string* path, bool* have_path,
                 uint64_t* size, bool* have_size) const;
  void finish_entry();

  std::string path_;
  std::unique_ptr<Source> src_;
  bool compressed_ = false;
  uint64_t pos_ = 0;  // offset in the (decompressed) tar
  bool ended_ = false;
  bool in_entry_ = false;
  TarEntry cur_;
  uint64_t data_left_ = 0, padding_ = 0;
  std::string missing_data_;  // the current entry declares more data than the file has
  static constexpr uint64_t kMaxMemberBytes = uint64_t(1) << 32;  // next() reads a member into memory
};

// Header(s) + data + padding for one regular-file member (mode 0644, given mtime).
std::string tar_member_bytes(const std::string& name, std::string_view data, int64_t mtime);
// The end-of-archive marker: two 512-byte zero blocks.
std::string tar_end_bytes();

// webdataset member naming (its base_plus_ext): "dir/abc.seg.jpg" -> key "dir/abc", extension
// "seg.jpg": split at the first dot of the last path component. No dot there: the whole name
// is the key and the extension is "" (webdataset skips such members). ".jpg" gives key "".
void split_wds_name(const std::string& name, std::string* key, std::string* ext);

}  // namespace recap::io
