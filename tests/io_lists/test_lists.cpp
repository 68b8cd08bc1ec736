// io/lists: brace and glob patterns, JSONL/JSON-array/TSV/CSV/text lists (RFC 4180 records),
// gzip streamed in bounded memory, column aliases, malformed records, img2dataset keys; the
// planner's record counter (engine::count_list_records) agreeing with the reader on every input.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <new>

#include "engine/sources.h"
#include "io/fileutil.h"
#include "io/lists.h"

using namespace recap::io;
using recap::engine::count_list_records;
using recap::engine::InputError;

// Every operator new/delete of this test binary goes through a size header so that the bytes
// live at any moment are known: the streamed-gzip test checks that reading a list with a
// 50 MB line never holds anything near that size. (Aligned new/delete keep the defaults.)
namespace {
struct alignas(std::max_align_t) AllocHeader {
  size_t size;
};
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
std::atomic<size_t> g_largest_alloc{0};

void* counted_alloc(size_t n) noexcept {
  void* p = std::malloc(n + sizeof(AllocHeader));
  if (!p) return nullptr;
  static_cast<AllocHeader*>(p)->size = n;
  const int64_t live = g_live_bytes.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
  int64_t peak = g_peak_bytes.load();
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
  size_t largest = g_largest_alloc.load();
  while (n > largest && !g_largest_alloc.compare_exchange_weak(largest, n)) {
  }
  return static_cast<char*>(p) + sizeof(AllocHeader);
}
void counted_free(void* p) noexcept {
  if (!p) return;
  auto* h = reinterpret_cast<AllocHeader*>(static_cast<char*>(p) - sizeof(AllocHeader));
  g_live_bytes.fetch_sub(static_cast<int64_t>(h->size));
  std::free(h);
}
void* counted_alloc_or_throw(size_t n) {
  void* p = counted_alloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(size_t n) {
  return counted_alloc_or_throw(n);
}
void* operator new[](size_t n) {
  return counted_alloc_or_throw(n);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void operator delete(void* p) noexcept {
  counted_free(p);
}
void operator delete[](void* p) noexcept {
  counted_free(p);
}
void operator delete(void* p, size_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, size_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  counted_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  counted_free(p);
}

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

TEST(Braces, CountWithoutBuildingTheNames) {
  EXPECT_EQ(count_braces("lists/{00000..00099}.jsonl"), 100u);
  EXPECT_EQ(count_braces("{a,b{1..2}}/{x,y}"), expand_braces("{a,b{1..2}}/{x,y}").size());
  EXPECT_EQ(count_braces("plain"), 1u);
  EXPECT_EQ(count_braces("{0..499999}{x,y}"), 1000000u);
  EXPECT_THROW(count_braces("{a,{0..499999}}{x,y}"), ListError);  // 1,000,002
  EXPECT_THROW(count_braces("{0..1000000}"), ListError);
  EXPECT_THROW(count_braces("a{0..3"), ListError);
}

TEST(Braces, Errors) {
  EXPECT_THROW(expand_braces("a{0..3"), ListError);
  EXPECT_THROW(expand_braces("a}0"), ListError);
  EXPECT_THROW(expand_braces("{0..99999999999}"), ListError);
  // Bounded as a whole: each alternative under the limit, together over it (fuzz_braces found
  // 9 million names in one group taking seconds).
  EXPECT_EQ(expand_braces("{0..999999}").size(), 1000000u);
  try {
    expand_braces("{a,{0..700000},{0..700000}}");
    ADD_FAILURE() << "no error";
  } catch (const ListError& e) {
    EXPECT_NE(std::string(e.what()).find("names more than 1,000,000 items"), std::string::npos) << e.what();
  }
  EXPECT_THROW(expand_braces("{0..1000000}"), ListError);
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
  EXPECT_EQ(lf.records[1].error,
            dir + "/c.csv:3: unterminated quoted field (the record runs to the end of the file)");
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

// ---------------------------------------------------------------- RFC 4180, JSON arrays

namespace {

struct ListCase {
  std::string name;  // file name: its extension picks the format
  std::string text;
  size_t records;  // what a correct reader finds
  int64_t malformed;
};

// Every record-splitting rule, including malformed inputs.
const std::vector<ListCase>& list_cases() {
  static const std::vector<ListCase> v{
      {"comma.csv", "url,caption\nx.jpg,\"a, b\"\ny.jpg,c\n", 2, 0},
      {"doubled.csv", "url,caption\nx.jpg,\"he said \"\"hi\"\"\"\n", 1, 0},
      {"newline.csv", "url,caption,key\nx.jpg,\"line one\nline two, more\",k1\ny.jpg,plain,k2\n", 2, 0},
      {"newlines_only.csv", "url,caption\nx.jpg,\"\n\n\n\"\ny.jpg,z", 2, 0},
      {"crlf.csv", "url,caption\r\nx.jpg,\"a\r\nb\"\r\ny.jpg,c\r\n", 2, 0},
      {"bom.csv", "\xEF\xBB\xBFurl,caption\nx.jpg,c\n", 1, 0},
      {"quoted_header.csv", "\"url\",\"cap\ntion\"\nx.jpg,c\n", 1, 0},
      {"unterminated.csv", "url,caption\nx.jpg,ok\ny.jpg,\"open\nz.jpg,more\n\nw.jpg,last\n", 2, 1},
      {"after_quote.csv", "url,caption\nx.jpg,\"a\"b\ny.jpg,c\n", 2, 1},
      {"blank_and_quoted_empty.csv", "url\n\n  \n\"\"\nx.jpg\n", 2, 1},
      {"literal_quote.csv", "url,caption\nx.jpg,say \"hi\" now\n", 1, 0},
      {"cr_only.csv", "url,caption\nx.jpg,a\rb\n\r\n \r\n", 1, 0},
      {"tab.tsv", "url\tcaption\nx.jpg\t\"tab\there\nand a newline\"\ny.jpg\tsay \"hi\"\n", 2, 0},
      {"bom_crlf.tsv", "\xEF\xBB\xBFurl\tcaption\r\nx.jpg\tc\r\n\r\n", 1, 0},
      {"unterminated.tsv", "url\tcaption\nx.jpg\t\"open\ny.jpg\tz\n", 1, 1},
      {"bom.jsonl", "\xEF\xBB\xBF{\"url\": \"a.jpg\"}\r\n{\"url\": \"b.jpg\"}\n", 2, 0},
      {"bom.txt",
       "\xEF\xBB\xBF"
       "a.jpg\n\nb.jpg",
       2, 0},
      {"array.json",
       "\n[\n  {\"url\": \"a.jpg\", \"caption\": \"x, ] }\"},\n  {\"url\": \"b.jpg\", \"key\": \"k\"}\n]\n",
       2, 0},
      {"array_one_line.json", "[{\"url\":\"a.jpg\"},{\"url\":\"b.jpg\",\"n\":[1,{\"m\":2}]}]", 2, 0},
      {"array_bad_elements.json", "\xEF\xBB\xBF[{\"url\": \"a.jpg\"}, 5, {\"url\": x}, {\"caption\": \"c\"}]",
       4, 3},
      {"array_empty.json", " [ ] \n", 0, 0},
      {"lines.json", "{\"url\": \"a.jpg\"}\n[1]\n{\"url\": \"b.jpg\"}\n", 3, 1},
      {"empty.json", "", 0, 0},
  };
  return v;
}

}  // namespace

TEST(ListRecords, ReaderAndCounterAgreeOnEveryCase) {
  auto dir = temp_dir();
  for (auto& c : list_cases()) {
    for (bool gz : {false, true}) {
      const std::string path = dir + "/" + c.name + (gz ? ".gz" : "");
      SCOPED_TRACE(path);
      if (gz)
        write_gz(path, c.text);
      else
        write(path, c.text);
      auto lf = read_list_file(path);
      EXPECT_EQ(lf.records.size(), c.records);
      EXPECT_EQ(lf.malformed, c.malformed);
      EXPECT_EQ(count_list_records(path, {}), static_cast<int64_t>(lf.records.size()));
    }
  }
}

TEST(ListRecords, CsvFieldsAndLinesAsACorrectReaderGivesThem) {
  auto dir = temp_dir();
  auto read = [&](const std::string& name) {
    for (auto& c : list_cases())
      if (c.name == name) write(dir + "/" + name, c.text);
    return read_list_file(dir + "/" + name);
  };
  auto comma = read("comma.csv");
  EXPECT_EQ(comma.records[0].caption, "a, b");
  EXPECT_EQ(comma.records[1].line, 3);
  EXPECT_EQ(read("doubled.csv").records[0].caption, "he said \"hi\"");
  auto nl = read("newline.csv");
  ASSERT_EQ(nl.records.size(), 2u);
  EXPECT_EQ(nl.records[0].caption, "line one\nline two, more");
  EXPECT_EQ(nl.records[0].key, "k1");
  EXPECT_EQ(nl.records[0].line, 2);
  EXPECT_EQ(nl.records[1].url, "y.jpg");
  EXPECT_EQ(nl.records[1].key, "k2");
  EXPECT_EQ(nl.records[1].line, 4);  // where the record starts
  auto only = read("newlines_only.csv");
  EXPECT_EQ(only.records[0].caption, "\n\n\n");
  EXPECT_EQ(only.records[1].line, 6);
  EXPECT_EQ(only.records[1].caption, "z");
  auto crlf = read("crlf.csv");
  EXPECT_EQ(crlf.records[0].caption, "a\r\nb");  // a quoted line break is kept as written
  EXPECT_EQ(crlf.records[1].caption, "c");
  EXPECT_EQ(crlf.records[1].line, 4);
  auto bom = read("bom.csv");
  ASSERT_EQ(bom.records.size(), 1u);
  EXPECT_EQ(bom.records[0].url, "x.jpg");
  EXPECT_TRUE(bom.records[0].error.empty());
  auto qh = read("quoted_header.csv");
  EXPECT_EQ(qh.records[0].extra["cap\ntion"], "c");
  EXPECT_EQ(qh.records[0].line, 3);
  auto un = read("unterminated.csv");
  ASSERT_EQ(un.records.size(), 2u);
  EXPECT_TRUE(un.records[0].error.empty());
  EXPECT_EQ(un.records[1].line, 3);
  EXPECT_EQ(un.records[1].error,
            dir + "/unterminated.csv:3: unterminated quoted field (the record runs to the end of the file)");
  auto aq = read("after_quote.csv");
  EXPECT_EQ(aq.records[0].error, dir + "/after_quote.csv:2: characters after a closing quote");
  EXPECT_EQ(aq.records[1].url, "y.jpg");
  auto bq = read("blank_and_quoted_empty.csv");
  EXPECT_EQ(bq.records[0].error, dir + "/blank_and_quoted_empty.csv:4: empty 'url' field");
  EXPECT_EQ(bq.records[1].url, "x.jpg");
  EXPECT_EQ(read("literal_quote.csv").records[0].caption, "say \"hi\" now");
  EXPECT_EQ(read("cr_only.csv").records[0].caption, "a\rb");
  auto tsv = read("tab.tsv");
  EXPECT_EQ(tsv.records[0].caption, "tab\there\nand a newline");
  EXPECT_EQ(tsv.records[1].caption, "say \"hi\"");  // a quote inside a field is literal
  EXPECT_EQ(tsv.records[1].line, 4);
  EXPECT_EQ(read("bom.txt").records[0].url, "a.jpg");
  EXPECT_EQ(read("bom.jsonl").records[0].url, "a.jpg");
}

TEST(ListRecords, JsonArrayIsAListOfObjects) {
  auto dir = temp_dir();
  for (auto& c : list_cases())
    if (c.name.find(".json") != std::string::npos) write(dir + "/" + c.name, c.text);
  auto a = read_list_file(dir + "/array.json");
  EXPECT_EQ(a.format, ListFormat::JsonArray);
  ASSERT_EQ(a.records.size(), 2u);
  EXPECT_EQ(a.records[0].url, "a.jpg");
  EXPECT_EQ(a.records[0].caption, "x, ] }");
  EXPECT_EQ(a.records[0].line, 3);
  EXPECT_EQ(a.records[1].key, "k");
  EXPECT_EQ(a.records[1].line, 4);
  auto one = read_list_file(dir + "/array_one_line.json");
  EXPECT_EQ(one.records[1].extra["n"], nlohmann::ordered_json::parse("[1,{\"m\":2}]"));
  auto bad = read_list_file(dir + "/array_bad_elements.json");
  EXPECT_TRUE(bad.records[0].error.empty());
  EXPECT_EQ(bad.records[1].error, dir + "/array_bad_elements.json:1: a JSON object was expected");
  EXPECT_NE(bad.records[2].error.find("array_bad_elements.json:1: invalid JSON"), std::string::npos);
  EXPECT_EQ(bad.records[3].error, dir + "/array_bad_elements.json:1: no 'url' column");
  EXPECT_EQ(read_list_file(dir + "/lines.json").format, ListFormat::Jsonl);

  // Neither an array of objects nor JSONL: refused by the reader and the counter alike, with
  // the same message naming the file and line.
  struct Refused {
    std::string name, text, error;
  };
  const std::vector<Refused> refused{
      {"pretty.json", "{\n  \"url\": \"a.jpg\"\n}\n",
       ":1: neither a JSON array of objects nor JSON Lines (the first line is not a JSON object)"},
      {"numbers.json", "[1, 2, 3]",
       ":1: neither a JSON array of objects nor JSON Lines (the first element is not a JSON object)"},
      {"unclosed.json", "[{\"url\": \"a.jpg\"},\n{\"url\": \"b.jpg\"}\n",
       ":3: not a JSON array of objects: the file ends before the closing ']'"},
      {"inside.json", "[{\"url\": \"a.jpg\"},\n{\"url\": \"b.jpg\"",
       ":2: not a JSON array of objects: the file ends inside an element"},
      {"after.json", "[{\"url\": \"a.jpg\"}]\n[{\"url\": \"b.jpg\"}]",
       ":2: not a JSON array of objects: text after the closing ']'"},
      {"comma.json", "[{\"url\": \"a.jpg\"},\n]",
       ":2: not a JSON array of objects: ',' before the closing ']'"},
      {"missing_comma.json", "[{\"url\": \"a.jpg\"} {\"url\": \"b.jpg\"}]",
       ":1: not a JSON array of objects: ',' or ']' expected after an element"},
  };
  for (auto& r : refused) {
    const std::string path = dir + "/" + r.name;
    SCOPED_TRACE(path);
    write(path, r.text);
    std::string read_error, count_error;
    try {
      read_list_file(path);
    } catch (const ListError& e) {
      read_error = e.what();
    }
    try {
      count_list_records(path, {});
    } catch (const InputError& e) {
      count_error = e.what();
    }
    EXPECT_EQ(read_error, path + r.error);
    EXPECT_EQ(count_error, read_error);
  }
}

// ---------------------------------------------------------------- glob patterns

TEST(Patterns, GlobsAfterBracesSortedAndRefusedWhenNothingMatches) {
  auto dir = temp_dir();
  make_dirs(dir + "/lists");
  make_dirs(dir + "/shards");
  for (auto n : {"lists/b.jsonl", "lists/a.jsonl", "lists/c.txt", "shards/00002.tar", "shards/00001.tar",
                 "shards/0001x.tar", "shards/lit[1].tar"})
    write(dir + "/" + n, "");
  EXPECT_EQ(expand_pattern(dir + "/lists/*.jsonl"),
            (std::vector<std::string>{dir + "/lists/a.jsonl", dir + "/lists/b.jsonl"}));
  EXPECT_EQ(expand_pattern(dir + "/shards/0000?.tar"),
            (std::vector<std::string>{dir + "/shards/00001.tar", dir + "/shards/00002.tar"}));
  EXPECT_EQ(expand_pattern(dir + "/shards/0000[0-1].tar"),
            (std::vector<std::string>{dir + "/shards/00001.tar"}));
  // Braces first, then each name globbed in turn.
  EXPECT_EQ(
      expand_pattern(dir + "/{shards/0000[2].tar,lists/[ab].jsonl}"),
      (std::vector<std::string>{dir + "/shards/00002.tar", dir + "/lists/a.jsonl", dir + "/lists/b.jsonl"}));
  // A name that exists as written is itself, glob characters or not.
  EXPECT_EQ(expand_pattern(dir + "/shards/lit[1].tar"),
            (std::vector<std::string>{dir + "/shards/lit[1].tar"}));
  // Without glob characters a missing name is kept (the reader then says it is missing).
  EXPECT_EQ(expand_pattern(dir + "/lists/missing.jsonl"),
            (std::vector<std::string>{dir + "/lists/missing.jsonl"}));
  try {
    expand_pattern(dir + "/lists/*.tsv");
    ADD_FAILURE() << "a glob matching nothing was accepted";
  } catch (const ListError& e) {
    EXPECT_EQ(std::string(e.what()), "no file matches the pattern '" + dir + "/lists/*.tsv'");
  }
  try {
    expand_pattern(dir + "/{lists,shards}/*.csv");
    ADD_FAILURE() << "a glob matching nothing was accepted";
  } catch (const ListError& e) {
    EXPECT_EQ(std::string(e.what()), "no file matches the pattern '" + dir + "/lists/*.csv' (from '" + dir +
                                         "/{lists,shards}/*.csv')");
  }
}

// ---------------------------------------------------------------- bounded memory

TEST(ListRecords, GzipIsStreamedAndAHugeRecordIsMalformedNotHeld) {
  auto dir = temp_dir();
  const std::string path = dir + "/big.jsonl.gz";
  // 2000 short lines, then one 50 MB line, then 1000 more: about 100 KB compressed.
  constexpr size_t kHuge = size_t(50) << 20;
  {
    gzFile g = gzopen(path.c_str(), "wb9");
    ASSERT_NE(g, nullptr);
    auto put = [&](const std::string& s) {
      ASSERT_EQ(gzwrite(g, s.data(), static_cast<unsigned>(s.size())), static_cast<int>(s.size()));
    };
    for (int i = 0; i < 2000; ++i) put("{\"url\": \"s" + std::to_string(i) + ".jpg\"}\n");
    put("{\"url\": \"huge.jpg\", \"caption\": \"");
    const std::string block(size_t(1) << 20, 'a');
    for (size_t n = 0; n < kHuge; n += block.size()) put(block);
    put("\"}\n");
    for (int i = 0; i < 1000; ++i) put("{\"url\": \"t" + std::to_string(i) + ".jpg\"}\n");
    ASSERT_EQ(gzclose(g), Z_OK);
  }
  ASSERT_LT(read_file(path).size(), size_t(1) << 20);

  const int64_t base = g_live_bytes.load();
  g_peak_bytes.store(base);
  g_largest_alloc.store(0);
  auto lf = read_list_file(path);
  const int64_t read_peak = g_peak_bytes.load() - base;
  const size_t read_largest = g_largest_alloc.load();
  ASSERT_EQ(lf.records.size(), 3001u);
  EXPECT_EQ(lf.malformed, 1);
  EXPECT_EQ(lf.records[1999].url, "s1999.jpg");
  EXPECT_EQ(lf.records[2000].line, 2001);
  EXPECT_EQ(lf.records[2000].error,
            path + ":2001: record longer than 1048576 bytes (the limit for one list record)");
  EXPECT_EQ(lf.records[2001].url, "t0.jpg");
  EXPECT_EQ(lf.records[2001].line, 2002);
  EXPECT_EQ(lf.records[3000].url, "t999.jpg");
  // The 3001 parsed records are held (about 1 MB); the 50 MB line never is.
  EXPECT_LT(read_largest, size_t(4) << 20) << "largest single allocation";
  EXPECT_LT(read_peak, int64_t(16) << 20) << "peak bytes live while reading";

  g_peak_bytes.store(g_live_bytes.load());
  const int64_t base2 = g_live_bytes.load();
  g_largest_alloc.store(0);
  EXPECT_EQ(count_list_records(path, {}), 3001);
  EXPECT_LT(g_largest_alloc.load(), size_t(4) << 20);
  EXPECT_LT(g_peak_bytes.load() - base2, int64_t(4) << 20) << "the counter holds no rows";
}

// ---------------------------------------------------------------- shards of a list

namespace {
std::vector<recap::engine::SampleInput> shard_samples(const recap::engine::ShardSpec& spec,
                                                      const recap::engine::InputOptions& opts) {
  std::vector<recap::engine::SampleInput> out;
  auto stream = recap::engine::open_shard(spec, opts);
  recap::engine::SampleInput s;
  while (stream->next(&s)) out.push_back(s);
  return out;
}
}  // namespace

TEST(ListShards, ReadingStopsAfterTheShardsRecords) {
  // A .gz cut short after its first records: a shard of those records opens (the rest of the
  // file is never read); the full read refuses the file.
  auto dir = temp_dir();
  std::string text;
  for (int i = 0; i < 20000; ++i)
    text += "{\"url\": \"u" + std::to_string(i) + ".jpg\", \"n\": " + std::to_string(i * 7919) + "}\n";
  write_gz(dir + "/whole.jsonl.gz", text);
  const std::string gz = read_file(dir + "/whole.jsonl.gz");
  write(dir + "/cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  EXPECT_THROW(read_list_file(dir + "/cut.jsonl.gz"), ListError);
  recap::engine::InputOptions opts;
  opts.samples_per_shard = 3;
  recap::engine::ShardSpec spec;
  spec.path = dir + "/cut.jsonl.gz";
  spec.shard_id = 1;
  spec.first_record = 3;
  spec.n_records = 3;
  auto samples = shard_samples(spec, opts);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].url, "u3.jpg");
  EXPECT_EQ(samples[0].source, dir + "/cut.jsonl.gz:4");
  EXPECT_EQ(samples[2].url, "u5.jpg");
  EXPECT_EQ(samples[2].key, compute_key(2, 1, 3));
}

TEST(ListShards, AListRewrittenBetweenRunsIsReadAfresh) {
  // The reader left after one shard is reused by the next shard of the same list only while
  // the path names the same file.
  auto dir = temp_dir();
  const std::string path = dir + "/l.jsonl";
  auto list = [](const char* tag) {
    std::string t;
    for (int i = 0; i < 4; ++i) t += "{\"url\": \"" + std::string(tag) + std::to_string(i) + ".jpg\"}\n";
    return t;
  };
  atomic_write(path, list("old"));
  recap::engine::InputOptions opts;
  opts.lists = {path};
  opts.samples_per_shard = 2;
  std::vector<std::string> warnings;
  auto shards = recap::engine::plan_shards(opts, &warnings);
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shard_samples(shards[0], opts)[1].url, "old1.jpg");
  atomic_write(path, list("new"));
  auto second = shard_samples(shards[1], opts);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].url, "new2.jpg");
  EXPECT_EQ(second[1].url, "new3.jpg");
  // Consecutive shards of an unchanged list: the same records as a full read.
  EXPECT_EQ(shard_samples(shards[0], opts)[0].url, "new0.jpg");
  EXPECT_EQ(shard_samples(shards[1], opts)[1].url, "new3.jpg");
}
