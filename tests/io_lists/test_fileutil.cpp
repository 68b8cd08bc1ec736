// io/fileutil: atomic replace, exclusive create (one winner), append files.
#include <dirent.h>
#include <gtest/gtest.h>
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
