// The caption job never loses, skips or mixes data, and its exit codes are the ones a
// scheduler acts on (issues 13 and 14). Each test is a trap reproduced the way a user hits
// it, run through the CLI on the tiny model: inputs are hashed before and after (no input
// byte may change), every sample of the plan must be in the outputs exactly once (or the run
// exits non-zero saying why), and exit codes and messages are asserted exactly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "cli_util.h"
#include "io/lists.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;
namespace fs = std::filesystem;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
// A copy of the tiny checkpoint (and the CLIP tower its config names, "../clip_vision_fp32")
// under dir; returns the weights directory.
std::string copy_tiny_checkpoint(const std::string& dir) {
  fs::copy(kWeights, dir + "/w", fs::copy_options::recursive);
  fs::copy(kData + "/tiny/clip_vision_fp32", dir + "/clip_vision_fp32", fs::copy_options::recursive);
  return dir + "/w";
}

// The file's content, "" while it does not exist yet.
std::string read_if_exists(const std::string& path) {
  return io::file_exists(path) ? io::read_file(path) : std::string();
}

const std::vector<std::string> kImageNames{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                           "small_wide.png"};

std::vector<std::string> caption_args(const std::vector<std::string>& extra,
                                      const std::string& weights = kWeights) {
  std::vector<std::string> a{RECAP_BIN, "caption", "--weights", weights, "--tokenizer", kTokenizer};
  auto given = [&](const char* flag) { return std::find(extra.begin(), extra.end(), flag) != extra.end(); };
  if (!given("--log-interval")) a.insert(a.end(), {"--log-interval", "1000"});
  if (!given("--max-new-tokens")) a.insert(a.end(), {"--max-new-tokens", "6"});
  if (!given("--threads")) a.insert(a.end(), {"--threads", "1"});
  if (given("--tokenizer")) a.erase(a.begin() + 4, a.begin() + 6);  // the test's own tokenizer
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

RunResult caption(const std::vector<std::string>& extra, const std::string& weights = kWeights) {
  return run_cmd(caption_args(extra, weights));
}

RunResult merge_stats(const std::vector<std::string>& extra) {
  std::vector<std::string> a{RECAP_BIN, "merge-stats"};
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

// n samples cycling through the bundled images, captions "cap 0", "cap 1", ...: the caption
// identifies the input row in every output.
std::string write_list(const std::string& path, int n, int first = 0) {
  std::string text;
  for (int i = first; i < first + n; ++i)
    text += json{{"url", kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]},
                 {"caption", "cap " + std::to_string(i)}}
                .dump() +
            "\n";
  io::atomic_write(path, text);
  return path;
}

// A webdataset tar as img2dataset writes it: {key}.jpg/.png, {key}.txt, {key}.json.
std::string write_wds_tar(const std::string& path, const std::string& key_prefix, int n) {
  std::string tar;
  for (int i = 0; i < n; ++i) {
    const std::string key = key_prefix + std::to_string(i);
    const std::string& img = kImageNames[static_cast<size_t>(i % 4)];
    tar += io::tar_member_bytes(key + img.substr(img.rfind('.')), io::read_file(kImages + "/" + img), 0);
    tar += io::tar_member_bytes(key + ".txt", "original " + key, 0);
    tar += io::tar_member_bytes(key + ".json", json{{"key", key}, {"status", "success"}}.dump(), 0);
  }
  tar += io::tar_end_bytes();
  io::atomic_write(path, tar);
  return path;
}

// path -> XXH3 of the content, for every regular file under dir (recursively).
std::map<std::string, uint64_t> hash_tree(const std::string& dir) {
  std::map<std::string, uint64_t> m;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string data = io::read_file(e.path().string());
    m[e.path().string()] = XXH3_64bits(data.data(), data.size());
  }
  return m;
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> s;
  for (auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
  return s;
}

json read_json(const std::string& path) {
  return json::parse(io::read_file(path));
}

// Every output shard's sidecar records, checked against its tar: the captions ("cap i") of
// all shards, each must appear exactly once across shards. Returns caption -> shard.
std::map<std::string, std::string> captions_across(const std::string& out,
                                                   const std::vector<std::string>& shards) {
  std::map<std::string, std::string> where;
  for (auto& s : shards) {
    auto side = read_jsonl(out + "/" + s + ".jsonl");
    auto tar = read_tar(out + "/" + s + ".tar");
    EXPECT_EQ(read_json(out + "/" + s + "_stats.json")["count"].get<size_t>(), side.size()) << s;
    for (auto& j : side) {
      const std::string cap = j["caption"];
      EXPECT_EQ(where.count(cap), 0u) << cap << " in " << where[cap] << " and " << s;
      where[cap] = s;
      EXPECT_EQ(j["status"], "success") << j.dump();
      EXPECT_TRUE(tar.count(j["key"].get<std::string>() + ".txt")) << s << ": " << j.dump();
    }
  }
  return where;
}

std::set<std::string> expected_captions(int n) {
  std::set<std::string> s;
  for (int i = 0; i < n; ++i) s.insert("cap " + std::to_string(i));
  return s;
}

std::set<std::string> keys_of(const std::map<std::string, std::string>& m) {
  std::set<std::string> s;
  for (auto& [k, v] : m) s.insert(k);
  return s;
}

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

// Trap 1: recaptioning an img2dataset folder in place. It used to stop on the foreign stats
// file, and following its "--overwrite" advice deleted the input tar.
TEST(DataSafety, InPlaceImg2datasetFolderIsRefusedAndNeverDeleted) {
  auto dir = make_temp_dir("safe_inplace");
  const std::string ds = dir + "/ds";
  io::make_dirs(ds);
  write_wds_tar(ds + "/00000.tar", "0000000", 3);
  io::atomic_write(ds + "/00000_stats.json",
                   R"({"count": 3, "successes": 3, "status_dict": {"success": 3}})");
  io::atomic_write(ds + "/00000.parquet", "PAR1 not really parquet PAR1");
  const auto before = hash_tree(ds);
  const std::string want = "caption: error: --out " + ds + " holds input " + ds +
                           "/00000.tar under an output name of shard 00000; inputs are never replaced or "
                           "deleted: choose another --out\n";
  for (bool overwrite : {false, true}) {
    std::vector<std::string> args{"--input", ds + "/00000.tar", "--out", ds};
    if (overwrite) args.push_back("--overwrite");
    auto r = caption(args);
    EXPECT_EQ(r.rc, 2) << r.out;
    EXPECT_EQ(r.out, want);
    EXPECT_EQ(hash_tree(ds), before) << "an input changed";
    EXPECT_EQ(names_in(ds), (std::set<std::string>{"00000.tar", "00000_stats.json", "00000.parquet"}));
  }
  // ./ds and a symlink to it are the same folder.
  fs::create_directory_symlink(ds, dir + "/link");
  auto viasym = caption({"--input", dir + "/link/00000.tar", "--out", ds});
  EXPECT_EQ(viasym.rc, 2) << viasym.out;
  EXPECT_TRUE(has(viasym.out, "holds input " + dir + "/link/00000.tar under an output name of shard 00000"))
      << viasym.out;
  // A subfolder of the dataset is a fine --out: the tar is captioned, nothing of ds changes.
  auto ok = caption({"--input", ds + "/00000.tar", "--out", ds + "/recap"});
  ASSERT_EQ(ok.rc, 0) << ok.out;
  auto side = read_jsonl(ds + "/recap/00000.jsonl");
  ASSERT_EQ(side.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(side[static_cast<size_t>(i)]["key"], "0000000" + std::to_string(i));
  auto after = hash_tree(ds);
  for (auto& [p, h] : before) EXPECT_EQ(after[p], h) << p;
  // --out equal to the input folder is allowed when no output name can be an input's name.
  const std::string mixed = dir + "/mixed";
  io::make_dirs(mixed);
  const std::string list = write_list(mixed + "/l.jsonl", 2);
  io::atomic_write(mixed + "/notes.txt", "the dataset's own files");
  const auto mixed_before = hash_tree(mixed);
  auto in_place = caption({"--input", ds + "/00000.tar", "--list", list, "--out", mixed});
  ASSERT_EQ(in_place.rc, 0) << in_place.out;
  auto mixed_after = hash_tree(mixed);
  for (auto& [p, h] : mixed_before) EXPECT_EQ(mixed_after[p], h) << p;
  // The tar keeps its name 00000, so the list's one shard is 00001.
  EXPECT_EQ(read_jsonl(mixed + "/00000.jsonl").size(), 3u);
  EXPECT_EQ(keys_of(captions_across(mixed, {"00001"})), expected_captions(2));
  // A list file named like an output of the plan is refused too.
  const std::string clash = dir + "/clash";
  io::make_dirs(clash);
  write_list(clash + "/00000.jsonl", 2);
  auto c = caption({"--list", clash + "/00000.jsonl", "--out", clash});
  EXPECT_EQ(c.rc, 2) << c.out;
  EXPECT_EQ(c.out,
            "caption: error: --out " + clash + " holds input " + clash +
                "/00000.jsonl under an output name of shard 00000; inputs are never replaced or deleted: "
                "choose another --out\n");
}

// Trap 2 and the re-sharding rule: a layout change is a conflict naming samples_per_shard;
// with --overwrite every sample ends up exactly once and no shard of the old layout counts.
TEST(DataSafety, ReshardingRefusesOrEndsWithEveryKeyOnce) {
  auto dir = make_temp_dir("safe_reshard");
  const std::string list = write_list(dir + "/l.jsonl", 12);
  const std::string out = dir + "/out";
  const auto inputs_before = hash_tree(dir);

  auto first = caption({"--list", list, "--samples-per-shard", "4", "--shards", "0", "--out", out});
  ASSERT_EQ(first.rc, 0) << first.out;
  // merge-stats knows the plan: two shards are missing, not "all done".
  auto ms = merge_stats({"--out", out});
  EXPECT_EQ(ms.rc, 1) << ms.out;
  EXPECT_TRUE(has(ms.out, "3 shard(s) expected (from the plan)")) << ms.out;
  EXPECT_TRUE(has(ms.out, "done 1, incomplete 0, partial 0, missing 2, corrupt 0")) << ms.out;

  auto eight = caption({"--list", list, "--samples-per-shard", "8", "--out", out});
  EXPECT_EQ(eight.rc, 2) << eight.out;
  EXPECT_TRUE(
      has(eight.out, "caption: error: shard 00000: samples_per_shard was 4, now 8; records was 4, now 8"))
      << eight.out;
  EXPECT_TRUE(has(eight.out, "pass --overwrite to replace it\n")) << eight.out;
  EXPECT_FALSE(io::file_exists(out + "/.00000.log.partial"));
  // Another worker of the 8-layout, given only shard 00001 (no outputs yet): the plan still
  // knows 00000 was written under the 4-layout, and refuses the same way.
  auto worker1 = caption({"--list", list, "--samples-per-shard", "8", "--shards", "1", "--out", out});
  EXPECT_EQ(worker1.rc, 2) << worker1.out;
  EXPECT_TRUE(has(worker1.out,
                  "caption: error: shard 00000: samples was 4, now 8; samples_per_shard was 4, now 8 "
                  "(planned differently in " +
                      out + "/_recap_plan.json); pass --overwrite to replace it\n"))
      << worker1.out;
  // merge-stats asked about the 8-layout: shard 00000 holds 4 of 8 samples, not done.
  auto ms8 = merge_stats({"--out", out, "--list", list, "--samples-per-shard", "8"});
  EXPECT_EQ(ms8.rc, 1) << ms8.out;
  EXPECT_TRUE(has(ms8.out, "incomplete: 00000 (holds 4 sample(s), the plan has 8)")) << ms8.out;

  // The 4-layout completed, then the 8-layout with --overwrite: 00002 of the old layout goes.
  auto four = caption({"--list", list, "--samples-per-shard", "4", "--out", out});
  ASSERT_EQ(four.rc, 0) << four.out;
  EXPECT_EQ(captions_across(out, {"00000", "00001", "00002"}).size(), 12u);
  auto over8 = caption({"--list", list, "--samples-per-shard", "8", "--out", out, "--overwrite"});
  ASSERT_EQ(over8.rc, 0) << over8.out;
  EXPECT_TRUE(
      has(over8.out, "shard 00002: removed (--overwrite: not in this run's plan, from another layout of " +
                         fs::canonical(list).string() + ")"))
      << over8.out;
  EXPECT_FALSE(io::file_exists(out + "/00002_stats.json"));
  EXPECT_FALSE(io::file_exists(out + "/00002.tar"));
  EXPECT_EQ(keys_of(captions_across(out, {"00000", "00001"})), expected_captions(12));
  EXPECT_EQ(read_json(out + "/00000_stats.json")["count"], 8);
  auto ms_after8 = merge_stats({"--out", out});
  EXPECT_EQ(ms_after8.rc, 0) << ms_after8.out;
  EXPECT_TRUE(has(ms_after8.out, "2 shard(s) expected (from the plan)")) << ms_after8.out;
  // A straggler of the old layout publishing 00002 afterwards: merge-stats lists it as stale
  // and counts it nowhere.
  io::atomic_write(out + "/00002_stats.json", io::read_file(out + "/00001_stats.json"));
  auto ms_stale = merge_stats({"--out", out});
  EXPECT_EQ(ms_stale.rc, 0) << ms_stale.out;
  EXPECT_TRUE(has(ms_stale.out, "samples in done shards: 12 (ok 12;")) << ms_stale.out;
  EXPECT_TRUE(has(ms_stale.out, "  stale (on disk, not in the plan; not counted): 00002\n")) << ms_stale.out;
  fs::remove(out + "/00002_stats.json");

  auto three = caption({"--list", list, "--samples-per-shard", "3", "--out", out});
  EXPECT_EQ(three.rc, 2) << three.out;
  EXPECT_TRUE(
      has(three.out, "caption: error: shard 00000: samples_per_shard was 8, now 3; records was 8, now 3"))
      << three.out;
  auto over3 = caption({"--list", list, "--samples-per-shard", "3", "--out", out, "--overwrite"});
  ASSERT_EQ(over3.rc, 0) << over3.out;
  EXPECT_EQ(keys_of(captions_across(out, {"00000", "00001", "00002", "00003"})), expected_captions(12));
  auto ms3 = merge_stats({"--out", out, "--json"});
  EXPECT_EQ(ms3.rc, 0) << ms3.out;
  auto j = json::parse(ms3.out);
  EXPECT_EQ(j["shards_expected"], 4);
  EXPECT_EQ(j["shards_done"], 4);
  EXPECT_EQ(j["samples"]["count"], 12);
  EXPECT_EQ(j["stale"], json::array());

  auto after = hash_tree(dir);
  for (auto& [p, h] : inputs_before) EXPECT_EQ(after[p], h) << p;
}

// Trap 3: --list and --input together used to both number from 00000 and lock against
// themselves; the tar was never captioned, exit 0.
TEST(DataSafety, ListAndInputNeverShareAShardName) {
  auto dir = make_temp_dir("safe_names");
  io::make_dirs(dir + "/in");
  write_wds_tar(dir + "/in/00000.tar", "t", 2);
  write_wds_tar(dir + "/in/00002.tar.gz.tar", "u", 1);  // named 00002.tar.gz: no clash
  const std::string list = write_list(dir + "/l.jsonl", 4);
  const auto before = hash_tree(dir);
  auto r = caption(
      {"--list", list, "--samples-per-shard", "2", "--input", dir + "/in/00000.tar", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_FALSE(has(r.out, "another process")) << r.out;
  // The tar keeps its name and keys; the list's shards skip 00000.
  auto tar_side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(tar_side.size(), 2u);
  EXPECT_EQ(tar_side[0]["key"], "t0");
  EXPECT_EQ(tar_side[1]["key"], "t1");
  EXPECT_EQ(keys_of(captions_across(dir + "/out", {"00001", "00002"})), expected_captions(4));
  auto s1 = read_jsonl(dir + "/out/00001.jsonl");
  EXPECT_EQ(s1[0]["key"], io::compute_key(0, 1, 2));
  auto s2 = read_jsonl(dir + "/out/00002.jsonl");
  EXPECT_EQ(s2[1]["key"], io::compute_key(1, 2, 2));
  auto ms = merge_stats({"--out", dir + "/out"});
  EXPECT_EQ(ms.rc, 0) << ms.out;
  EXPECT_TRUE(has(ms.out, "3 shard(s) expected (from the plan)")) << ms.out;
  std::map<std::string, uint64_t> in_before;
  for (auto& [p, h] : before)
    if (p.rfind(dir + "/in/", 0) == 0) in_before[p] = h;
  EXPECT_EQ(hash_tree(dir + "/in"), in_before);
  // Two tars with one name stay refused.
  io::make_dirs(dir + "/a");
  io::make_dirs(dir + "/b");
  write_wds_tar(dir + "/a/x.tar", "a", 1);
  write_wds_tar(dir + "/b/x.tar", "b", 1);
  auto dup = caption({"--input", dir + "/a/x.tar", "--input", dir + "/b/x.tar", "--out", dir + "/out2"});
  EXPECT_EQ(dup.rc, 2) << dup.out;
  EXPECT_EQ(dup.out, "caption: error: two input tars share the name 'x' (" + dir + "/a/x.tar and " + dir +
                         "/b/x.tar; output shards are named after them)\n");
}

// Trap 4: the weights fingerprint covers every byte: two checkpoints differing only in the
// last byte of the safetensors file are different runs.
TEST(DataSafety, CheckpointsDifferingInTheLastByteConflict) {
  auto dir = make_temp_dir("safe_weights");
  const std::string w = copy_tiny_checkpoint(dir);
  const std::string list = write_list(dir + "/l.jsonl", 2);
  auto r = caption({"--list", list, "--out", dir + "/out"}, w);
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string stats_before = io::read_file(dir + "/out/00000_stats.json");
  std::string st = io::read_file(w + "/model.safetensors");
  st.back() = static_cast<char>(st.back() ^ 0x01);
  io::atomic_write(w + "/model.safetensors", st);
  auto again = caption({"--list", list, "--out", dir + "/out"}, w);
  EXPECT_EQ(again.rc, 2) << again.out;
  EXPECT_TRUE(has(again.out, "caption: error: shard 00000: weights.model.safetensors.xxh3 was \""))
      << again.out;
  EXPECT_TRUE(has(again.out, "pass --overwrite to replace it")) << again.out;
  EXPECT_EQ(io::read_file(dir + "/out/00000_stats.json"), stats_before);
  // The material is recorded beside the hash.
  auto stats = json::parse(stats_before);
  EXPECT_TRUE(stats["fingerprint_material"]["weights"]["model.safetensors"].contains("xxh3"));
  EXPECT_EQ(stats["fingerprint_material"]["samples_per_shard"], 10000);
}

// A quantized cache records the XXH3 of its data at quantize time (the fingerprint reads the
// header, not gigabytes); an explicit other --precision is a configuration error (exit 2)
// found before loading.
TEST(DataSafety, QuantizedCacheContentHashAndPrecisionMismatch) {
  auto dir = make_temp_dir("safe_cache");
  auto q =
      run_cmd({RECAP_BIN, "quantize", "--weights", kWeights, "--precision", "int8", "--out", dir + "/q"});
  ASSERT_EQ(q.rc, 0) << q.out;
  const std::string file = io::read_file(dir + "/q/recap-packed.safetensors");
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i)
    hlen |= static_cast<uint64_t>(static_cast<unsigned char>(file[static_cast<size_t>(i)])) << (8 * i);
  auto header = json::parse(file.substr(8, hlen));
  const std::string recorded = header["__metadata__"]["recap.content_xxh3"];
  char want[17];
  std::snprintf(want, sizeof want, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(file.data() + 8 + hlen, file.size() - 8 - hlen)));
  EXPECT_EQ(recorded, want);

  const std::string list = write_list(dir + "/l.jsonl", 2);
  auto bad = caption({"--list", list, "--out", dir + "/out", "--precision", "int4"}, dir + "/q");
  EXPECT_EQ(bad.rc, 2) << bad.out;
  EXPECT_TRUE(has(bad.out, "caption: error: " + dir +
                               "/q is a quantized cache of int8 weights but --precision int4 was given; pass "
                               "--precision int8 (or quantize the original checkpoint again)\n"))
      << bad.out;
  EXPECT_FALSE(has(bad.out, "model: ")) << "weights were loaded: " << bad.out;
  EXPECT_FALSE(io::file_exists(dir + "/out"));
  auto good = caption({"--list", list, "--out", dir + "/out", "--precision", "int8"}, dir + "/q");
  ASSERT_EQ(good.rc, 0) << good.out;
  auto stats = read_json(dir + "/out/00000_stats.json");
  EXPECT_EQ(stats["fingerprint_material"]["weights"]["recap-packed.safetensors"].count("xxh3"), 0u);
  EXPECT_EQ(stats["fingerprint_material"]["weights"]["recap-packed.safetensors"]["header_xxh3"]
                .get<std::string>()
                .size(),
            16u);
}

// Trap 6: configuration problems found after the config is read exit 2, before the weights
// are loaded or anything is written.
TEST(DataSafety, ConfigurationErrorsExit2BeforeAnyWork) {
  auto dir = make_temp_dir("safe_config");
  const std::string list = write_list(dir + "/l.jsonl", 2);
  const std::string big_tok = kData + "/llama3-tokenizer/tokenizer.json";
  auto vocab = caption({"--list", list, "--out", dir + "/out", "--tokenizer", big_tok});
  EXPECT_EQ(vocab.rc, 2) << vocab.out;
  EXPECT_TRUE(has(vocab.out, "caption: error: tokenizer " + big_tok +
                                 " has 128256 token ids but the model in " + kWeights +
                                 " has a vocabulary of 1024; use the checkpoint's own tokenizer\n"))
      << vocab.out;
  EXPECT_FALSE(has(vocab.out, "model: ")) << "weights were loaded: " << vocab.out;
  EXPECT_FALSE(io::file_exists(dir + "/out"));

  auto env_run = [&](const std::string& var) {
    std::vector<std::string> a{"env", var};
    auto c = caption_args({"--list", list, "--out", dir + "/out"});
    a.insert(a.end(), c.begin(), c.end());
    return run_cmd(a);
  };
  auto isa = env_run("RECAP_FORCE_ISA=avx9000");
  EXPECT_EQ(isa.rc, 2) << isa.out;
  EXPECT_TRUE(has(isa.out, "caption: error: RECAP_FORCE_ISA: ")) << isa.out;
  EXPECT_TRUE(has(isa.out, "avx9000")) << isa.out;
  auto omp = env_run("OMP_NUM_THREADS=lots");
  EXPECT_EQ(omp.rc, 2) << omp.out;
  // (libgomp warns about the value too, on its own.)
  EXPECT_TRUE(has(omp.out,
                  "caption: error: OMP_NUM_THREADS=lots: expected a positive number of threads (or a "
                  "comma-separated list of them)\n"))
      << omp.out;
  auto lock = env_run("RECAP_LOCK_STALE_SECONDS=soon");
  EXPECT_EQ(lock.rc, 2) << lock.out;
  EXPECT_EQ(lock.out,
            "caption: error: RECAP_LOCK_STALE_SECONDS=soon: expected a positive number of seconds\n");
  EXPECT_FALSE(io::file_exists(dir + "/out"));
}

// Trap 6: a shard whose every sample failed is written with its failures, the other shards
// are finished, and the run exits 1. --quiet hides progress, never an error or a warning.
TEST(DataSafety, AllFailedShardExits1AndQuietStillSaysSo) {
  auto dir = make_temp_dir("safe_allfail");
  std::string text;
  for (int i = 0; i < 3; ++i)
    text += json{{"url", dir + "/missing" + std::to_string(i) + ".jpg"}, {"caption", "gone"}}.dump() + "\n";
  text += R"({"url": "broken json)"
          "\n";
  text += json{{"url", kImages + "/gray_square.jpg"}, {"caption", "cap 0"}}.dump() + "\n";
  text += json{{"url", kImages + "/small_wide.png"}, {"caption", "cap 1"}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  for (bool quiet : {false, true}) {
    const std::string out = dir + (quiet ? "/quiet" : "/loud");
    std::vector<std::string> args{"--list", dir + "/l.jsonl", "--samples-per-shard", "4", "--out", out};
    if (quiet) args.push_back("--quiet");
    auto r = caption(args);
    EXPECT_EQ(r.rc, 1) << r.out;
    const std::string all_failed = "shard 00000: error: every sample failed (4 failed; see " + out +
                                   "/00000.jsonl); written with its failures, the run exits 1\n";
    EXPECT_TRUE(has(r.out, all_failed)) << r.out;
    EXPECT_TRUE(has(r.out, "warning: malformed input: " + dir + "/l.jsonl:4: ")) << r.out;
    EXPECT_EQ(has(r.out, "shard 00001: done"), !quiet) << r.out;
    EXPECT_EQ(has(r.out, "caption: finished"), !quiet) << r.out;
    auto side = read_jsonl(out + "/00000.jsonl");
    ASSERT_EQ(side.size(), 4u);
    for (auto& j : side) EXPECT_NE(j["status"], "success");
    EXPECT_EQ(read_json(out + "/00000_stats.json")["successes"], 0);
    EXPECT_EQ(keys_of(captions_across(out, {"00001"})), expected_captions(2));
    if (quiet) {
      // Under --quiet the only lines are the errors and warnings.
      std::istringstream lines(r.out);
      std::string line;
      while (std::getline(lines, line))
        EXPECT_TRUE(line.rfind("warning: ", 0) == 0 || line.find("error: ") != std::string::npos) << line;
    }
  }
}

// Issue 14: the summary counts samples actually written, checked against the tar and sidecar.
TEST(DataSafety, SummaryCountsWhatTheShardsHold) {
  auto dir = make_temp_dir("safe_summary");
  std::string text;
  for (int i = 0; i < 6; ++i)
    text += json{{"url",
                  i % 3 == 2 ? dir + "/nope.jpg" : kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]},
                 {"caption", "cap " + std::to_string(i)}}
                .dump() +
            "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  auto r = caption({"--list", dir + "/l.jsonl", "--samples-per-shard", "4", "--out", dir + "/out",
                    "--stats-json", dir + "/summary.json", "--max-batch", "3"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto summary = read_json(dir + "/summary.json");
  int64_t txt = 0, side_lines = 0, side_ok = 0;
  for (auto s : {"00000", "00001"}) {
    for (auto& [name, data] : read_tar(dir + "/out/" + s + ".tar"))
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".txt") == 0) ++txt;
    for (auto& j : read_jsonl(dir + "/out/" + std::string(s) + ".jsonl")) {
      ++side_lines;
      if (j["status"] == "success") ++side_ok;
    }
  }
  EXPECT_EQ(summary["successes"], txt);
  EXPECT_EQ(summary["successes"], side_ok);
  EXPECT_EQ(summary["samples"], side_lines);
  EXPECT_EQ(summary["failed"], side_lines - side_ok);
  EXPECT_EQ(side_lines, 6);
  EXPECT_EQ(side_ok, 4);
  // A rerun writes nothing and counts nothing.
  auto again = caption({"--list", dir + "/l.jsonl", "--samples-per-shard", "4", "--out", dir + "/out",
                        "--stats-json", dir + "/summary2.json"});
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_EQ(read_json(dir + "/summary2.json")["samples"], 0);
  EXPECT_EQ(read_json(dir + "/summary2.json")["shards_skipped"], 2);
}

