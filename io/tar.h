// Tar archives as webdataset uses them.
//
// Reading: ustar / GNU / pax archives, sequentially. Regular files are returned; directories,
// links and pax global headers are skipped; long names come from GNU ././@LongLink ('L')
// records or pax 'path' records, sizes from base-256 fields or pax 'size'. Header checksums
// are verified; a truncated or corrupt archive throws TarError naming the file and offset.
//
// Writing: each member is one ustar header (+ a pax extended header first when the name does
// not fit ustar's 100+155 byte name/prefix split or is not ASCII), data, zero padding to 512;
// the archive ends with two zero blocks. GNU tar and Python's tarfile read the result.
// Members are produced as byte strings so a caller can append them to a file it manages
// (the caption pipeline appends to a partial tar and truncates back on resume).
#pragma once
#include <cstdint>
#include <cstdio>
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

class TarReader {
 public:
  explicit TarReader(const std::string& path);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Next regular file; false at the end of the archive. Members larger than
  // max_member_bytes throw TarError (protects against absurd sizes in corrupt headers).
  bool next(TarMember* out);
  void set_max_member_bytes(uint64_t n) { max_member_bytes_ = n; }
  const std::string& path() const { return path_; }

 private:
  bool read_block(char* block);
  void read_exact(std::string* out, uint64_t n, const char* what);
  void skip_padding(uint64_t size);

  std::string path_;
  FILE* f_ = nullptr;
  uint64_t pos_ = 0;
  uint64_t max_member_bytes_ = uint64_t(1) << 32;
};

// Header(s) + data + padding for one regular-file member (mode 0644, given mtime).
std::string tar_member_bytes(const std::string& name, std::string_view data, int64_t mtime);
// The end-of-archive marker: two 512-byte zero blocks.
std::string tar_end_bytes();

// webdataset member naming: "dir/abc.seg.jpg" -> key "dir/abc", extension "seg.jpg" (split
// at the first dot of the last path component). No dot: extension "".
void split_wds_name(const std::string& name, std::string* key, std::string* ext);

}  // namespace recap::io
