// io/lists: brace patterns, JSONL/TSV/CSV/text lists, gzip, column aliases, malformed lines,
// img2dataset keys.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>

#include "io/fileutil.h"
#include "io/lists.h"

using namespace recap::io;

namespace {
std::string temp_dir() {
  char tmpl[] = "/tmp/recap_lists_XXXXXX";
  return std::string(::mkdtemp(tmpl));
}
void write(const std::string& path, const std::string& s) {
  std::ofstream(path, std::ios::binary) << s;
}
void write_gz(const std::string& path, const std::string& s) {
  gzFile g = gzopen(path.c_str(), "wb");
  gzwrite(g, s.data(), static_cast<unsigned>(s.size()));
  gzclose(g);
}
}  // namespace

TEST(Braces, RangesKeepZeroPadding) {
  auto v = expand_braces("lists/{00000..00003}.jsonl");
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0], "lists/00000.jsonl");
  EXPECT_EQ(v[3], "lists/00003.jsonl");
  auto w = expand_braces("a{8..11}b");
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0], "a8b");
  EXPECT_EQ(w[3], "a11b");
  auto d = expand_braces("x{3..1}");
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0], "x3");
  EXPECT_EQ(d[2], "x1");
}

TEST(Braces, AlternativesNestedAndMultiple) {
  auto v = expand_braces("{a,b{1..2}}/{x,y}");
  std::vector<std::string> want{"a/x", "a/y", "b1/x", "b1/y", "b2/x", "b2/y"};
  EXPECT_EQ(v, want);
  EXPECT_EQ(expand_braces("plain.tar"), std::vector<std::string>{"plain.tar"});
  EXPECT_EQ(expand_braces("{single}"), std::vector<std::string>{"{single}"});
}

TEST(Braces, Errors) {
  EXPECT_THROW(expand_braces("a{0..3"), ListError);
  EXPECT_THROW(expand_braces("a}0"), ListError);
  EXPECT_THROW(expand_braces("{0..99999999999}"), ListError);
}

TEST(Lists, JsonlColumnsExtrasAndMalformedLines) {
  auto dir = temp_dir();
  write(dir + "/l.jsonl",
        "{\"url\": \"a.jpg\", \"caption\": \"A cat\", \"key\": \"k1\", \"sha256\": \"ab\", \"n\": 3}\n"
        "\n"
        "{not json}\n"
        "[1,2]\n"
        "{\"caption\": \"no url\"}\n"
        "{\"url\": 5}\n"
        "{\"url\": \"b.png\", \"caption\": null}\r\n");
  auto lf = read_list_file(dir + "/l.jsonl");
  ASSERT_EQ(lf.records.size(), 6u);  // blank line skipped
  EXPECT_EQ(lf.malformed, 4);
  EXPECT_EQ(lf.dir, dir);
  auto& r0 = lf.records[0];
  EXPECT_EQ(r0.line, 1);
  EXPECT_EQ(r0.url, "a.jpg");
  EXPECT_EQ(r0.caption, "A cat");
  EXPECT_EQ(r0.key, "k1");
  EXPECT_EQ(r0.extra["sha256"], "ab");
  EXPECT_EQ(r0.extra["n"], 3);
  EXPECT_FALSE(r0.extra.contains("url"));
  EXPECT_EQ(lf.records[1].line, 3);
  EXPECT_NE(lf.records[1].error.find(dir + "/l.jsonl:3: invalid JSON"), std::string::npos)
      << lf.records[1].error;
  EXPECT_NE(lf.records[2].error.find(":4: a JSON object was expected"), std::string::npos);
  EXPECT_NE(lf.records[3].error.find(":5: no 'url' column"), std::string::npos);
  EXPECT_NE(lf.records[4].error.find(":6: column 'url' is not a non-empty string"), std::string::npos);
  EXPECT_TRUE(lf.records[5].error.empty());
  EXPECT_EQ(lf.records[5].url, "b.png");
  EXPECT_EQ(lf.records[5].caption, "");
  EXPECT_EQ(lf.records[5].line, 7);
}

