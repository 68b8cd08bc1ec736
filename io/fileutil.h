// Durable file operations for outputs that must never be seen half-written: write to a
// temp name in the same directory, fsync, then rename (or link for an exclusive create), and
// fsync the directory so the rename survives a crash.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace recap::io {

struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whole-file read; throws IoError naming the path. For trusted files only (configs, lists the
// user named, test fixtures): it reads whatever is there. Anything named by data (an image path
// in a list) goes through read_file_bounded.
std::string read_file(const std::string& path);

// Why read_file_bounded refused a path.
enum class BoundedReadError {
  OpenFailed,      // open() failed (missing, permission, symlink loop, ...)
  NotRegularFile,  // a device, FIFO, socket or directory
  TooLarge,        // more than max_bytes (by fstat size, or grew past it while read)
  ReadFailed,      // read() failed
};

struct BoundedReadException : IoError {
  BoundedReadException(BoundedReadError kind, const std::string& msg) : IoError(msg), kind(kind) {}
  BoundedReadError kind;
};

// "regular file", "directory", "character device", "block device", "FIFO", "socket",
// "symbolic link" or "unknown file type" for a stat mode.
const char* file_kind_name(unsigned mode);

// Reads a file that data (not the user) named, with every byte bounded before it is read:
// opened O_RDONLY|O_NONBLOCK|O_CLOEXEC (a FIFO never blocks the open), fstat'ed, refused unless
// it is a regular file, refused when its size is over `max_bytes` before any allocation, and
// read at most size + 1 bytes (a file that grows while read is refused as TooLarge; one that
// shrinks yields what is there). Messages name the path and what is wrong, never content:
//   "<path>: not a regular file (character device)"
//   "<path>: too_large: 73400320 bytes, larger than the size limit of 67108864 bytes"
// Throws BoundedReadException.
std::string read_file_bounded(const std::string& path, uint64_t max_bytes);
bool file_exists(const std::string& path);
// Creates the directory and its parents (like mkdir -p). Throws IoError.
void make_dirs(const std::string& path);
// Directory part of a path ("." when there is none) and the last component.
std::string dir_name(const std::string& path);
std::string base_name(const std::string& path);
// `rel` resolved against directory `dir` unless it is absolute.
std::string join_path(const std::string& dir, const std::string& rel);

// fsync of a directory (makes a rename/link inside it durable). Errors are ignored on
// filesystems that do not support it.
void fsync_dir(const std::string& dir);

// A unique temp name beside `final_path`: "<dir>/.<base>.tmp.<pid>.<counter>".
std::string temp_path_for(const std::string& final_path);

// Writes `data` to a temp file, fsyncs, renames over `path` (replacing it), fsyncs the dir.
void atomic_write(const std::string& path, std::string_view data);

// Like atomic_write but fails (returns false, leaves the existing file alone) when `path`
// already exists: the data goes to a temp name and is hard-linked to `path` (link() is
// atomic and exclusive), then the temp name is removed. Two writers racing for the same
// final name: exactly one wins. Where the filesystem refuses hard links: rename with
// RENAME_NOREPLACE, else check-then-rename (atomic for readers; exclusive only among writers
// serialised by a lock, as the caption engine's are).
bool exclusive_write(const std::string& path, std::string_view data);

// Publishes an already written and closed temp file under `final_path`.
//   exclusive=false: rename (replaces); exclusive=true: link + unlink, returns false if
//   final_path exists (temp is removed in that case too).
bool publish_file(const std::string& temp_path, const std::string& final_path, bool exclusive);

// A file written sequentially through a descriptor, with explicit flush+fsync. Used for the
// tar being built and the append-only partial logs.
class OutFile {
 public:
  OutFile() = default;
  // mode: truncate (new file) or append (keeps contents).
  enum class Mode { Truncate, Append };
  OutFile(const std::string& path, Mode mode);
  ~OutFile();
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  OutFile(OutFile&& o) noexcept;
  OutFile& operator=(OutFile&& o) noexcept;

  const std::string& path() const { return path_; }
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void sync();  // fsync
  void close();
  uint64_t bytes_written() const { return written_; }

 private:
  int fd_ = -1;
  std::string path_;
  uint64_t written_ = 0;
};

}  // namespace recap::io
