// plan_shards counts list records with a byte scan instead of parsing every list (each
// worker plans the whole dataset at startup). Its shards (names, ids, record ranges), its
// warnings and its refusals must be exactly those of a straightforward full parse with
// io::read_list_file, and the samples a shard then yields must keep their indices and keys.
#include <gtest/gtest.h>

#include <random>

#include "../caption/cli_util.h"
#include "engine/sources.h"
#include "io/lists.h"

using namespace recap::testing;
using recap::engine::count_list_records;
using recap::engine::InputError;
using recap::engine::InputOptions;
using recap::engine::open_shard;
using recap::engine::plan_shards;
using recap::engine::SampleInput;
using recap::engine::ShardSpec;
namespace io = recap::io;

namespace {

// The planner as it was: every list fully parsed, shards cut from the record count.
std::vector<ShardSpec> reference_plan(const InputOptions& opts, std::vector<std::string>* warnings) {
  std::vector<ShardSpec> shards;
  int64_t id = 0;
  for (auto& pattern : opts.lists)
    for (auto& path : io::expand_braces(pattern)) {
      auto lf = io::read_list_file(path, opts.columns);
      const auto n = static_cast<int64_t>(lf.records.size());
      if (n == 0) warnings->push_back(path + ": no samples");
      for (int64_t first = 0; first < n; first += opts.samples_per_shard) {
        ShardSpec s;
        std::string name = std::to_string(id);
        s.name = std::string(5 - std::min<size_t>(5, name.size()), '0') + name;
        s.shard_id = id++;
        s.path = path;
        s.first_record = first;
        s.n_records = std::min(opts.samples_per_shard, n - first);
        shards.push_back(s);
      }
    }
  return shards;
}

void expect_same_plan(const InputOptions& opts) {
  std::vector<std::string> w_ref, w_new;
  auto ref = reference_plan(opts, &w_ref);
  auto got = plan_shards(opts, &w_new);
  EXPECT_EQ(w_new, w_ref);
  ASSERT_EQ(got.size(), ref.size()) << "samples per shard " << opts.samples_per_shard;
  for (size_t i = 0; i < ref.size(); ++i) {
    SCOPED_TRACE(ref[i].path + " shard " + ref[i].name);
    EXPECT_EQ(got[i].name, ref[i].name);
    EXPECT_EQ(got[i].shard_id, ref[i].shard_id);
    EXPECT_EQ(got[i].path, ref[i].path);
    EXPECT_EQ(got[i].first_record, ref[i].first_record);
    EXPECT_EQ(got[i].n_records, ref[i].n_records);
    EXPECT_FALSE(got[i].is_tar);
  }
}

void gzip_file(const std::string& path) {
  ASSERT_EQ(run_cmd({"gzip", "-f", path}).rc, 0);
}

// A JSONL list of ~1.5 MB (more than one read chunk) mixing every kind of line the record
// rules distinguish, with LF and CRLF endings, so that lines and '\r's straddle chunk edges.
std::string mixed_jsonl(int n_lines, unsigned seed) {
  static const std::vector<std::string> kinds{
      "{\"url\": \"a.jpg\", \"caption\": \"x\"}",
      "{\"url\": \"b.jpg\", \"caption\": \"a rather longer caption to vary the line lengths\", \"k\": 1}",
      "",
      "   ",
      "\t \t",
      "\r",         // with LF this is a blank CRLF line
      " \r",        // blank: the trailing '\r' is dropped, a space remains
      "\r\r",       // not blank: only one '\r' is dropped
      " \r ",       // not blank: the '\r' is not last
      "{bad json",  // malformed: still a record
      "[1, 2]",     // not an object: malformed record
      "{\"caption\": \"no url\"}",
  };
  std::mt19937 rng(seed);
  std::string text;
  for (int i = 0; i < n_lines; ++i) {
    text += kinds[rng() % kinds.size()];
    text += (rng() % 3 == 0) ? "\r\n" : "\n";
  }
  return text;
}

}  // namespace

