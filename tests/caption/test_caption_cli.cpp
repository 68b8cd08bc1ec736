// recap-engine caption on the tiny model: every input kind, every bad-input case, batch
// invariance, multi-caption prompt sharing, agreement with `trace`, fingerprints, resume after
// kill -9 and after SIGTERM, shard assignment.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "../io_lists/loopback_http.h"
#include "cli_util.h"
#include "io/lists.h"
#include "io/safetensors.h"
#include "models/tokenizer.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
// caption's default instruction (the Recap-DataComp-1B prompt), spelled out for `trace`.
const std::string kDefaultPrompt =
    "Please generate a detailed caption of this image. Please be as descriptive as possible.";
const std::vector<std::string> kImageNames{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                           "small_wide.png"};

std::vector<std::string> caption_args(const std::vector<std::string>& extra) {
  std::vector<std::string> a{RECAP_BIN, "caption", "--weights", kWeights, "--tokenizer", kTokenizer};
  auto given = [&](const char* flag) { return std::find(extra.begin(), extra.end(), flag) != extra.end(); };
  if (!given("--log-interval")) a.insert(a.end(), {"--log-interval", "1000"});
  if (!given("--max-new-tokens")) a.insert(a.end(), {"--max-new-tokens", "12"});
  if (!given("--threads")) a.insert(a.end(), {"--threads", "1"});
  // These tests compare with `trace` (f32 by default); caption's own default (auto: int8 on a
  // float checkpoint) is tested in tests/eval_quant.
  if (!given("--precision")) a.insert(a.end(), {"--precision", "f32"});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

RunResult caption(const std::vector<std::string>& extra) {
  return run_cmd(caption_args(extra));
}

// A list of n samples cycling through the bundled images (absolute paths), "cap i" captions.
std::string write_list(const std::string& dir, int n, const std::string& name = "l.jsonl") {
  std::string text;
  for (int i = 0; i < n; ++i)
    text +=
        json{{"url", kImages + "/" + kImageNames[i % 4]}, {"caption", "cap " + std::to_string(i)}}.dump() +
        "\n";
  io::atomic_write(dir + "/" + name, text);
  return dir + "/" + name;
}

std::map<std::string, json> sidecar_by_key(const std::string& out, const std::vector<std::string>& shards) {
  std::map<std::string, json> m;
  for (auto& s : shards)
    for (auto& j : read_jsonl(out + "/" + s + ".jsonl")) {
      std::string k = j["key"];
      EXPECT_EQ(m.count(k), 0u) << "key twice in sidecars: " << k;
      m[k] = j;
    }
  return m;
}

json read_json(const std::string& path) {
  return json::parse(io::read_file(path));
}

}  // namespace

TEST(CaptionCli, JsonlEveryOutcomeAndReadableTars) {
  auto dir = make_temp_dir("cap_jsonl");
  io::make_dirs(dir + "/img");
  for (auto& n : kImageNames) io::atomic_write(dir + "/img/" + n, io::read_file(kImages + "/" + n));
  io::atomic_write(dir + "/img/not_an_image.jpg", "<html>this is not an image</html>");
  std::string list =
      R"({"url": "img/wide_gradient.png", "caption": "a gradient", "org_caption": "orig", "sha256": "abc"})"
      "\n"
      R"({"url": "img/tall_alpha.png", "caption": "tall"})"
      "\n"
      R"({"url": "img/missing.jpg", "caption": "gone"})"
      "\n"
      R"({"url": "img/gray_square.jpg", "caption": "gray"})"
      "\n"
      R"({"url": "img/not_an_image.jpg", "caption": "html"})"
      "\n"
      R"({"url": "ftp://example.com/x.jpg", "caption": "ftp"})"
      "\n"
      R"({"url": "img/small_wide.png", "caption": broken json})"
      "\n"
      R"({"url": "file://)" +
      dir +
      R"(/img/small_wide.png", "caption": "small"})"
      "\n";
  io::atomic_write(dir + "/l.jsonl", list);
  auto r =
      caption({"--list", dir + "/l.jsonl", "--out", dir + "/out", "--stats-json", dir + "/summary.json"});
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string out = dir + "/out";
  auto summary = read_json(dir + "/summary.json");
  EXPECT_EQ(summary["samples"], 8);
  EXPECT_EQ(summary["successes"], 4);
  EXPECT_EQ(summary["failed"], 4);
  EXPECT_EQ(summary["shards_done"], 1);
  EXPECT_EQ(summary["status"]["failed_to_download"], 2);
  EXPECT_EQ(summary["interrupted"], false);
  for (auto f : {"00000.tar", "00000.jsonl", "00000_stats.json"})
    EXPECT_TRUE(io::file_exists(out + "/" + f)) << f;
  EXPECT_FALSE(io::file_exists(out + "/.00000.log.partial"));
  EXPECT_FALSE(io::file_exists(out + "/.00000.tar.partial"));

  auto side = read_jsonl(out + "/00000.jsonl");
  ASSERT_EQ(side.size(), 8u);
  std::vector<std::string> want_status{"success",         "success",          "failed_to_download",
                                       "success",         "failed_to_decode", "failed_to_download",
                                       "failed_to_parse", "success"};
  for (size_t i = 0; i < side.size(); ++i) {
    EXPECT_EQ(side[i]["status"], want_status[i]) << i << ": " << side[i].dump();
    EXPECT_EQ(side[i]["key"], io::compute_key(static_cast<int64_t>(i), 0, 10000)) << i;
  }
  EXPECT_NE(side[2]["error_message"].get<std::string>().find("missing.jpg"), std::string::npos);
  EXPECT_NE(side[4]["error_message"].get<std::string>().find("not_an_image.jpg"), std::string::npos)
      << side[4].dump();
  EXPECT_NE(side[5]["error_message"].get<std::string>().find("unsupported URL scheme: ftp"),
            std::string::npos);
  EXPECT_NE(side[6]["error_message"].get<std::string>().find("l.jsonl:7: invalid JSON"), std::string::npos)
      << side[6].dump();
  // The malformed line is also said on stderr, with file and line.
  EXPECT_NE(r.out.find("warning: malformed input: " + dir + "/l.jsonl:7: invalid JSON"), std::string::npos)
      << r.out;
  // Pass-through columns and img2dataset keys.
  EXPECT_EQ(side[0]["org_caption"], "orig");
  EXPECT_EQ(side[0]["sha256"], "abc");
  EXPECT_EQ(side[0]["caption"], "a gradient");
  EXPECT_EQ(side[0]["width"], 200);
  EXPECT_EQ(side[0]["height"], 120);

  auto stats = read_json(out + "/00000_stats.json");
  EXPECT_EQ(stats["count"], 8);
  EXPECT_EQ(stats["successes"], 4);
  EXPECT_EQ(stats["failed_to_download"], 2);
  EXPECT_EQ(stats["failed_to_decode"], 1);
  EXPECT_EQ(stats["failed_to_parse"], 1);
  EXPECT_EQ(stats["failed_to_resize"], 0);
  EXPECT_EQ(stats["status_dict"]["success"], 4);
  for (auto k : {"duration", "start_time", "end_time", "tokens_in", "tokens_out", "images_per_sec", "isa",
                 "precision", "fingerprint"})
    EXPECT_TRUE(stats.contains(k)) << k;

  // Tar: successes only, original bytes with their own extension, txt == json re_caption.
  auto tar = read_tar(out + "/00000.tar");
  EXPECT_EQ(tar.size(), 12u);
  const std::map<int, std::string> ok{
      {0, "wide_gradient.png"}, {1, "tall_alpha.png"}, {3, "gray_square.jpg"}, {7, "small_wide.png"}};
  for (auto& [i, file] : ok) {
    std::string key = io::compute_key(i, 0, 10000);
    std::string ext = file.substr(file.find('.') + 1);
    ASSERT_TRUE(tar.count(key + "." + ext)) << key;
    EXPECT_EQ(tar[key + "." + ext], io::read_file(kImages + "/" + file));
    auto meta = json::parse(tar[key + ".json"]);
    EXPECT_EQ(meta["re_caption"], tar[key + ".txt"]);
    EXPECT_EQ(meta["fingerprint"], stats["fingerprint"]);
    EXPECT_EQ(meta["status"], "success");
    EXPECT_GT(meta["tokens_out"].get<int>(), 0);
    EXPECT_EQ(meta, side[static_cast<size_t>(i)]);
  }
  // GNU tar and Python's tarfile read the same members.
  auto gnu = run_cmd({"tar", "-tf", out + "/00000.tar"});
  EXPECT_EQ(gnu.rc, 0) << gnu.out;
  EXPECT_NE(gnu.out.find("000000003.jpg\n"), std::string::npos) << gnu.out;
  // GNU tar extracts what we wrote: captions equal the sidecar's, images the input bytes.
  io::make_dirs(dir + "/x");
  auto xf = run_cmd({"tar", "-xf", out + "/00000.tar", "-C", dir + "/x"});
  ASSERT_EQ(xf.rc, 0) << xf.out;
  for (auto& [i, file] : ok) {
    std::string key = io::compute_key(i, 0, 10000);
    std::string ext = file.substr(file.find('.') + 1);
    ASSERT_TRUE(io::file_exists(dir + "/x/" + key + ".txt")) << key;
    EXPECT_EQ(io::read_file(dir + "/x/" + key + ".txt"), side[static_cast<size_t>(i)]["re_caption"]) << key;
    EXPECT_EQ(io::read_file(dir + "/x/" + key + "." + ext), io::read_file(kImages + "/" + file)) << key;
    EXPECT_EQ(json::parse(io::read_file(dir + "/x/" + key + ".json")), side[static_cast<size_t>(i)]) << key;
  }
  auto py = run_cmd({"python3", "-c",
                     "import tarfile,sys; t=tarfile.open(sys.argv[1]); m=t.getmembers(); "
                     "print(len(m), sum(len(t.extractfile(x).read()) for x in m))",
                     out + "/00000.tar"});
  size_t total = 0;
  for (auto& [n, d] : tar) total += d.size();
  EXPECT_EQ(py.out, "12 " + std::to_string(total) + "\n");
}