TEST(Lists, AliasesAndConfiguredColumns) {
  auto dir = temp_dir();
  write(dir + "/d.jsonl", "{\"URL\": \"u\", \"TEXT\": \"t\", \"id\": 12}\n");
  auto lf = read_list_file(dir + "/d.jsonl");
  ASSERT_EQ(lf.records.size(), 1u);
  EXPECT_EQ(lf.records[0].url, "u");
  EXPECT_EQ(lf.records[0].caption, "t");
  EXPECT_EQ(lf.records[0].key, "12");
  ListColumns strict;
  strict.strict = true;
  auto lf2 = read_list_file(dir + "/d.jsonl", strict);
  EXPECT_EQ(lf2.malformed, 1);
  ListColumns custom;
  custom.url = "TEXT";  // any column can be named
  custom.caption = "URL";
  auto lf3 = read_list_file(dir + "/d.jsonl", custom);
  EXPECT_EQ(lf3.records[0].url, "t");
  EXPECT_EQ(lf3.records[0].caption, "u");
}

TEST(Lists, TsvWithHeaderAndGzip) {
  auto dir = temp_dir();
  std::string tsv = "url\tcaption\torg_caption\nx.jpg\thello\told\nbad line\ny.jpg\t\t\n";
  write(dir + "/a.tsv", tsv);
  write_gz(dir + "/a.tsv.gz", tsv);
  for (auto name : {"/a.tsv", "/a.tsv.gz"}) {
    auto lf = read_list_file(dir + name);
    ASSERT_EQ(lf.records.size(), 3u) << name;
    EXPECT_EQ(lf.records[0].url, "x.jpg");
    EXPECT_EQ(lf.records[0].caption, "hello");
    EXPECT_EQ(lf.records[0].extra["org_caption"], "old");
    EXPECT_EQ(lf.records[0].line, 2);
    EXPECT_NE(lf.records[1].error.find(std::string(name) + ":3: expected 3 fields, found 1"),
              std::string::npos)
        << lf.records[1].error;
    EXPECT_EQ(lf.records[2].url, "y.jpg");
    EXPECT_EQ(lf.malformed, 1);
  }
}

TEST(Lists, CsvQuotedAndText) {
  auto dir = temp_dir();
  write(dir + "/c.csv", "caption,url\n\"a, \"\"quoted\"\" cap\",http://h/x.jpg\n\"open,z\n");
  auto lf = read_list_file(dir + "/c.csv");
  ASSERT_EQ(lf.records.size(), 2u);
  EXPECT_EQ(lf.records[0].caption, "a, \"quoted\" cap");
  EXPECT_EQ(lf.records[0].url, "http://h/x.jpg");
  EXPECT_NE(lf.records[1].error.find(":3: unterminated quoted field"), std::string::npos);
  write(dir + "/t.txt", "one.jpg\n  two.jpg  \n\n");
  auto t = read_list_file(dir + "/t.txt");
  ASSERT_EQ(t.records.size(), 2u);
  EXPECT_EQ(t.records[1].url, "two.jpg");
}

TEST(Lists, FileLevelErrors) {
  auto dir = temp_dir();
  EXPECT_THROW(read_list_file(dir + "/missing.jsonl"), ListError);
  write(dir + "/h.tsv", "link_to_image\tcap\nx\ty\n");
  ListColumns strict;
  strict.strict = true;
  try {
    read_list_file(dir + "/h.tsv", strict);
    FAIL();
  } catch (const ListError& e) {
    EXPECT_NE(std::string(e.what()).find("h.tsv:1: header has no 'url' column"), std::string::npos)
        << e.what();
  }
  write(dir + "/x.parquet", "PAR1");
  EXPECT_THROW(read_list_file(dir + "/x.parquet"), ListError);
  // Corrupt gzip: valid magic, garbage after.
  write(dir + "/z.jsonl.gz", std::string("\x1f\x8b\x08\x00garbagegarbage", 18));
  try {
    read_list_file(dir + "/z.jsonl.gz");
    FAIL();
  } catch (const ListError& e) {
    EXPECT_NE(std::string(e.what()).find("gzip"), std::string::npos) << e.what();
  }
}

TEST(Lists, Img2datasetKeys) {
  EXPECT_EQ(oom_of(10000), 4);
  EXPECT_EQ(oom_of(10001), 5);
  EXPECT_EQ(oom_of(1), 0);
  EXPECT_EQ(compute_key(5, 1, 10000), "000010005");
  EXPECT_EQ(compute_key(0, 0, 10000), "000000000");
  EXPECT_EQ(compute_key(7, 3, 100), "0000307");
}