TEST(ScaleoutPlan, CountsMatchAFullParse) {
  auto dir = make_temp_dir("plan_count");
  std::map<std::string, std::string> files{
      // blank lines, whitespace-only lines, CRLF, a malformed line, no trailing newline
      {"a.jsonl",
       "\n{\"url\": \"1.jpg\"}\r\n  \n\t\r\n{\"url\": \"2.jpg\"}\n{oops\n\r\n \r\n\r\r\n{\"url\": "
       "\"3.jpg\"}"},
      // a TSV header (with aliases) after blank lines, CRLF, a row with the wrong field count
      {"b.tsv", "\r\n  \nURL\tTEXT\tother\r\nx.jpg\tcap\t1\r\n\r\nbad row\r\ny.jpg\tc\t2"},
      {"c.csv", "\"url\",caption\n\"q.jpg\",\"a, b\"\n\n\"unterminated\nr.jpg,ok\n"},
      {"d.txt", "one.jpg\n\n  two.jpg  \r\n\t\nthree.jpg"},
      {"empty.jsonl", ""},
      {"blank.jsonl", "\n \n\r\n\t\r\n"},
      {"header_only.tsv", "url\tcaption\n\n"},
      {"nothing.tsv", "\n  \n"},
      {"big.jsonl", mixed_jsonl(80000, 7)},
      {"g.jsonl", mixed_jsonl(3000, 11)},
      {"h.tsv", "url\tcaption\r\n" + std::string("z.jpg\tq\r\n\r\n") + "w.jpg\tr\n"},
  };
  for (auto& [name, text] : files) io::atomic_write(dir + "/" + name, text);
  gzip_file(dir + "/g.jsonl");
  gzip_file(dir + "/h.tsv");
  // Two gzip members back to back (as `cat a.gz b.gz` makes), and gzip data under a plain name.
  io::atomic_write(dir + "/m1.jsonl", mixed_jsonl(500, 3));
  io::atomic_write(dir + "/m2.jsonl", mixed_jsonl(700, 4));
  gzip_file(dir + "/m1.jsonl");
  gzip_file(dir + "/m2.jsonl");
  io::atomic_write(dir + "/multi.jsonl.gz",
                   io::read_file(dir + "/m1.jsonl.gz") + io::read_file(dir + "/m2.jsonl.gz"));
  io::atomic_write(dir + "/plain_named.jsonl", io::read_file(dir + "/m2.jsonl.gz"));
  // A large gzip list: decompressed output spans many inflate calls.
  io::atomic_write(dir + "/bigz.jsonl", mixed_jsonl(60000, 5));
  gzip_file(dir + "/bigz.jsonl");

  const std::vector<std::string> names{
      "a.jsonl",           "b.tsv",        "c.csv",     "d.txt",      "empty.jsonl", "blank.jsonl",
      "header_only.tsv",   "nothing.tsv",  "big.jsonl", "g.jsonl.gz", "h.tsv.gz",    "multi.jsonl.gz",
      "plain_named.jsonl", "bigz.jsonl.gz"};
  for (auto& n : names) {
    auto lf = io::read_list_file(dir + "/" + n);
    EXPECT_EQ(count_list_records(dir + "/" + n, {}), static_cast<int64_t>(lf.records.size())) << n;
  }
  // The fixtures do exercise what they are meant to.
  EXPECT_EQ(io::read_list_file(dir + "/a.jsonl").records.size(), 5u);
  EXPECT_EQ(io::read_list_file(dir + "/b.tsv").records.size(), 3u);
  EXPECT_GT(io::read_list_file(dir + "/big.jsonl").malformed, 1000);
  EXPECT_GT(io::read_file(dir + "/big.jsonl").size(), size_t(1) << 20);

  for (int64_t per : {1, 2, 3, 7, 1000, 10000}) {
    InputOptions opts;
    opts.samples_per_shard = per;
    for (auto& n : names) opts.lists.push_back(dir + "/" + n);
    expect_same_plan(opts);
  }
  // A brace pattern, strict columns.
  InputOptions opts;
  opts.samples_per_shard = 4;
  opts.lists = {dir + "/{a.jsonl,b.tsv,d.txt}"};
  opts.columns.url = "URL";
  opts.columns.strict = true;
  expect_same_plan(opts);
}

