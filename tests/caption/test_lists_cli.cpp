// recap-engine caption on the tiny model, fed sample lists the way users have them: CSV with
// quoted captions spanning lines, a glob over list files, a .json array, a .json that is
// neither an array nor JSONL, and list keys that cannot name a sample.
#include <gtest/gtest.h>

#include <algorithm>

#include "cli_util.h"
#include "io/lists.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";

RunResult caption(const std::vector<std::string>& extra) {
  std::vector<std::string> a{RECAP_BIN,        "caption",  "--weights",        kWeights,
                             "--tokenizer",    kTokenizer, "--threads",        "1",
                             "--log-interval", "1000",     "--max-new-tokens", "4",
                             "--io-workers",   "1"};  // one loader: list shards are written as samples finish
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

std::string img(const char* name) {
  return kImages + "/" + name;
}

json read_json(const std::string& path) {
  return json::parse(io::read_file(path));
}

// Member names of a tar, in order.
std::vector<std::string> tar_names(const std::string& path) {
  std::vector<std::string> order;
  read_tar(path, &order);
  return order;
}

}  // namespace

TEST(ListsCli, CsvQuotedCaptionsWithNewlinesAndCommasAreOneSampleEach) {
  auto dir = make_temp_dir("lists_csv");
  // As pandas.to_csv writes it: fields holding a comma, a quote or a line break are quoted,
  // quotes doubled; CRLF line ends, a BOM first.
  const std::string csv =
      "\xEF\xBB\xBFkey,url,caption,source\r\n"
      "k1," +
      img("gray_square.jpg") +
      ",\"A gray square,\nseen from above\",web\r\n"
      "k2," +
      img("small_wide.png") +
      ",\"He said \"\"wide\"\", twice\",\"a, b\"\r\n"
      "k3," +
      img("tall_alpha.png") + ",plain caption,x\r\n";
  io::atomic_write(dir + "/l.csv", csv);
  auto r = caption({"--list", dir + "/l.csv", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("malformed"), std::string::npos) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 3u);
  const std::vector<std::string> keys{"k1", "k2", "k3"};
  const std::vector<std::string> captions{"A gray square,\nseen from above", "He said \"wide\", twice",
                                          "plain caption"};
  const std::vector<std::string> sources{"web", "a, b", "x"};
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(side[i].dump());
    EXPECT_EQ(side[i]["key"], keys[i]);
    EXPECT_EQ(side[i]["status"], "success");
    EXPECT_EQ(side[i]["caption"], captions[i]);
    EXPECT_EQ(side[i]["source"], sources[i]);
  }
  auto tar = read_tar(dir + "/out/00000.tar");
  EXPECT_EQ(tar_names(dir + "/out/00000.tar"),
            (std::vector<std::string>{"k1.jpg", "k1.txt", "k1.json", "k2.png", "k2.txt", "k2.json", "k3.png",
                                      "k3.txt", "k3.json"}));
  EXPECT_EQ(json::parse(tar["k1.json"])["caption"], captions[0]);
  EXPECT_EQ(json::parse(tar["k2.json"])["caption"], captions[1]);
  EXPECT_EQ(tar["k1.jpg"], io::read_file(img("gray_square.jpg")));
  auto stats = read_json(dir + "/out/00000_stats.json");
  EXPECT_EQ(stats["count"], 3);
  EXPECT_EQ(stats["successes"], 3);

  // An unterminated quote is one malformed record, at the line where it starts; the records
  // before it are captioned.
  io::atomic_write(dir + "/open.csv", "url,caption\n" + img("gray_square.jpg") + ",fine\n" +
                                          img("small_wide.png") + ",\"never closed\n" +
                                          img("tall_alpha.png") + ",swallowed\n");
  auto o = caption({"--list", dir + "/open.csv", "--out", dir + "/out_open"});
  ASSERT_EQ(o.rc, 0) << o.out;
  auto oside = read_jsonl(dir + "/out_open/00000.jsonl");
  ASSERT_EQ(oside.size(), 2u);
  EXPECT_EQ(oside[0]["status"], "success");
  EXPECT_EQ(oside[1]["status"], "failed_to_parse");
  EXPECT_EQ(oside[1]["error_message"],
            dir + "/open.csv:3: unterminated quoted field (the record runs to the end of the file)");
}

TEST(ListsCli, GlobOverListFilesAndNothingMatched) {
  auto dir = make_temp_dir("lists_glob");
  io::make_dirs(dir + "/lists");
  io::atomic_write(dir + "/lists/b.jsonl",
                   json{{"url", img("small_wide.png")}, {"caption", "b0"}}.dump() + "\n");
  io::atomic_write(dir + "/lists/a.jsonl",
                   json{{"url", img("gray_square.jpg")}, {"caption", "a0"}}.dump() + "\n" +
                       json{{"url", img("tall_alpha.png")}, {"caption", "a1"}}.dump() + "\n");
  io::atomic_write(dir + "/lists/c.tsv", "url\n" + img("tall_alpha.png") + "\n");  // not matched
  auto r = caption({"--list", dir + "/lists/*.jsonl", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("caption: 2 input shard(s)"), std::string::npos) << r.out;
  // Sorted: a.jsonl is shard 00000, b.jsonl shard 00001.
  auto a = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["caption"], "a0");
  EXPECT_EQ(a[0]["key"], io::compute_key(0, 0, 10000));
  EXPECT_EQ(a[1]["caption"], "a1");
  auto b = read_jsonl(dir + "/out/00001.jsonl");
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0]["caption"], "b0");
  EXPECT_EQ(b[0]["key"], io::compute_key(0, 1, 10000));
  EXPECT_EQ(b[0]["status"], "success");
  EXPECT_FALSE(io::file_exists(dir + "/out/00002.jsonl"));

  auto none = caption({"--list", dir + "/lists/*.csv", "--out", dir + "/out_none"});
  EXPECT_EQ(none.rc, 2) << none.out;
  EXPECT_NE(none.out.find("caption: error: no file matches the pattern '" + dir + "/lists/*.csv'"),
            std::string::npos)
      << none.out;
  EXPECT_FALSE(io::file_exists(dir + "/out_none/00000.tar"));
}

