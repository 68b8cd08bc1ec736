#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc >= 2.28)
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace recap::io {

namespace {
std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}
}  // namespace

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(errno_text("cannot open", path));
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw IoError("cannot read " + path + ": is a directory");
  }
  if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      errno = e;
      throw IoError(errno_text("cannot read", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

const char* file_kind_name(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "regular file";
    case S_IFDIR:
      return "directory";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    case S_IFIFO:
      return "FIFO";
    case S_IFSOCK:
      return "socket";
    case S_IFLNK:
      return "symbolic link";
    default:
      return "unknown file type";
  }
}

namespace {
// Closes a descriptor on every path out of read_file_bounded.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string too_large_message(const std::string& path, const std::string& size, uint64_t max_bytes) {
  return path + ": too_large: " + size + ", larger than the size limit of " + std::to_string(max_bytes) +
         " bytes";
}
}  // namespace

std::string read_file_bounded(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It has no
  // effect on regular files, the only kind read below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw BoundedReadException(BoundedReadError::OpenFailed, errno_text("cannot open", path));
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw BoundedReadException(BoundedReadError::OpenFailed, errno_text("cannot stat", path));
  if (!S_ISREG(st.st_mode))
    throw BoundedReadException(BoundedReadError::NotRegularFile,
                               path + ": not a regular file (" + file_kind_name(st.st_mode) + ")");
  const uint64_t size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (size > max_bytes)
    throw BoundedReadException(BoundedReadError::TooLarge,
                               too_large_message(path, std::to_string(size) + " bytes", max_bytes));
  // size + 1: reading one byte past the stat size is how growth is noticed.
  const uint64_t cap = size + 1;
  std::string out;
  out.resize(static_cast<size_t>(cap));
  uint64_t got = 0;
  while (got < cap) {
    const ssize_t n = ::read(fd, out.data() + got, static_cast<size_t>(cap - got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw BoundedReadException(BoundedReadError::ReadFailed, errno_text("cannot read", path));
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  if (got > size)
    throw BoundedReadException(
        BoundedReadError::TooLarge,
        path + ": changed while read: it grew past its size of " + std::to_string(size) + " bytes");
  out.resize(static_cast<size_t>(got));
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty()) {
      if (::mkdir(cur.c_str(), 0777) != 0 && errno != EEXIST)
        throw IoError(errno_text("cannot create directory", cur));
    }
    i = j + 1;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw IoError("cannot create directory " + path + ": a file of that name exists");
}

std::string dir_name(const std::string& path) {
  size_t p = path.find_last_of('/');
  if (p == std::string::npos) return ".";
  if (p == 0) return "/";
  return path.substr(0, p);
}

std::string base_name(const std::string& path) {
  size_t p = path.find_last_of('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}

std::string join_path(const std::string& dir, const std::string& rel) {
  if (rel.empty() || rel[0] == '/' || dir.empty() || dir == ".") return rel;
  if (dir.back() == '/') return dir + rel;
  return dir + "/" + rel;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

std::string temp_path_for(const std::string& final_path) {
  static std::atomic<uint64_t> counter{0};
  // Appended piece by piece: g++ 12 warns (-Wrestrict, a known false positive) on
  // `"literal" + std::string&&`.
  std::string name = ".";
  name += base_name(final_path);
  name += ".tmp.";
  name += std::to_string(::getpid());
  name += ".";
  name += std::to_string(counter.fetch_add(1));
  return join_path(dir_name(final_path), name);
}

namespace {
std::string write_temp(const std::string& final_path, std::string_view data) {
  std::string tmp = temp_path_for(final_path);
  OutFile f(tmp, OutFile::Mode::Truncate);
  try {
    f.write(data);
    f.sync();
    f.close();
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return tmp;
}
}  // namespace

namespace {
// Exclusive publish where the filesystem refuses hard links (some FUSE and object-store
// mounts, SMB): rename with RENAME_NOREPLACE (atomic and exclusive) where the filesystem
// supports it; else a check that nothing is there and a plain rename, which keeps readers
// from ever seeing a partial file but is exclusive only among writers serialised otherwise
// (the caption engine publishes under its shard lock).
bool publish_without_link(const std::string& temp_path, const std::string& final_path) {
  if (::renameat2(AT_FDCWD, temp_path.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) != 0) {
    const int e = errno;
    struct stat st {};
    if (e == EEXIST || ::stat(final_path.c_str(), &st) == 0) {
      ::unlink(temp_path.c_str());
      return false;
    }
    if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
      const int e2 = errno;
      ::unlink(temp_path.c_str());
      errno = e2;
      throw IoError(errno_text("cannot create", final_path));
    }
  }
  fsync_dir(dir_name(final_path));
  return true;
}
}  // namespace

bool publish_file(const std::string& temp_path, const std::string& final_path, bool exclusive) {
  if (!exclusive) {
    if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
      int e = errno;
      ::unlink(temp_path.c_str());
      errno = e;
      throw IoError(errno_text("cannot rename " + temp_path + " to", final_path));
    }
    fsync_dir(dir_name(final_path));
    return true;
  }
  if (::link(temp_path.c_str(), final_path.c_str()) != 0) {
    int e = errno;
    if (e == EEXIST) {
      ::unlink(temp_path.c_str());
      return false;
    }
    if (e == EPERM || e == ENOTSUP || e == EOPNOTSUPP || e == ENOSYS || e == EMLINK || e == EXDEV)
      return publish_without_link(temp_path, final_path);
    ::unlink(temp_path.c_str());
    errno = e;
    throw IoError(errno_text("cannot create", final_path));
  }
  ::unlink(temp_path.c_str());
  fsync_dir(dir_name(final_path));
  return true;
}

void atomic_write(const std::string& path, std::string_view data) {
  publish_file(write_temp(path, data), path, false);
}

bool exclusive_write(const std::string& path, std::string_view data) {
  if (file_exists(path)) return false;
  return publish_file(write_temp(path, data), path, true);
}

OutFile::OutFile(const std::string& path, Mode mode) : path_(path) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (mode == Mode::Append ? O_APPEND : O_TRUNC);
  fd_ = ::open(path.c_str(), flags, 0666);
  if (fd_ < 0) throw IoError(errno_text("cannot open for writing", path));
  if (mode == Mode::Append) {
    struct stat st {};
    if (::fstat(fd_, &st) == 0) written_ = static_cast<uint64_t>(st.st_size);
  }
}

OutFile::~OutFile() {
  if (fd_ >= 0) ::close(fd_);
}

OutFile::OutFile(OutFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)), written_(o.written_) {
  o.fd_ = -1;
}

OutFile& OutFile::operator=(OutFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    written_ = o.written_;
    o.fd_ = -1;
  }
  return *this;
}

void OutFile::write(const void* data, size_t n) {
  if (fd_ < 0) throw IoError("write to closed file " + path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(errno_text("cannot write", path_));
    }
    p += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

void OutFile::sync() {
  if (fd_ >= 0 && ::fsync(fd_) != 0 && errno != EINVAL) throw IoError(errno_text("cannot fsync", path_));
}

void OutFile::close() {
  if (fd_ >= 0) {
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) throw IoError(errno_text("cannot close", path_));
  }
}

}  // namespace recap::io