// Issue 14: SIGTERM during setup exits 75 at once, with no outputs: while planning (a list
// that is not readable yet) and while the weights are read (hashed for the fingerprint).
TEST(DataSafety, SigtermDuringSetupExits75) {
  auto dir = make_temp_dir("safe_setup_term");
  const std::string expected_msg =
      "recap-engine: stop requested during setup; nothing was started, exiting (exit 75)\n";
  {  // Planning: the list is a fifo nobody writes to yet.
    const std::string fifo = dir + "/list_fifo.jsonl";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    pid_t pid = spawn_cmd(caption_args({"--list", fifo, "--out", dir + "/out1"}), dir + "/run1.log");
    ASSERT_GT(pid, 0);
    // The run is planning when it has opened the fifo for reading: only then can a
    // non-blocking writer open it. The writer stays open and silent, so the run waits there.
    int wfd = -1;
    bool reached = wait_until([&] { return (wfd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK)) >= 0; });
    ::kill(pid, SIGTERM);
    int rc = wait_exit(pid);
    if (wfd >= 0) ::close(wfd);
    ASSERT_TRUE(reached) << io::read_file(dir + "/run1.log");
    const std::string log = io::read_file(dir + "/run1.log");
    EXPECT_EQ(rc, 75) << log;
    EXPECT_EQ(log, "\n" + expected_msg);
    EXPECT_FALSE(io::file_exists(dir + "/out1"));
  }
  {  // Reading the weights: a checkpoint with a 64 GiB (sparse) file to hash.
    const std::string w = copy_tiny_checkpoint(dir);
    const std::string big = w + "/zz_extra.json";
    int fd = ::open(big.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, off_t{64} << 30), 0);
    ::close(fd);
    const std::string list = write_list(dir + "/l.jsonl", 2);
    pid_t pid = spawn_cmd(caption_args({"--list", list, "--out", dir + "/out2"}, w), dir + "/run2.log");
    ASSERT_GT(pid, 0);
    // Planning is over (its line is printed) and the weights are next.
    bool reached = wait_until([&] { return has(read_if_exists(dir + "/run2.log"), "input shard(s)"); });
    ::kill(pid, SIGTERM);
    int rc = wait_exit(pid);
    ASSERT_TRUE(reached) << io::read_file(dir + "/run2.log");
    const std::string log = io::read_file(dir + "/run2.log");
    EXPECT_EQ(rc, 75) << log;
    EXPECT_TRUE(has(log, expected_msg)) << log;
    EXPECT_FALSE(has(log, "model: ")) << log;
    EXPECT_FALSE(io::file_exists(dir + "/out2"));
  }
}