TEST(ListsCli, JsonArrayListAndARefusedJson) {
  auto dir = make_temp_dir("lists_json");
  json arr =
      json::array({json{{"url", img("gray_square.jpg")}, {"caption", "first"}, {"key", "j1"}},
                   json{{"url", img("small_wide.png")}, {"caption", "second"}, {"key", "j2"}, {"n", 2}}});
  io::atomic_write(dir + "/l.json", arr.dump(2) + "\n");
  auto r = caption({"--list", dir + "/l.json", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 2u);
  EXPECT_EQ(side[0]["key"], "j1");
  EXPECT_EQ(side[0]["caption"], "first");
  EXPECT_EQ(side[0]["status"], "success");
  EXPECT_EQ(side[1]["key"], "j2");
  EXPECT_EQ(side[1]["n"], 2);
  EXPECT_EQ(side[1]["status"], "success");
  EXPECT_EQ(read_json(dir + "/out/00000_stats.json")["successes"], 2);

  // A pretty-printed object is neither an array of objects nor JSON Lines: refused before any
  // work (never one failed sample in a shard marked done).
  io::atomic_write(dir + "/obj.json", json{{"url", img("gray_square.jpg")}}.dump(2) + "\n");
  auto obj = caption({"--list", dir + "/obj.json", "--out", dir + "/out_obj"});
  EXPECT_EQ(obj.rc, 2) << obj.out;
  EXPECT_NE(
      obj.out.find("caption: error: " + dir +
                   "/obj.json:1: neither a JSON array of objects nor JSON Lines (the first line is not a "
                   "JSON object)"),
      std::string::npos)
      << obj.out;
  EXPECT_FALSE(io::file_exists(dir + "/out_obj/00000_stats.json"));
  // An array cut short, the same.
  std::string cut = arr.dump(2);
  cut.resize(cut.size() - 2);
  io::atomic_write(dir + "/cut.json", cut);
  auto c = caption({"--list", dir + "/cut.json", "--out", dir + "/out_cut"});
  EXPECT_EQ(c.rc, 2) << c.out;
  EXPECT_NE(c.out.find("caption: error: " + dir + "/cut.json:"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("not a JSON array of objects"), std::string::npos) << c.out;
  EXPECT_FALSE(io::file_exists(dir + "/out_cut/00000_stats.json"));
}

TEST(ListsCli, BadAndDuplicateKeysFailTheirSamplesOnly) {
  auto dir = make_temp_dir("lists_keys");
  const std::string list = dir + "/l.jsonl";
  std::string text;
  const std::vector<std::pair<std::string, const char*>> rows{
      {"good1", "gray_square.jpg"}, {"a.b", "small_wide.png"},   {"../x", "tall_alpha.png"},
      {"", "gray_square.jpg"},      {"dir/k", "small_wide.png"}, {"good2", "wide_gradient.png"},
      {"good1", "tall_alpha.png"}};
  for (auto& [key, image] : rows) text += json{{"url", img(image)}, {"key", key}}.dump() + "\n";
  io::atomic_write(list, text);
  auto r = caption({"--list", list, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), rows.size());
  const std::vector<std::string> want_error{
      "",
      list + ":2: key 'a.b' cannot name a sample: key contains '.' (webdataset cuts keys at the first dot)",
      list + ":3: key '../x' cannot name a sample: key contains '.' (webdataset cuts keys at the first dot)",
      list + ":4: key '' cannot name a sample: empty key",
      list + ":5: key 'dir/k' cannot name a sample: key contains '/'",
      "",
      list + ":7: key 'good1' repeats the key of line 1 in this shard",
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE(side[i].dump());
    EXPECT_EQ(side[i]["key"], rows[i].first);
    if (want_error[i].empty()) {
      EXPECT_EQ(side[i]["status"], "success");
    } else {
      EXPECT_EQ(side[i]["status"], "failed_to_parse");
      EXPECT_EQ(side[i]["error_message"], want_error[i]);
      EXPECT_NE(r.out.find("warning: malformed input: " + want_error[i]), std::string::npos) << r.out;
    }
  }
  // Only the good keys name tar members, each once.
  EXPECT_EQ(tar_names(dir + "/out/00000.tar"),
            (std::vector<std::string>{"good1.jpg", "good1.txt", "good1.json", "good2.png", "good2.txt",
                                      "good2.json"}));
  auto stats = read_json(dir + "/out/00000_stats.json");
  EXPECT_EQ(stats["count"], 7);
  EXPECT_EQ(stats["successes"], 2);
  EXPECT_EQ(stats["failed_to_parse"], 5);
  // The list is left as it was.
  EXPECT_EQ(io::read_file(list), text);
}