TEST(ScaleoutPlan, ShardsYieldTheSameSamplesAsAFullParse) {
  auto dir = make_temp_dir("plan_rows");
  io::atomic_write(dir + "/l.jsonl", mixed_jsonl(2000, 21));
  io::atomic_write(dir + "/t.tsv", "\nurl\tcaption\tkey\r\nu1\tc1\tk1\r\n\r\nu2\tc2\n bad\nu3\tc3\tk3");
  gzip_file(dir + "/t.tsv");
  InputOptions opts;
  opts.lists = {dir + "/l.jsonl", dir + "/t.tsv.gz"};
  opts.samples_per_shard = 37;
  std::vector<std::string> warnings;
  auto shards = plan_shards(opts, &warnings);
  std::vector<io::ListRecord> all;
  for (auto& p : opts.lists) {
    auto lf = io::read_list_file(p);
    all.insert(all.end(), lf.records.begin(), lf.records.end());
  }
  size_t next = 0;
  for (auto& spec : shards) {
    auto stream = open_shard(spec, opts);
    SampleInput s;
    int64_t i = 0;
    while (stream->next(&s)) {
      ASSERT_LT(next, all.size());
      const auto& r = all[next++];
      EXPECT_EQ(s.index, i);
      EXPECT_EQ(s.key, r.key.empty() ? io::compute_key(i, spec.shard_id, opts.samples_per_shard) : r.key);
      EXPECT_EQ(s.url, r.url);
      EXPECT_EQ(s.parse_error, r.error);
      EXPECT_EQ(s.source, spec.path + ":" + std::to_string(r.line));
      ++i;
    }
    EXPECT_EQ(i, spec.n_records) << spec.name;
  }
  EXPECT_EQ(next, all.size());
}

TEST(ScaleoutPlan, RefusesWhatAFullParseRefuses) {
  auto dir = make_temp_dir("plan_refuse");
  struct Case {
    std::string name, text;
    io::ListColumns cols;
  };
  io::ListColumns strict;
  strict.strict = true;
  io::ListColumns custom;
  custom.url = "photo";
  const std::vector<Case> cases{
      {"ok_alias.tsv", "image\tcaption\nx\ty\n", {}},
      {"ok_custom.tsv", "photo\tcaption\nx\ty\n", custom},
      {"alias_strict.tsv", "image\tcaption\nx\ty\n", strict},
      {"no_url.tsv", "\n\nname\tcaption\r\nx\ty\n", {}},
      {"no_custom.tsv", "url\tcaption\nx\ty\n", custom},
      {"ok_quoted.csv", "\"url\",\"cap, tion\"\nx,y\n", {}},
      {"bad_quote.csv", "\"url\"x,caption\nx,y\n", {}},
      {"unterminated.csv", "\"url,caption\nx,y\n", {}},
      {"no_url.csv", "a,b\n", {}},
      {"crlf_header.csv", "link,b\r\nx,y\r\n", {}},
      {"unknown.parquet", "x\n", {}},
  };
  for (auto& c : cases) {
    const std::string path = dir + "/" + c.name;
    io::atomic_write(path, c.text);
    std::string ref_err, new_err;
    try {
      io::read_list_file(path, c.cols);
    } catch (const io::ListError& e) {
      ref_err = e.what();
    }
    InputOptions opts;
    opts.lists = {path};
    opts.columns = c.cols;
    std::vector<std::string> w;
    try {
      plan_shards(opts, &w);
    } catch (const InputError& e) {
      new_err = e.what();
    }
    EXPECT_EQ(new_err, ref_err) << c.name;
  }
  // Missing, corrupt and truncated gzip lists are refused too, naming the file.
  std::string text;
  for (int i = 0; i < 300; ++i) text += "{\"url\": \"u" + std::to_string(i) + ".jpg\"}\n";
  io::atomic_write(dir + "/z.jsonl", text);
  gzip_file(dir + "/z.jsonl");
  std::string gz = io::read_file(dir + "/z.jsonl.gz");
  std::string corrupt = gz;
  for (size_t i = 20; i < 40; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  io::atomic_write(dir + "/corrupt.jsonl.gz", corrupt);
  io::atomic_write(dir + "/cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  io::atomic_write(dir + "/trailing.jsonl.gz", gz + "garbage after the member");
  for (const char* n : {"missing.jsonl", "corrupt.jsonl.gz", "cut.jsonl.gz", "trailing.jsonl.gz"}) {
    const std::string path = dir + "/" + n;
    EXPECT_THROW(io::read_list_file(path), io::ListError) << n;
    InputOptions opts;
    opts.lists = {path};
    std::vector<std::string> w;
    try {
      plan_shards(opts, &w);
      ADD_FAILURE() << n << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}