// Issue 14: temp files a kill during a publish leaves are removed by the next holder of that
// shard's lock, and never while another worker holds it.
TEST(DataSafety, PublishTempFilesAreCleanedOnlyUnderTheShardLock) {
  auto dir = make_temp_dir("safe_temps");
  const std::string list = write_list(dir + "/l.jsonl", 4);
  const std::string out = dir + "/out";
  io::make_dirs(out);
  const std::vector<std::string> temps0{".00000.jsonl.tmp.4242.0", ".00000_stats.json.tmp.4242.1"};
  const std::vector<std::string> temps1{".00001.jsonl.tmp.4343.0", ".00001_stats.json.tmp.4343.1"};
  for (auto& t : temps0) io::atomic_write(out + "/" + t, "half written");
  for (auto& t : temps1) io::atomic_write(out + "/" + t, "half written");
  // Another worker holds shard 00001.
  int held = ::open((out + "/.00001.lock").c_str(), O_RDWR | O_CREAT, 0666);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);
  auto r = caption({"--list", list, "--samples-per-shard", "2", "--out", out});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(has(r.out, "shard 00001: another process is working on shard 00001, skipped")) << r.out;
  for (auto& t : temps0) EXPECT_FALSE(io::file_exists(out + "/" + t)) << t;
  for (auto& t : temps1) EXPECT_TRUE(io::file_exists(out + "/" + t)) << t;
  ::close(held);
  auto r2 = caption({"--list", list, "--samples-per-shard", "2", "--out", out});
  ASSERT_EQ(r2.rc, 0) << r2.out;
  for (auto& t : temps1) EXPECT_FALSE(io::file_exists(out + "/" + t)) << t;
  EXPECT_EQ(keys_of(captions_across(out, {"00000", "00001"})), expected_captions(4));
  auto ms = merge_stats({"--out", out});
  EXPECT_EQ(ms.rc, 0) << ms.out;
}