TEST(CaptionCli, TsvGzAliasesAndNoImages) {
  auto dir = make_temp_dir("cap_tsv");
  std::string tsv = "URL\tTEXT\tid\textra\n";
  for (int i = 0; i < 3; ++i)
    tsv += kImages + "/" + kImageNames[i] + "\tcaption " + std::to_string(i) + "\tid-" + std::to_string(i) +
           (i == 1 ? "\tbad \xff utf8\n" : "\tx\n");
  tsv += "only-one-field\n";
  std::string tmp = dir + "/l.tsv";
  io::atomic_write(tmp, tsv);
  ASSERT_EQ(run_cmd({"gzip", tmp}).rc, 0);
  auto r = caption({"--list", dir + "/l.tsv.gz", "--out", dir + "/out", "--no-images"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 4u);
  EXPECT_EQ(side[0]["key"], "id-0");
  EXPECT_EQ(side[0]["caption"], "caption 0");
  EXPECT_EQ(side[0]["extra"], "x");
  EXPECT_EQ(side[3]["status"], "failed_to_parse");
  EXPECT_NE(side[3]["error_message"].get<std::string>().find("l.tsv.gz:5: expected 4 fields, found 1"),
            std::string::npos)
      << side[3].dump();
  auto tar = read_tar(dir + "/out/00000.tar");
  EXPECT_EQ(tar.size(), 6u);  // txt + json per success, no images
  EXPECT_TRUE(tar.count("id-2.txt"));
  // Invalid UTF-8 in a pass-through column is written with U+FFFD, never a crash.
  EXPECT_EQ(json::parse(tar["id-1.json"])["extra"], "bad \xef\xbf\xbd utf8");
  EXPECT_FALSE(tar.count("id-2.jpg"));
}

TEST(CaptionCli, WebdatasetTarInputKeepsKeysAndNames) {
  auto dir = make_temp_dir("cap_tar");
  std::string in = io::tar_member_bytes("abc001.jpg", io::read_file(kImages + "/gray_square.jpg"), 0) +
                   io::tar_member_bytes("abc001.txt", "original one", 0) +
                   io::tar_member_bytes("abc001.json",
                                        R"({"url": "http://x/1.jpg", "key": "abc001", "original_width": 999,
                                            "status": "success", "sha256": "s1"})",
                                        0) +
                   io::tar_member_bytes("abc002.png", io::read_file(kImages + "/small_wide.png"), 0) +
                   io::tar_member_bytes("abc002.txt", "original two", 0) +
                   io::tar_member_bytes("abc003.txt", "no image here", 0) + io::tar_end_bytes();
  io::make_dirs(dir + "/in");
  io::atomic_write(dir + "/in/part-7.tar", in);
  auto r = caption({"--input", dir + "/in/part-{7..7}.tar", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/part-7.jsonl");
  ASSERT_EQ(side.size(), 3u);
  EXPECT_EQ(side[0]["key"], "abc001");
  EXPECT_EQ(side[0]["caption"], "original one");
  EXPECT_EQ(side[0]["url"], "http://x/1.jpg");
  EXPECT_EQ(side[0]["original_width"], 999);
  EXPECT_EQ(side[0]["sha256"], "s1");
  EXPECT_EQ(side[0]["width"], 100);
  EXPECT_EQ(side[1]["key"], "abc002");
  EXPECT_EQ(side[2]["status"], "failed_to_parse");
  EXPECT_NE(side[2]["error_message"].get<std::string>().find("abc003 has no image member"),
            std::string::npos);
  auto tar = read_tar(dir + "/out/part-7.tar");
  EXPECT_TRUE(tar.count("abc001.jpg"));
  EXPECT_TRUE(tar.count("abc002.png"));
  EXPECT_TRUE(io::file_exists(dir + "/out/part-7_stats.json"));

  // A corrupt input tar: the shard fails (exit 1) and is not marked done.
  io::atomic_write(dir + "/in/bad.tar", std::string(2048, 'x'));
  auto b = caption({"--input", dir + "/in/bad.tar", "--out", dir + "/out"});
  EXPECT_EQ(b.rc, 1) << b.out;
  EXPECT_NE(b.out.find("bad.tar"), std::string::npos) << b.out;
  EXPECT_FALSE(io::file_exists(dir + "/out/bad_stats.json"));
}

TEST(CaptionCli, HttpThroughLoopbackServer) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  srv.set("/a.png", {200, io::read_file(kImages + "/wide_gradient.png"), 0, 0});
  srv.set("/b.jpg", {200, io::read_file(kImages + "/gray_square.jpg"), 0, 0});
  srv.set("/flaky.png", {200, io::read_file(kImages + "/small_wide.png"), 1, 0});
  srv.set("/html", {200, "<html></html>", 0, 0});
  auto dir = make_temp_dir("cap_http");
  std::string list;
  for (auto p : {"/a.png", "/missing.jpg", "/b.jpg", "/flaky.png", "/html"})
    list += json{{"url", srv.url(p)}, {"caption", p}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", list);
  auto r = caption({"--list", dir + "/l.jsonl", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 5u);
  EXPECT_EQ(side[0]["status"], "success");
  EXPECT_EQ(side[1]["status"], "failed_to_download");
  EXPECT_EQ(side[1]["error_message"], "HTTP 404");
  EXPECT_EQ(side[2]["status"], "success");
  EXPECT_EQ(side[3]["status"], "success") << side[3].dump();  // 503 once, then retried
  EXPECT_EQ(srv.hits("/flaky.png"), 2);
  EXPECT_EQ(side[4]["status"], "failed_to_decode");
  auto tar = read_tar(dir + "/out/00000.tar");
  EXPECT_EQ(tar[io::compute_key(0, 0, 10000) + ".png"], io::read_file(kImages + "/wide_gradient.png"));
  EXPECT_EQ(read_json(dir + "/out/00000_stats.json")["status_dict"]["HTTP 404"], 1);
}

TEST(CaptionCli, BatchInvariance) {
  auto dir = make_temp_dir("cap_batch");
  auto list = write_list(dir, 12);
  auto a = caption({"--list", list, "--out", dir + "/b1", "--max-batch", "1", "--vision-batch", "1",
                    "--max-new-tokens", "24"});
  ASSERT_EQ(a.rc, 0) << a.out;
  auto b = caption({"--list", list, "--out", dir + "/b16", "--max-batch", "16", "--vision-batch", "8",
                    "--max-new-tokens", "24", "--threads", "2", "--stats-json", dir + "/b16.json"});
  ASSERT_EQ(b.rc, 0) << b.out;
  // The tower on the decoder's thread (no overlap), and everything on one thread.
  auto c = caption({"--list", list, "--out", dir + "/sync", "--max-batch", "4", "--vision-batch", "3",
                    "--max-new-tokens", "24", "--threads", "2", "--no-vision-thread", "--stats-json",
                    dir + "/sync.json"});
  ASSERT_EQ(c.rc, 0) << c.out;
  auto d = caption(
      {"--list", list, "--out", dir + "/t1", "--max-batch", "5", "--max-new-tokens", "24", "--threads", "1"});
  ASSERT_EQ(d.rc, 0) << d.out;
  EXPECT_EQ(read_json(dir + "/b16.json")["vision_thread"], true);
  EXPECT_EQ(read_json(dir + "/sync.json")["vision_thread"], false);
  auto x = sidecar_by_key(dir + "/b1", {"00000"}), y = sidecar_by_key(dir + "/b16", {"00000"});
  auto z = sidecar_by_key(dir + "/sync", {"00000"}), w = sidecar_by_key(dir + "/t1", {"00000"});
  ASSERT_EQ(x.size(), 12u);
  ASSERT_EQ(y.size(), 12u);
  ASSERT_EQ(z.size(), 12u);
  ASSERT_EQ(w.size(), 12u);
  for (auto& [k, j] : x) {
    EXPECT_EQ(j["re_caption"], y[k]["re_caption"]) << k;
    EXPECT_EQ(j["tokens_out"], y[k]["tokens_out"]) << k;
    EXPECT_EQ(j["re_caption"], z[k]["re_caption"]) << k;
    EXPECT_EQ(j["re_caption"], w[k]["re_caption"]) << k;
  }
  // Same fingerprint: batch size is not part of it.
  EXPECT_EQ(read_json(dir + "/b1/00000_stats.json")["fingerprint"],
            read_json(dir + "/b16/00000_stats.json")["fingerprint"]);
}

TEST(CaptionCli, SeveralCaptionsShareOnePrefill) {
  auto dir = make_temp_dir("cap_multi");
  auto list = write_list(dir, 4);
  auto one = caption({"--list", list, "--out", dir + "/one", "--max-new-tokens", "20"});
  ASSERT_EQ(one.rc, 0) << one.out;
  // Greedy: every caption continues the shared prompt blocks exactly as a lone sequence does.
  auto three =
      caption({"--list", list, "--out", dir + "/three", "--max-new-tokens", "20", "--num-captions", "3"});
  ASSERT_EQ(three.rc, 0) << three.out;
  auto a = sidecar_by_key(dir + "/one", {"00000"}), b = sidecar_by_key(dir + "/three", {"00000"});
  auto tar = read_tar(dir + "/three/00000.tar");
  for (auto& [k, j] : a) {
    ASSERT_EQ(b[k]["re_captions"].size(), 3u);
    for (auto& c : b[k]["re_captions"]) EXPECT_EQ(c, j["re_caption"]) << k;
    EXPECT_EQ(tar[k + ".1.txt"], j["re_caption"].get<std::string>());
    EXPECT_EQ(tar[k + ".2.txt"], j["re_caption"].get<std::string>());
  }
  // Sampling: per-sample seeds, so the batch size does not change the captions, and the
  // three captions of an image differ.
  std::vector<std::string> s{"--list",        list,  "--max-new-tokens", "20", "--num-captions", "3",
                             "--temperature", "1.5", "--top-k",          "50", "--top-p",        "0.95",
                             "--seed",        "7"};
  auto s1 = s, s2 = s;
  s1.insert(s1.end(), {"--out", dir + "/s1", "--max-batch", "3"});
  s2.insert(s2.end(), {"--out", dir + "/s2", "--max-batch", "12"});
  ASSERT_EQ(caption(s1).rc, 0);
  ASSERT_EQ(caption(s2).rc, 0);
  auto c1 = sidecar_by_key(dir + "/s1", {"00000"}), c2 = sidecar_by_key(dir + "/s2", {"00000"});
  int distinct = 0;
  for (auto& [k, j] : c1) {
    EXPECT_EQ(j["re_captions"], c2[k]["re_captions"]) << k;
    std::set<std::string> u;
    for (auto& c : j["re_captions"]) u.insert(c.get<std::string>());
    distinct += u.size() > 1;
  }
  EXPECT_GT(distinct, 0);
}

TEST(CaptionCli, GreedyCaptionsEqualTraceGenIds) {
  auto dir = make_temp_dir("cap_trace");
  auto list = write_list(dir, 4);
  const std::string prompt =
      "Please generate a detailed caption of this image. Please be as descriptive as possible.";
  auto r = caption({"--list", list, "--out", dir + "/out", "--max-new-tokens", "16", "--max-batch", "4"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  auto tar = read_tar(dir + "/out/00000.tar");
  auto tok = recap::models::Tokenizer::from_file(kTokenizer);
  ASSERT_EQ(side.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    std::string st = dir + "/trace" + std::to_string(i) + ".safetensors";
    auto t = run_cmd({RECAP_BIN, "trace", "--weights", kWeights, "--tokenizer", kTokenizer, "--image",
                      kImages + "/" + kImageNames[static_cast<size_t>(i)], "--prompt", prompt,
                      "--max-new-tokens", "16", "--out", st});
    ASSERT_EQ(t.rc, 0) << t.out;
    auto f = io::SafetensorsFile::open(st);
    auto it = f->tensors().find("gen.ids");
    ASSERT_NE(it, f->tensors().end());
    std::vector<int32_t> ids;
    const int64_t* p = reinterpret_cast<const int64_t*>(it->second.data);
    for (int64_t j = 0; j < it->second.numel(); ++j) ids.push_back(static_cast<int32_t>(p[j]));
    // trace keeps the stop id as its last id; caption drops it.
    bool stopped =
        static_cast<int>(ids.size()) < 16 || (ids.size() == 16 && (ids.back() == 2 || ids.back() == 5));
    if (stopped && !ids.empty() && (ids.back() == 2 || ids.back() == 5)) ids.pop_back();
    std::string key = io::compute_key(i, 0, 10000);
    EXPECT_EQ(side[static_cast<size_t>(i)]["tokens_out"], static_cast<int64_t>(ids.size())) << key;
    EXPECT_EQ(tar[key + ".txt"], tok.decode_output(ids)) << key;
  }
}

TEST(CaptionCli, FingerprintSkipRefuseOverwrite) {
  auto dir = make_temp_dir("cap_fp");
  auto list = write_list(dir, 3);
  auto r = caption({"--list", list, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  std::string tar_before = io::read_file(dir + "/out/00000.tar");
  std::string stats_before = io::read_file(dir + "/out/00000_stats.json");
  auto again = caption({"--list", list, "--out", dir + "/out"});
  EXPECT_EQ(again.rc, 0) << again.out;
  EXPECT_NE(again.out.find("already done"), std::string::npos) << again.out;
  EXPECT_EQ(io::read_file(dir + "/out/00000.tar"), tar_before);
  auto diff = caption({"--list", list, "--out", dir + "/out", "--max-new-tokens", "5"});
  EXPECT_EQ(diff.rc, 2) << diff.out;
  EXPECT_NE(diff.out.find("fingerprint"), std::string::npos) << diff.out;
  EXPECT_NE(diff.out.find("--overwrite"), std::string::npos) << diff.out;
  EXPECT_EQ(io::read_file(dir + "/out/00000_stats.json"), stats_before);
  auto over = caption({"--list", list, "--out", dir + "/out", "--max-new-tokens", "5", "--overwrite"});
  EXPECT_EQ(over.rc, 0) << over.out;
  EXPECT_NE(read_json(dir + "/out/00000_stats.json")["fingerprint"],
            json::parse(stats_before)["fingerprint"]);
  for (auto& j : read_jsonl(dir + "/out/00000.jsonl")) EXPECT_LE(j["tokens_out"].get<int>(), 5);
}

namespace {
// 6 local images, then 6 HTTP images that stall (so a run is reliably caught mid-shard).
std::string interrupted_list(const std::string& dir, LoopbackHttpServer& srv, int stall_ms) {
  std::string text;
  for (int i = 0; i < 12; ++i) {
    std::string url;
    if (i < 6) {
      url = kImages + "/" + kImageNames[static_cast<size_t>(i % 4)];
    } else {
      std::string path = "/slow";  // appended: g++ 12 -Wrestrict misfires on "lit" + std::string&&
      path += std::to_string(i);
      path += ".png";
      srv.set(path,
              {200, io::read_file(kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]), 0, stall_ms});
      url = srv.url(path);
    }
    std::string cap = "c";  // appended, as above
    cap += std::to_string(i);
    text += json{{"url", url}, {"caption", cap}}.dump() + "\n";
  }
  io::atomic_write(dir + "/l.jsonl", text);
  return dir + "/l.jsonl";
}

void expect_every_sample_once(const std::string& out, const std::string& ref_out) {
  auto side = read_jsonl(out + "/00000.jsonl");
  ASSERT_EQ(side.size(), 12u);
  std::set<std::string> keys;
  for (auto& j : side) {
    EXPECT_TRUE(keys.insert(j["key"].get<std::string>()).second);
    EXPECT_EQ(j["status"], "success") << j.dump();
  }
  std::vector<std::string> order;
  auto tar = read_tar(out + "/00000.tar", &order);
  std::set<std::string> names(order.begin(), order.end());
  EXPECT_EQ(names.size(), order.size()) << "a tar member appears twice";
  EXPECT_EQ(order.size(), 36u);
  // Same captions as an uninterrupted run.
  auto ref = sidecar_by_key(ref_out, {"00000"});
  for (auto& j : side) EXPECT_EQ(j["re_caption"], ref[j["key"].get<std::string>()]["re_caption"]);
  EXPECT_EQ(read_json(out + "/00000_stats.json")["count"], 12);
}
}  // namespace

TEST(CaptionCli, ResumeAfterKill9) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir("cap_kill");
  auto list = interrupted_list(dir, srv, 60000);
  auto args = caption_args({"--list", list, "--out", dir + "/out", "--http-timeout", "120"});
  pid_t pid = spawn_cmd(args, dir + "/run1.log");
  ASSERT_GT(pid, 0);
  const std::string log = dir + "/out/.00000.log.partial";
  // Header + the 6 local samples finish while the HTTP ones stall.
  bool reached = wait_until([&] { return count_lines(log) >= 7; });
  ::kill(pid, SIGKILL);
  wait_exit(pid);
  ASSERT_TRUE(reached) << io::read_file(dir + "/run1.log");
  EXPECT_FALSE(io::file_exists(dir + "/out/00000_stats.json"));

  interrupted_list(dir, srv, 0);
  auto r = caption({"--list", list, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("resuming, 6 sample(s) already done"), std::string::npos) << r.out;
  EXPECT_EQ(read_json(dir + "/out/00000_stats.json")["resumed_samples"], 6);
  auto ref = caption({"--list", list, "--out", dir + "/ref"});
  ASSERT_EQ(ref.rc, 0) << ref.out;
  expect_every_sample_once(dir + "/out", dir + "/ref");
}

namespace {
// A stop signal mid-shard: exit 75, what was finished is kept, a rerun completes the shard
// with every sample exactly once.
void stop_then_resume(int sig, const char* tag) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir(tag);
  auto list = interrupted_list(dir, srv, 60000);
  pid_t pid = spawn_cmd(caption_args({"--list", list, "--out", dir + "/out", "--http-timeout", "120"}),
                        dir + "/run1.log");
  ASSERT_GT(pid, 0);
  bool reached = wait_until([&] { return count_lines(dir + "/out/.00000.log.partial") >= 7; });
  ::kill(pid, sig);
  int rc = wait_exit(pid);
  ASSERT_TRUE(reached);
  std::string log = io::read_file(dir + "/run1.log");
  EXPECT_EQ(rc, 75) << log;
  EXPECT_NE(log.find(std::string("caption: stopped by signal ") + std::to_string(sig)), std::string::npos)
      << log;
  EXPECT_NE(log.find("rerun the same command to resume"), std::string::npos) << log;
  EXPECT_FALSE(io::file_exists(dir + "/out/00000_stats.json"));

  interrupted_list(dir, srv, 0);
  auto r = caption({"--list", list, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto ref = caption({"--list", list, "--out", dir + "/ref"});
  ASSERT_EQ(ref.rc, 0) << ref.out;
  expect_every_sample_once(dir + "/out", dir + "/ref");
}
}  // namespace

TEST(CaptionCli, SigtermExits75ThenResumes) {
  stop_then_resume(SIGTERM, "cap_term");
}

TEST(CaptionCli, SigintBehavesLikeSigterm) {
  stop_then_resume(SIGINT, "cap_int");
}

TEST(CaptionCli, SecondSignalDuringGracefulStopExitsAtOnce) {
  // 8 samples, two of each image, decoded 4 at a time for 2000 tokens (no stop token comes
  // on the tiny model): when the first four are written the other four have just started,
  // so the graceful stop (finish them) takes as long as a whole wave. A second SIGTERM
  // right after the first is acknowledged must end the process before that.
  auto dir = make_temp_dir("cap_term2");
  auto list = write_list(dir, 8);
  auto args =
      caption_args({"--list", list, "--out", dir + "/out", "--max-new-tokens", "2000", "--max-batch", "4"});
  pid_t pid = spawn_cmd(args, dir + "/run1.log");
  ASSERT_GT(pid, 0);
  const std::string partial = dir + "/out/.00000.log.partial";
  bool reached = wait_until([&] { return count_lines(partial) >= 5; });
  ::kill(pid, SIGTERM);
  bool acknowledged = wait_until(
      [&] { return io::read_file(dir + "/run1.log").find("stop requested") != std::string::npos; });
  ::kill(pid, SIGTERM);
  int rc = wait_exit(pid);
  ASSERT_TRUE(reached) << io::read_file(dir + "/run1.log");
  ASSERT_TRUE(acknowledged) << io::read_file(dir + "/run1.log");
  std::string log = io::read_file(dir + "/run1.log");
  EXPECT_EQ(rc, 75) << log;
  EXPECT_NE(log.find("second signal, exiting now (exit 75)"), std::string::npos) << log;
  // It did not wait for the second wave nor write a summary.
  EXPECT_EQ(log.find("caption: interrupted"), std::string::npos) << log;
  EXPECT_TRUE(io::file_exists(partial));
  EXPECT_FALSE(io::file_exists(dir + "/out/00000_stats.json"));
  // What was written is kept: a rerun finishes the shard, every sample exactly once.
  auto r = run_cmd(args);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("resuming, "), std::string::npos) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(side[i]["key"], io::compute_key(static_cast<int64_t>(i), 0, 10000));
    EXPECT_EQ(side[i]["status"], "success");
  }
  std::vector<std::string> order;
  read_tar(dir + "/out/00000.tar", &order);
  EXPECT_EQ(order.size(), 24u);
  EXPECT_EQ(std::set<std::string>(order.begin(), order.end()).size(), 24u);
}

TEST(CaptionCli, ShardAssignmentFlagsAndSlurmEnv) {
  auto dir = make_temp_dir("cap_assign");
  auto list = write_list(dir, 8);
  auto r = caption({"--list", list, "--out", dir + "/a", "--samples-per-shard", "2", "--shard-index", "1",
                    "--shard-count", "2"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("worker 1 of 2 (from flags) takes 2"), std::string::npos) << r.out;
  for (auto [s, want] : std::vector<std::pair<std::string, bool>>{
           {"00000", false}, {"00001", true}, {"00002", false}, {"00003", true}})
    EXPECT_EQ(io::file_exists(dir + "/a/" + s + "_stats.json"), want) << s;
  // Keys follow img2dataset: shard id * 10 (ceil(log10(2)) = 1 digit) + index.
  auto side = read_jsonl(dir + "/a/00003.jsonl");
  ASSERT_EQ(side.size(), 2u);
  EXPECT_EQ(side[1]["key"], "000031");

  std::vector<std::string> env{"env", "SLURM_ARRAY_TASK_ID=4", "SLURM_ARRAY_TASK_MIN=4",
                               "SLURM_ARRAY_TASK_COUNT=2"};
  auto args = caption_args({"--list", list, "--out", dir + "/b", "--samples-per-shard", "2"});
  env.insert(env.end(), args.begin(), args.end());
  auto s = run_cmd(env);
  ASSERT_EQ(s.rc, 0) << s.out;
  EXPECT_NE(s.out.find("worker 0 of 2 (from SLURM_ARRAY_TASK_ID)"), std::string::npos) << s.out;
  EXPECT_TRUE(io::file_exists(dir + "/b/00002_stats.json"));
  EXPECT_FALSE(io::file_exists(dir + "/b/00001_stats.json"));
}

TEST(CaptionCli, UsageErrorsExit2) {
  auto dir = make_temp_dir("cap_usage");
  auto missing = caption({"--list", dir + "/nope.jsonl", "--out", dir + "/out"});
  EXPECT_EQ(missing.rc, 2);
  EXPECT_NE(missing.out.find("nope.jsonl"), std::string::npos) << missing.out;
  auto list = write_list(dir, 1);
  auto shear = caption({"--list", list, "--out", dir + "/out", "--shear", "letters"});
  EXPECT_EQ(shear.rc, 2);
  EXPECT_NE(shear.out.find("--shear"), std::string::npos);
  auto weights = run_cmd({RECAP_BIN, "caption", "--weights", dir + "/no_model", "--tokenizer", kTokenizer,
                          "--list", list, "--out", dir + "/out"});
  EXPECT_EQ(weights.rc, 2) << weights.out;
  auto noinput = caption({"--out", dir + "/out"});
  EXPECT_EQ(noinput.rc, 2);
  auto index = caption({"--list", list, "--out", dir + "/out", "--shard-index", "3", "--shard-count", "2"});
  EXPECT_EQ(index.rc, 2);
  EXPECT_NE(index.out.find("outside [0, 2)"), std::string::npos) << index.out;
  auto badkv = caption({"--list", list, "--out", dir + "/out", "--kv-cache-mb", "0"});
  EXPECT_EQ(badkv.rc, 0) << badkv.out;  // 0 = automatic
  auto tokenizer = run_cmd({RECAP_BIN, "caption", "--weights", kWeights, "--tokenizer", dir + "/none.json",
                            "--list", list, "--out", dir + "/out2"});
  EXPECT_EQ(tokenizer.rc, 2) << tokenizer.out;
}

TEST(CaptionCli, ShearAndFirstSentence) {
  auto dir = make_temp_dir("cap_shear");
  std::string text;
  for (int i = 0; i < 4; ++i)
    text +=
        json{{"url", kImages + "/" + kImageNames[static_cast<size_t>(i)]}, {"caption", "two words"}}.dump() +
        "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  auto r = caption(
      {"--list", dir + "/l.jsonl", "--out", dir + "/w", "--shear", "words", "--max-new-tokens", "30"});
  ASSERT_EQ(r.rc, 0) << r.out;
  for (auto& j : read_jsonl(dir + "/w/00000.jsonl")) {
    std::string c = j["re_caption"];
    int words = 0;
    bool in = false;
    for (char ch : c) {
      if (std::isspace(static_cast<unsigned char>(ch)))
        in = false;
      else if (!in)
        in = true, ++words;
    }
    EXPECT_LE(words, 2) << c;
  }
  auto t =
      caption({"--list", dir + "/l.jsonl", "--out", dir + "/t", "--shear", "tokens", "--first-sentence"});
  ASSERT_EQ(t.rc, 0) << t.out;
  for (auto& j : read_jsonl(dir + "/t/00000.jsonl"))
    EXPECT_EQ(j["re_caption"].get<std::string>().find('.'), std::string::npos);
}

TEST(CaptionCli, KvCacheBudgetBoundsTheBatch) {
  // Tiny model: 8 KiB per 16-position block, so 1 MiB = 128 blocks; a sequence of 119 prompt
  // positions + 700 new tokens needs 52 blocks: only two fit at once, whatever --max-batch says.
  auto dir = make_temp_dir("cap_kv");
  auto list = write_list(dir, 4);
  auto a = caption({"--list", list, "--out", dir + "/tight", "--max-new-tokens", "700", "--max-batch", "8",
                    "--kv-cache-mb", "1"});
  ASSERT_EQ(a.rc, 0) << a.out;
  EXPECT_NE(a.out.find("kv cache: 128 blocks"), std::string::npos) << a.out;
  auto b = caption({"--list", list, "--out", dir + "/one", "--max-new-tokens", "700", "--max-batch", "1"});
  ASSERT_EQ(b.rc, 0) << b.out;
  auto x = sidecar_by_key(dir + "/tight", {"00000"}), y = sidecar_by_key(dir + "/one", {"00000"});
  ASSERT_EQ(x.size(), 4u);
  for (auto& [k, j] : x) EXPECT_EQ(j["re_caption"], y[k]["re_caption"]) << k;
  // Three captions of one image need 52 + 2 * 45 blocks: more than the budget, refused up front.
  auto c = caption({"--list", list, "--out", dir + "/multi", "--max-new-tokens", "700", "--max-batch", "8",
                    "--kv-cache-mb", "1", "--num-captions", "3"});
  EXPECT_EQ(c.rc, 2) << c.out;
  EXPECT_NE(c.out.find("--kv-cache-mb 1 holds 128 blocks; one image needs 142"), std::string::npos) << c.out;
}

TEST(CaptionCli, TwoWorkersOnTheSameShardsNeverDuplicate) {
  // Two processes given the same work: each shard is locked by one of them; the other skips
  // it (busy) or finds it done. Every sample ends up exactly once.
  auto dir = make_temp_dir("cap_two");
  auto list = write_list(dir, 16);
  auto args = caption_args(
      {"--list", list, "--out", dir + "/out", "--samples-per-shard", "2", "--max-new-tokens", "40"});
  pid_t a = spawn_cmd(args, dir + "/a.log");
  pid_t b = spawn_cmd(args, dir + "/b.log");
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  EXPECT_EQ(wait_exit(a), 0) << io::read_file(dir + "/a.log");
  EXPECT_EQ(wait_exit(b), 0) << io::read_file(dir + "/b.log");
  std::vector<std::string> shards;
  for (int s = 0; s < 8; ++s) {
    std::string name = "0000" + std::to_string(s);
    shards.push_back(name);
    EXPECT_TRUE(io::file_exists(dir + "/out/" + name + "_stats.json")) << name;
    std::vector<std::string> order;
    read_tar(dir + "/out/" + name + ".tar", &order);
    EXPECT_EQ(order.size(), 6u) << name;
  }
  EXPECT_EQ(sidecar_by_key(dir + "/out", shards).size(), 16u);
}

namespace {
int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

int word_count(const std::string& s) {
  int words = 0;
  bool in = false;
  for (char ch : s) {
    if (std::isspace(static_cast<unsigned char>(ch))) {
      in = false;
    } else if (!in) {
      in = true;
      ++words;
    }
  }
  return words;
}
}  // namespace

TEST(CaptionCli, BadListLinesAndImageLimitsAreRecordedAndWarned) {
  // One shard holding every per-sample failure a list can produce; the good samples around
  // them are still captioned.
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  srv.set("/stall.png", {200, io::read_file(kImages + "/small_wide.png"), 0, 20000});
  auto dir = make_temp_dir("cap_bad");
  const std::string list = dir + "/l.jsonl";
  std::vector<std::string> lines{
      json{{"url", kImages + "/gray_square.jpg"}, {"caption", "ok first"}}.dump(),
      json{{"caption", "no url here"}}.dump(),
      R"({"url": "x.png", "caption": )",
      json{{"url", kImages + "/wide_gradient.png"}, {"caption", "28754 bytes"}}.dump(),
      json{{"url", kImages + "/tall_alpha.png"}, {"caption", "90x150 pixels"}}.dump(),
      json{{"url", srv.url("/stall.png")}, {"caption", "stalls"}}.dump(),
  };
  for (int i = 0; i < 20; ++i) lines.push_back(std::string("{broken ") + std::to_string(i));
  lines.push_back(json{{"url", kImages + "/small_wide.png"}, {"caption", "ok last"}}.dump());
  std::string text;
  for (auto& l : lines) text += l + "\n";
  io::atomic_write(list, text);
  auto r = caption({"--list", list, "--out", dir + "/out", "--max-image-bytes", "20000", "--max-image-pixels",
                    "12000", "--http-timeout", "0.5", "--http-retries", "0", "--stats-json",
                    dir + "/summary.json"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), lines.size());
  auto status_and_error = [&](size_t i, const std::string& status, const std::string& error) {
    SCOPED_TRACE(side[i].dump());
    EXPECT_EQ(side[i]["key"], io::compute_key(static_cast<int64_t>(i), 0, 10000));
    EXPECT_EQ(side[i]["status"], status);
    ASSERT_TRUE(side[i]["error_message"].is_string());
    EXPECT_NE(side[i]["error_message"].get<std::string>().find(error), std::string::npos);
  };
  EXPECT_EQ(side[0]["status"], "success");
  status_and_error(1, "failed_to_parse", list + ":2: no 'url' column");
  status_and_error(2, "failed_to_parse", list + ":3: invalid JSON");
  status_and_error(3, "failed_to_download", "larger than the size limit of 20000 bytes");
  status_and_error(4, "failed_to_decode", "too_large");
  EXPECT_NE(side[4]["error_message"].get<std::string>().find("more than the limit of 12000"),
            std::string::npos);
  EXPECT_NE(side[4]["error_message"].get<std::string>().find("--max-image-pixels"), std::string::npos);
  status_and_error(5, "failed_to_download", "timed out");
  for (size_t i = 6; i < 26; ++i) status_and_error(i, "failed_to_parse", "invalid JSON");
  EXPECT_EQ(side[26]["status"], "success");
  EXPECT_EQ(side[26]["caption"], "ok last");
  auto tar = read_tar(dir + "/out/00000.tar");
  EXPECT_EQ(tar.size(), 6u);  // the two successes
  auto stats = read_json(dir + "/out/00000_stats.json");
  EXPECT_EQ(stats["count"], 27);
  EXPECT_EQ(stats["successes"], 2);
  EXPECT_EQ(stats["failed_to_parse"], 22);
  EXPECT_EQ(stats["failed_to_download"], 2);
  EXPECT_EQ(stats["failed_to_decode"], 1);

  // stderr: each malformed line with file and line number, the first 20, then a count.
  EXPECT_NE(r.out.find("warning: malformed input: " + list + ":2: no 'url' column"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("warning: malformed input: " + list + ":3: invalid JSON"), std::string::npos);
  EXPECT_NE(r.out.find("warning: malformed input: " + list + ":24: invalid JSON"), std::string::npos);
  EXPECT_EQ(r.out.find(list + ":25:"), std::string::npos) << "the 21st malformed line is only counted";
  EXPECT_EQ(count_of(r.out, "warning: malformed input: "), 20) << r.out;
  EXPECT_NE(r.out.find("warning: ... 2 more malformed input(s) not shown (22 in all"), std::string::npos)
      << r.out;
  EXPECT_EQ(read_json(dir + "/summary.json")["malformed_inputs"], 22);
  // The limits hold for the image that passes them.
  auto big = caption({"--list", list, "--out", dir + "/big", "--max-image-pixels", "0", "--http-timeout",
                      "0.5", "--http-retries", "0"});
  ASSERT_EQ(big.rc, 0) << big.out;
  auto side2 = read_jsonl(dir + "/big/00000.jsonl");
  ASSERT_EQ(side2.size(), lines.size());
  EXPECT_EQ(side2[3]["status"], "success") << side2[3].dump();
  EXPECT_EQ(side2[4]["status"], "success") << side2[4].dump();
}

TEST(CaptionCli, CorruptGzipListAndBadTarJson) {
  auto dir = make_temp_dir("cap_badin");
  // A .gz list whose deflate data is damaged: refused before any work, naming the file.
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += json{{"url", kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]},
                 {"caption", std::string("caption number ") + std::to_string(i)}}
                .dump() +
            "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  ASSERT_EQ(run_cmd({"gzip", dir + "/l.jsonl"}).rc, 0);
  std::string gz = io::read_file(dir + "/l.jsonl.gz");
  ASSERT_GT(gz.size(), 60u);
  for (size_t i = 20; i < 40; ++i) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  io::atomic_write(dir + "/l.jsonl.gz", gz);
  auto r = caption({"--list", dir + "/l.jsonl.gz", "--out", dir + "/out"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("caption: error: " + dir + "/l.jsonl.gz: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gzip"), std::string::npos) << r.out;
  EXPECT_FALSE(io::file_exists(dir + "/out/00000.tar"));
  // Cut short, the same.
  io::atomic_write(dir + "/t.jsonl.gz", gz.substr(0, gz.size() / 2));
  auto t = caption({"--list", dir + "/t.jsonl.gz", "--out", dir + "/out"});
  EXPECT_EQ(t.rc, 2) << t.out;
  EXPECT_NE(t.out.find(dir + "/t.jsonl.gz: "), std::string::npos) << t.out;

  // A webdataset sample whose {key}.json is not JSON: that sample is failed_to_parse (its
  // metadata cannot be carried over), warned about, and the rest of the tar is captioned.
  std::string in = io::tar_member_bytes("k1.jpg", io::read_file(kImages + "/gray_square.jpg"), 0) +
                   io::tar_member_bytes("k1.txt", "one", 0) +
                   io::tar_member_bytes("k1.json", "{\"url\": ", 0) +
                   io::tar_member_bytes("k2.png", io::read_file(kImages + "/small_wide.png"), 0) +
                   io::tar_member_bytes("k2.txt", "two", 0) +
                   io::tar_member_bytes("k2.json", R"({"url": "http://x/2.png"})", 0) + io::tar_end_bytes();
  io::atomic_write(dir + "/in.tar", in);
  auto b = caption({"--input", dir + "/in.tar", "--out", dir + "/tarout"});
  ASSERT_EQ(b.rc, 0) << b.out;
  auto side = read_jsonl(dir + "/tarout/in.jsonl");
  ASSERT_EQ(side.size(), 2u);
  EXPECT_EQ(side[0]["key"], "k1");
  EXPECT_EQ(side[0]["status"], "failed_to_parse");
  EXPECT_NE(side[0]["error_message"].get<std::string>().find(dir + "/in.tar: k1.json is not valid JSON"),
            std::string::npos)
      << side[0].dump();
  EXPECT_NE(b.out.find("warning: malformed input: " + dir + "/in.tar: k1.json is not valid JSON (key k1"),
            std::string::npos)
      << b.out;
  EXPECT_EQ(side[1]["key"], "k2");
  EXPECT_EQ(side[1]["status"], "success");
  EXPECT_EQ(side[1]["url"], "http://x/2.png");
  auto tar = read_tar(dir + "/tarout/in.tar");
  EXPECT_EQ(tar.size(), 3u);
  EXPECT_TRUE(tar.count("k2.png"));
  EXPECT_TRUE(io::file_exists(dir + "/tarout/in_stats.json"));
}

TEST(CaptionCli, BracePatternListsGiveOneShardEach) {
  auto dir = make_temp_dir("cap_brace");
  io::make_dirs(dir + "/lists");
  for (int l = 0; l < 3; ++l) {
    std::string text;
    for (int i = 0; i < 2; ++i)
      text += json{{"url", kImages + "/" + kImageNames[static_cast<size_t>((l + i) % 4)]},
                   {"caption", std::string("list ") + std::to_string(l) + " sample " + std::to_string(i)}}
                  .dump() +
              "\n";
    io::atomic_write(dir + "/lists/0000" + std::to_string(l) + ".jsonl", text);
  }
  auto r = caption({"--list", dir + "/lists/{00000..00002}.jsonl", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("caption: 3 input shard(s)"), std::string::npos) << r.out;
  for (int l = 0; l < 3; ++l) {
    std::string name = std::string("0000") + std::to_string(l);
    SCOPED_TRACE(name);
    EXPECT_TRUE(io::file_exists(dir + "/out/" + name + "_stats.json"));
    auto side = read_jsonl(dir + "/out/" + name + ".jsonl");
    ASSERT_EQ(side.size(), 2u);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(side[static_cast<size_t>(i)]["caption"],
                std::string("list ") + std::to_string(l) + " sample " + std::to_string(i));
      EXPECT_EQ(side[static_cast<size_t>(i)]["key"], io::compute_key(i, l, 10000));
      EXPECT_EQ(side[static_cast<size_t>(i)]["status"], "success");
    }
    EXPECT_EQ(read_tar(dir + "/out/" + name + ".tar").size(), 6u);
  }
  EXPECT_FALSE(io::file_exists(dir + "/out/00003.tar"));
}

TEST(CaptionCli, PlainLogLinesWhenNotATerminal) {
  // Output to a pipe: a "progress:" line every --log-interval seconds and a line per shard.
  auto dir = make_temp_dir("cap_log");
  auto list = write_list(dir, 6);
  auto r = caption({"--list", list, "--out", dir + "/out", "--samples-per-shard", "3", "--log-interval",
                    "0.02", "--max-new-tokens", "40", "--max-batch", "2"});
  ASSERT_EQ(r.rc, 0) << r.out;
  // The last line is forced; more than one means the interval produced some.
  EXPECT_GE(count_of(r.out, "\nprogress: shards "), 2) << r.out;
  EXPECT_NE(r.out.find("\nprogress: shards 2/2 | samples 6 (ok 6, failed 0) | "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << "no terminal control on a pipe";
  for (auto name : {"00000", "00001"})
    EXPECT_NE(r.out.find(std::string("\nshard ") + name + ": done, 3 samples (3 ok) in "), std::string::npos)
        << r.out;
  EXPECT_NE(r.out.find("-> " + dir + "/out/00001.tar\n"), std::string::npos) << r.out;
  // A long interval: only the final line.
  auto q = caption({"--list", list, "--out", dir + "/out2", "--samples-per-shard", "3"});
  ASSERT_EQ(q.rc, 0) << q.out;
  EXPECT_EQ(count_of(q.out, "progress: "), 1) << q.out;
  auto quiet = caption({"--list", list, "--out", dir + "/out3", "--quiet"});
  ASSERT_EQ(quiet.rc, 0) << quiet.out;
  EXPECT_EQ(count_of(quiet.out, "progress: "), 0) << quiet.out;
}

TEST(CaptionCli, MaxSamplesLeavingShardsUnfinishedExits75) {
  auto dir = make_temp_dir("cap_maxs");
  auto list = write_list(dir, 6);
  const std::string out = dir + "/out";
  auto a = caption({"--list", list, "--out", out, "--samples-per-shard", "3", "--max-samples", "2",
                    "--stats-json", dir + "/a.json"});
  EXPECT_EQ(a.rc, 75) << a.out;
  EXPECT_NE(a.out.find("caption: stopped at --max-samples 2 with 2 shard(s) unfinished"), std::string::npos)
      << a.out;
  EXPECT_NE(a.out.find("rerun the same command to continue (exit 75)"), std::string::npos) << a.out;
  EXPECT_TRUE(io::file_exists(out + "/.00000.log.partial"));
  EXPECT_FALSE(io::file_exists(out + "/00000_stats.json"));
  auto sa = read_json(dir + "/a.json");
  EXPECT_EQ(sa["samples"], 2);
  EXPECT_EQ(sa["max_samples_reached"], true);
  EXPECT_EQ(sa["unfinished_shards"], 2);
  EXPECT_EQ(sa["interrupted"], false);
  // The rest fits in 4: the run continues shard 00000 and does 00001 entirely: exit 0.
  auto b = caption({"--list", list, "--out", out, "--samples-per-shard", "3", "--max-samples", "4"});
  EXPECT_EQ(b.rc, 0) << b.out;
  EXPECT_NE(b.out.find("resuming, 2 sample(s) already done"), std::string::npos) << b.out;
  EXPECT_NE(b.out.find("caption: finished:"), std::string::npos) << b.out;
  EXPECT_EQ(sidecar_by_key(out, {"00000", "00001"}).size(), 6u);
  for (auto s : {"00000", "00001"}) {
    EXPECT_TRUE(io::file_exists(out + "/" + std::string(s) + "_stats.json")) << s;
    EXPECT_EQ(read_jsonl(out + "/" + std::string(s) + ".jsonl").size(), 3u) << s;
  }
  // A limit equal to a whole shard finishes it and stops before opening the next one.
  auto c = caption({"--list", list, "--out", dir + "/c", "--samples-per-shard", "3", "--max-samples", "3"});
  EXPECT_EQ(c.rc, 75) << c.out;
  EXPECT_TRUE(io::file_exists(dir + "/c/00000_stats.json"));
  EXPECT_FALSE(io::file_exists(dir + "/c/.00001.log.partial"));
  EXPECT_NE(c.out.find("with 1 shard(s) unfinished"), std::string::npos) << c.out;
}

TEST(CaptionCli, ShearTokensAndWordsAgainstTheOriginalLength) {
  // --shear tokens keeps the first n generated tokens, n = the original caption's token
  // count. Re-encoding the cut text is no measure (the tiny model's random tokens do not
  // round-trip through BPE to the same count), so the check is against the generated ids
  // themselves, taken from `trace` (greedy, same prompt and image).
  auto dir = make_temp_dir("cap_shear2");
  const std::vector<std::string> originals{"a gray square", "a wide and colourful gradient over the frame",
                                           "tall", "a small wide picture with a light blue tint"};
  std::string text;
  for (size_t i = 0; i < 4; ++i)
    text += json{{"url", kImages + "/" + kImageNames[i]}, {"caption", originals[i]}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  auto tk = caption(
      {"--list", dir + "/l.jsonl", "--out", dir + "/tk", "--max-new-tokens", "40", "--shear", "tokens"});
  ASSERT_EQ(tk.rc, 0) << tk.out;
  auto tok = recap::models::Tokenizer::from_file(kTokenizer);
  auto t = read_jsonl(dir + "/tk/00000.jsonl");
  ASSERT_EQ(t.size(), 4u);
  int cut = 0;
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(originals[i]);
    std::string st = dir + "/trace" + std::to_string(i) + ".safetensors";
    auto tr = run_cmd({RECAP_BIN, "trace", "--weights", kWeights, "--tokenizer", kTokenizer, "--image",
                       kImages + "/" + kImageNames[i], "--prompt", kDefaultPrompt, "--max-new-tokens", "40",
                       "--out", st});
    ASSERT_EQ(tr.rc, 0) << tr.out;
    auto f = io::SafetensorsFile::open(st);
    auto it = f->tensors().find("gen.ids");
    ASSERT_NE(it, f->tensors().end());
    std::vector<int32_t> ids;
    const int64_t* p = reinterpret_cast<const int64_t*>(it->second.data);
    for (int64_t j = 0; j < it->second.numel(); ++j) ids.push_back(static_cast<int32_t>(p[j]));
    if (!ids.empty() && (ids.back() == 2 || ids.back() == 5)) ids.pop_back();  // trace keeps the stop id
    ASSERT_EQ(t[i]["tokens_out"], static_cast<int64_t>(ids.size()));           // counted before the cut
    const size_t n = tok.encode(originals[i], false).size();
    ASSERT_GT(n, 0u);
    cut += ids.size() > n;
    if (ids.size() > n) ids.resize(n);
    EXPECT_LE(ids.size(), n);
    EXPECT_EQ(t[i]["re_caption"], tok.decode_output(ids));
  }
  EXPECT_GT(cut, 0) << "40 new tokens are more than these captions have: something must be cut";

  // --shear words: at most as many words as the original, cut from the same generation.
  // The tiny model rarely emits whitespace, so one-word originals make a cut happen.
  text.clear();
  for (size_t i = 0; i < 4; ++i)
    text += json{{"url", kImages + "/" + kImageNames[i]}, {"caption", "word"}}.dump() + "\n";
  io::atomic_write(dir + "/w.jsonl", text);
  auto full = caption({"--list", dir + "/w.jsonl", "--out", dir + "/full", "--max-new-tokens", "40"});
  ASSERT_EQ(full.rc, 0) << full.out;
  auto wd = caption(
      {"--list", dir + "/w.jsonl", "--out", dir + "/wd", "--max-new-tokens", "40", "--shear", "words"});
  ASSERT_EQ(wd.rc, 0) << wd.out;
  auto fl = read_jsonl(dir + "/full/00000.jsonl"), w = read_jsonl(dir + "/wd/00000.jsonl");
  ASSERT_EQ(fl.size(), 4u);
  ASSERT_EQ(w.size(), 4u);
  int shorter = 0;
  for (size_t i = 0; i < 4; ++i) {
    const std::string ft = fl[i]["re_caption"], wt = w[i]["re_caption"];
    EXPECT_LE(word_count(wt), 1) << wt;
    EXPECT_EQ(ft.rfind(wt, 0), 0u) << ft << " | " << wt;
    shorter += word_count(ft) > 1 && wt.size() < ft.size();
  }
  EXPECT_GT(shorter, 0);
}

TEST(CaptionCli, NumCaptionsPrefillsEachImageOnce) {
  auto dir = make_temp_dir("cap_prefill");
  auto list = write_list(dir, 4);
  auto one = caption(
      {"--list", list, "--out", dir + "/one", "--max-new-tokens", "10", "--stats-json", dir + "/one.json"});
  ASSERT_EQ(one.rc, 0) << one.out;
  auto three = caption({"--list", list, "--out", dir + "/three", "--max-new-tokens", "10", "--num-captions",
                        "3", "--stats-json", dir + "/three.json"});
  ASSERT_EQ(three.rc, 0) << three.out;
  auto s1 = read_json(dir + "/one.json"), s3 = read_json(dir + "/three.json");
  int64_t prompt_positions = 0;
  for (auto& j : read_jsonl(dir + "/three/00000.jsonl")) {
    ASSERT_EQ(j["status"], "success");
    prompt_positions += j["tokens_in"].get<int64_t>();
  }
  ASSERT_GT(prompt_positions, 0);
  // Every prompt went through the prefill exactly once, as with one caption per image...
  EXPECT_EQ(s3["tokens_prefilled"], prompt_positions);
  EXPECT_EQ(s3["tokens_prefilled"], s1["tokens_prefilled"]);
  // ...while three captions (identical when greedy) were generated from each.
  EXPECT_EQ(s3["tokens_out"].get<int64_t>(), 3 * s1["tokens_out"].get<int64_t>());
}

namespace {
std::vector<json> sidecar_records(const std::string& out) {
  auto side = read_jsonl(out + "/00000.jsonl");
  std::sort(side.begin(), side.end(), [](const json& a, const json& b) {
    return a["key"].get<std::string>() < b["key"].get<std::string>();
  });
  return side;
}
}  // namespace

// --ignore-eos: every caption gets exactly --max-new-tokens tokens, where without it the tiny
// model stops on a stop token for some samples (greedy, it never does: sampled at temperature
// 1 with seed 7, 2 of these 8 samples stop, after 42 and 3 tokens); the flag is part of the
// fingerprint.
TEST(CaptionCli, IgnoreEosGivesExactlyMaxNewTokens) {
  auto dir = make_temp_dir("cap_ignore_eos");
  auto list = write_list(dir, 8);
  const int kMax = 300;
  const std::vector<std::string> gen{
      "--max-new-tokens", std::to_string(kMax), "--max-batch", "4", "--temperature", "1", "--seed", "7"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), gen.begin(), gen.end());
    return caption(a);
  };
  auto plain = with({"--list", list, "--out", dir + "/plain"});
  ASSERT_EQ(plain.rc, 0) << plain.out;
  int stopped_early = 0;
  for (auto& j : sidecar_records(dir + "/plain")) {
    ASSERT_EQ(j["status"], "success") << j.dump();
    if (j["stop_reason"] == "stop_token") {
      EXPECT_LT(j["tokens_out"].get<int>(), kMax) << j.dump();
      ++stopped_early;
    }
  }
  ASSERT_GT(stopped_early, 0) << "the tiny model no longer stops early; the test below proves nothing";

  auto forced =
      with({"--list", list, "--out", dir + "/forced", "--ignore-eos", "--stats-json", dir + "/forced.json"});
  ASSERT_EQ(forced.rc, 0) << forced.out;
  auto recs = sidecar_records(dir + "/forced");
  ASSERT_EQ(recs.size(), 8u);
  for (auto& j : recs) {
    EXPECT_EQ(j["status"], "success") << j.dump();
    EXPECT_EQ(j["tokens_out"].get<int>(), kMax) << j.dump();
    EXPECT_EQ(j["stop_reason"], "max_new_tokens") << j.dump();
  }
  EXPECT_EQ(read_json(dir + "/forced.json")["tokens_out"].get<int>(), 8 * kMax);
  // Samples that ran to the limit anyway have the same caption both ways (the same draws).
  auto plain_recs = sidecar_records(dir + "/plain");
  for (size_t i = 0; i < recs.size(); ++i) {
    if (plain_recs[i]["stop_reason"] == "max_new_tokens") {
      EXPECT_EQ(recs[i]["re_caption"], plain_recs[i]["re_caption"]) << recs[i]["key"];
    }
  }

  // A rerun into the same --out without the flag refuses, naming the setting.
  const std::string stats_before = io::read_file(dir + "/forced/00000_stats.json");
  auto rerun = with({"--list", list, "--out", dir + "/forced"});
  EXPECT_EQ(rerun.rc, 2) << rerun.out;
  EXPECT_NE(rerun.out.find("ignore_eos was true, now false"), std::string::npos) << rerun.out;
  EXPECT_EQ(io::read_file(dir + "/forced/00000_stats.json"), stats_before);
}

namespace {
// Every member of a shard's tar and every sidecar record, with the timings (which differ run
// to run) taken out of the JSON ones; keyed by member name / key (list shards are written in
// completion order).
std::map<std::string, std::string> outputs_without_timings(const std::string& out) {
  std::map<std::string, std::string> m;
  for (auto& [name, data] : read_tar(out + "/00000.tar")) {
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
      json j = json::parse(data);
      EXPECT_TRUE(j.contains("timings_ms")) << name;
      j.erase("timings_ms");
      m["tar:" + name] = j.dump();
    } else {
      m["tar:" + name] = data;
    }
  }
  for (auto& j : read_jsonl(out + "/00000.jsonl")) {
    json r = j;
    r.erase("timings_ms");
    m["jsonl:" + j["key"].get<std::string>()] = r.dump();
  }
  return m;
}
}  // namespace

// The shared-prefix KV cache (the template before the image prefilled once, its whole blocks
// forked into every sample) gives exactly the outputs of prefilling every prompt in full.
TEST(CaptionCli, SharedPrefixCacheIsBitIdentical) {
  auto dir = make_temp_dir("cap_prefix");
  auto list = write_list(dir, 7);
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    size_t tar_members_per_sample = 3;  // image, .txt, .json (+ .1.txt with 2 captions)
  };
  const std::vector<Case> cases{
      {"f32", {"--precision", "f32", "--max-batch", "3"}},
      {"int8_bf16kv", {"--precision", "int8", "--kv-dtype", "bf16", "--max-batch", "4", "--threads", "2"}},
      // Several sampled captions per image fork the forked prefix again; a prompt with a
      // sample field after the image still shares the part before it.
      {"sampled",
       {"--num-captions", "2", "--temperature", "1", "--seed", "3", "--max-batch", "4", "--prompt",
        "Describe this image; it was captioned: {original_caption}"},
       4},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> a{"--list", list, "--max-new-tokens", "30"};
    a.insert(a.end(), c.flags.begin(), c.flags.end());
    auto shared = a, full = a;
    shared.insert(shared.end(), {"--out", dir + "/" + c.name + "_shared", "--stats-json", dir + "/s.json"});
    full.insert(full.end(), {"--out", dir + "/" + c.name + "_full", "--no-prefix-cache", "--stats-json",
                             dir + "/f.json"});
    auto rs = caption(shared);
    ASSERT_EQ(rs.rc, 0) << rs.out;
    auto rf = caption(full);
    ASSERT_EQ(rf.rc, 0) << rf.out;
    const json ss = read_json(dir + "/s.json"), fs = read_json(dir + "/f.json");
    EXPECT_EQ(ss["successes"], 7);
    // The prefix exists (whole 16-position blocks of the template before the image) and
    // every sample used it; without the cache nothing is shared.
    const int64_t prefix = ss["prefix_cache"]["positions"].get<int64_t>();
    EXPECT_GE(prefix, 16);
    EXPECT_EQ(prefix % 16, 0);
    EXPECT_EQ(ss["prefix_cache"]["positions_saved"].get<int64_t>(), 7 * prefix);
    EXPECT_EQ(fs["prefix_cache"]["positions"], 0);
    EXPECT_EQ(fs["prefix_cache"]["positions_saved"], 0);
    EXPECT_EQ(ss["tokens_prefilled"], fs["tokens_prefilled"]);
    // Same fingerprint: the cache must not (and does not) change outputs.
    EXPECT_EQ(ss["fingerprint"], fs["fingerprint"]);
    auto a_out = outputs_without_timings(dir + "/" + c.name + "_shared");
    auto b_out = outputs_without_timings(dir + "/" + c.name + "_full");
    EXPECT_EQ(a_out.size(), 7 * c.tar_members_per_sample + 7);
    EXPECT_EQ(a_out, b_out);
  }
}

// --max-batch defaults to 0: the largest batch (up to 16) whose memory estimate fits what is
// available, after the precision is chosen. The tiny model with 2000-token captions needs
// 108 MiB at batch 8 (98 MiB of it fixed buffers) and about 1 MiB per further sequence.
TEST(CaptionCli, DefaultMaxBatchFromMemory) {
  auto dir = make_temp_dir("cap_auto_batch");
  auto list = write_list(dir, 2);
  auto with_memory = [&](const std::string& mb, const std::string& out) {
    std::vector<std::string> a{"env", "RECAP_MEMORY_AVAILABLE_MB=" + mb};
    auto c = caption_args({"--list", list, "--out", dir + "/" + out, "--max-new-tokens", "2000"});
    a.insert(a.end(), c.begin(), c.end());
    return run_cmd(a);
  };
  auto mid = with_memory("115", "mid");
  ASSERT_EQ(mid.rc, 0) << mid.out;
  EXPECT_NE(mid.out.find("max batch 14 (auto: the largest up to 16 whose estimate fits 115 MiB available, "
                         "RECAP_MEMORY_AVAILABLE_MB)"),
            std::string::npos)
      << mid.out;
  EXPECT_EQ(read_json(dir + "/mid/00000_stats.json")["max_batch"], 14);
  auto big = with_memory("4096", "big");
  ASSERT_EQ(big.rc, 0) << big.out;
  EXPECT_EQ(read_json(dir + "/big/00000_stats.json")["max_batch"], 16);
  // Not enough for the batch of 8 the precision is chosen at: refused before loading.
  auto small = with_memory("100", "small");
  EXPECT_EQ(small.rc, 2) << small.out;
  EXPECT_NE(small.out.find("caption: error: not enough memory for precision f32"), std::string::npos)
      << small.out;
  // The same captions whatever the batch.
  EXPECT_EQ(read_tar(dir + "/mid/00000.tar").size(), 6u);
  auto big_tar = read_tar(dir + "/big/00000.tar");
  for (auto& [name, data] : read_tar(dir + "/mid/00000.tar")) {
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".txt") == 0) {
      EXPECT_EQ(data, big_tar[name]) << name;
    }
  }
}
