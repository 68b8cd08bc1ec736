// io/fileutil: atomic replace, exclusive create (one winner), append files, bounded reads of
// files that data names.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "io/fileutil.h"

using namespace recap::io;

namespace {
std::string temp_dir() {
  char tmpl[] = "/tmp/recap_fu_XXXXXX";
  return std::string(::mkdtemp(tmpl));
}
int count_entries(const std::string& dir) {
  int n = 0;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  closedir(d);
  return n;
}
}  // namespace

TEST(FileUtil, AtomicWriteReplacesAndLeavesNoTemp) {
  auto dir = temp_dir();
  atomic_write(dir + "/a.json", "one");
  atomic_write(dir + "/a.json", "two");
  EXPECT_EQ(read_file(dir + "/a.json"), "two");
  EXPECT_EQ(count_entries(dir), 1);
}

TEST(FileUtil, ExclusiveWriteHasOneWinner) {
  auto dir = temp_dir();
  int wins = 0;
  std::vector<std::thread> ts;
  std::atomic<int> w{0};
  for (int i = 0; i < 8; ++i)
    ts.emplace_back([&, i] {
      if (exclusive_write(dir + "/s.json", "writer " + std::to_string(i))) w++;
    });
  for (auto& t : ts) t.join();
  wins = w.load();
  EXPECT_EQ(wins, 1);
  EXPECT_EQ(count_entries(dir), 1);
  EXPECT_EQ(read_file(dir + "/s.json").rfind("writer ", 0), 0u);
  EXPECT_FALSE(exclusive_write(dir + "/s.json", "late"));
}

TEST(FileUtil, AppendKeepsContentAndCountsBytes) {
  auto dir = temp_dir();
  {
    OutFile f(dir + "/log", OutFile::Mode::Append);
    f.write("abc");
  }
  OutFile g(dir + "/log", OutFile::Mode::Append);
  EXPECT_EQ(g.bytes_written(), 3u);
  g.write("de");
  g.sync();
  g.close();
  EXPECT_EQ(read_file(dir + "/log"), "abcde");
}

TEST(FileUtil, ErrorsNameThePath) {
  try {
    read_file("/nonexistent/dir/x");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x"), std::string::npos);
  }
  auto dir = temp_dir();
  make_dirs(dir + "/a/b/c");
  EXPECT_TRUE(file_exists(dir + "/a/b/c"));
  atomic_write(dir + "/f", "x");
  EXPECT_THROW(make_dirs(dir + "/f/g"), IoError);
  EXPECT_EQ(dir_name("a/b.txt"), "a");
  EXPECT_EQ(dir_name("b.txt"), ".");
  EXPECT_EQ(base_name("a/b.txt"), "b.txt");
  EXPECT_EQ(join_path("lists", "img/x.jpg"), "lists/img/x.jpg");
  EXPECT_EQ(join_path("lists", "/abs.jpg"), "/abs.jpg");
}

// read_file_bounded: the size is known before a byte is read; only regular files are read;
// a FIFO never blocks; messages name the path and the kind, never content.
TEST(FileUtil, ReadFileBoundedRefusesWhatIsNotABoundedRegularFile) {
  const std::string d = temp_dir();
  atomic_write(d + "/ten", "0123456789");
  EXPECT_EQ(read_file_bounded(d + "/ten", 10), "0123456789");  // exactly the limit
  EXPECT_EQ(read_file_bounded(d + "/ten", 1000), "0123456789");
  atomic_write(d + "/empty", "");
  EXPECT_EQ(read_file_bounded(d + "/empty", 10), "");

  auto refused = [](const std::string& path, uint64_t max, BoundedReadError kind, const std::string& msg) {
    SCOPED_TRACE(path);
    try {
      read_file_bounded(path, max);
      ADD_FAILURE() << "not refused";
    } catch (const BoundedReadException& e) {
      EXPECT_EQ(e.kind, kind);
      EXPECT_EQ(std::string(e.what()), msg);
    }
  };
  refused(d + "/ten", 9, BoundedReadError::TooLarge,
          d + "/ten: too_large: 10 bytes, larger than the size limit of 9 bytes");
  refused("/dev/zero", 1 << 20, BoundedReadError::NotRegularFile,
          "/dev/zero: not a regular file (character device)");
  refused("/dev/null", 1 << 20, BoundedReadError::NotRegularFile,
          "/dev/null: not a regular file (character device)");
  refused(d, 1 << 20, BoundedReadError::NotRegularFile, d + ": not a regular file (directory)");
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0600), 0);
  refused(d + "/fifo", 1 << 20, BoundedReadError::NotRegularFile, d + "/fifo: not a regular file (FIFO)");
  refused(d + "/missing", 1 << 20, BoundedReadError::OpenFailed,
          "cannot open " + d + "/missing: No such file or directory");
  // A 70 GiB sparse file: refused from its size alone (reading it would take minutes and
  // allocating it would fail).
  { OutFile f(d + "/sparse", OutFile::Mode::Truncate); }
  ASSERT_EQ(::truncate((d + "/sparse").c_str(), 70ll << 30), 0);
  refused(d + "/sparse", 64ull << 20, BoundedReadError::TooLarge,
          d + "/sparse: too_large: 75161927680 bytes, larger than the size limit of 67108864 bytes");
  // A file that grows past its fstat size while read is refused: /proc files are regular with
  // a size of 0 and content behind it.
  refused("/proc/self/status", 1 << 20, BoundedReadError::TooLarge,
          "/proc/self/status: changed while read: it grew past its size of 0 bytes");
  // Symlinks are followed (confinement is the caller's business).
  ASSERT_EQ(::symlink((d + "/ten").c_str(), (d + "/link").c_str()), 0);
  EXPECT_EQ(read_file_bounded(d + "/link", 100), "0123456789");
  EXPECT_STREQ(file_kind_name(S_IFSOCK), "socket");
  EXPECT_STREQ(file_kind_name(S_IFBLK), "block device");
}