// The shard part of the fingerprint is per shard: adding a list to a run leaves the shards of
// the first list done (their plan did not change) and captions only the new ones.
TEST(DataSafety, AddingAListLeavesDoneShardsDone) {
  auto dir = make_temp_dir("safe_addlist");
  const std::string a = write_list(dir + "/a.jsonl", 4);
  const std::string b = write_list(dir + "/b.jsonl", 2, 4);
  auto first = caption({"--list", a, "--samples-per-shard", "2", "--out", dir + "/out"});
  ASSERT_EQ(first.rc, 0) << first.out;
  const std::string tar0 = io::read_file(dir + "/out/00000.tar");
  auto both = caption({"--list", a, "--list", b, "--samples-per-shard", "2", "--out", dir + "/out"});
  ASSERT_EQ(both.rc, 0) << both.out;
  EXPECT_TRUE(has(both.out, "shard 00000: already done, skipped")) << both.out;
  EXPECT_TRUE(has(both.out, "shard 00001: already done, skipped")) << both.out;
  EXPECT_TRUE(has(both.out, "shard 00002: done, 2 samples")) << both.out;
  EXPECT_EQ(io::read_file(dir + "/out/00000.tar"), tar0);
  EXPECT_EQ(keys_of(captions_across(dir + "/out", {"00000", "00001", "00002"})), expected_captions(6));
  auto ms = merge_stats({"--out", dir + "/out"});
  EXPECT_EQ(ms.rc, 0) << ms.out;
  EXPECT_TRUE(has(ms.out, "3 shard(s) expected (from the plan)")) << ms.out;
}
