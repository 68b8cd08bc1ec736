// The one tower-failure policy through `recap-engine caption` (engine/caption_driver.cpp,
// "The one tower-failure policy"): when the vision tower throws on a batch, exactly the samples
// of that batch are recorded as failed_to_caption ("vision tower: ...") and every other sample
// is captioned as if nothing had happened. The tower is made to throw by the test-only
// failpoint RECAP_FAILPOINTS=vision_tower_batch:N (engine/failpoints.h), set in the child's
// environment only. Both tower paths are run: the vision worker thread and the inline one.
//
// Which images form the second tower batch depends on the order the loader finishes them and
// on how many are ready when a batch starts (a batch takes up to --vision-batch ready images),
// so the test asserts what holds for every order: one to --vision-batch samples fail, all with
// the failpoint's error, and the others are byte-identical to a run without the failpoint.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli_util.h"
#include "io/fileutil.h"

using namespace recap::testing;
using json = nlohmann::json;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
const std::vector<std::string> kImageNames{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                           "small_wide.png"};
constexpr int kSamples = 6;
constexpr int kVisionBatch = 2;
const std::string kFailError = "vision tower: failpoint vision_tower_batch:2";

// `failpoints` is the child's RECAP_FAILPOINTS ("" = unset, whatever this process has).
RunResult caption(const std::string& failpoints, const std::vector<std::string>& extra) {
  std::vector<std::string> a{"env", "-u", "RECAP_FAILPOINTS"};
  if (!failpoints.empty()) a.push_back("RECAP_FAILPOINTS=" + failpoints);
  for (const std::string& s : {std::string(RECAP_BIN), std::string("caption"), std::string("--weights"),
                               kWeights, std::string("--tokenizer"), kTokenizer})
    a.push_back(s);
  for (const char* s : {"--log-interval", "1000", "--max-new-tokens", "12", "--precision", "f32",
                        "--max-batch", "4", "--vision-batch", "2", "--quiet"})
    a.push_back(s);
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

// Six good images as a user has them: files in a folder, a JSONL list naming them relatively.
// The bundled four plus two copies under other names (their captions repeat the originals').
std::string write_images_and_list(const std::string& dir) {
  io::make_dirs(dir + "/img");
  std::string list;
  for (int i = 0; i < kSamples; ++i) {
    const std::string& src = kImageNames[i % kImageNames.size()];
    const std::string name = std::to_string(i) + "_" + src;
    io::atomic_write(dir + "/img/" + name, io::read_file(kImages + "/" + src));
    list += json{{"url", dir + "/img/" + name}, {"caption", "cap " + std::to_string(i)}}.dump() + "\n";
  }
  io::atomic_write(dir + "/list.jsonl", list);
  return dir + "/list.jsonl";
}

std::map<std::string, json> sidecar_by_key(const std::string& path) {
  std::map<std::string, json> m;
  for (auto& j : read_jsonl(path)) m[j.at("key").get<std::string>()] = j;
  return m;
}

// The members of one sample ("KEY.jpg", "KEY.txt", "KEY.json", ...) in a tar, by name.
std::map<std::string, std::string> members_of(const std::map<std::string, std::string>& tar,
                                              const std::string& key) {
  std::map<std::string, std::string> m;
  for (auto& [name, data] : tar)
    if (name.rfind(key + ".", 0) == 0) m[name] = data;
  return m;
}

// A record without its timings_ms (measurements of the run, not its result).
json without_timings(json j) {
  j.erase("timings_ms");
  return j;
}

// A sample's tar members with the .json member's timings_ms removed; every other byte kept.
std::map<std::string, std::string> members_without_timings(const std::map<std::string, std::string>& tar,
                                                           const std::string& key) {
  std::map<std::string, std::string> m = members_of(tar, key);
  auto it = m.find(key + ".json");
  if (it != m.end()) it->second = without_timings(json::parse(it->second)).dump();
  return m;
}

void run_policy_case(const std::string& tag, const std::vector<std::string>& path_flags, bool vision_thread) {
  const std::string dir = make_temp_dir(tag.c_str());
  const std::string list = write_images_and_list(dir);
  const std::string list_bytes = io::read_file(list);

  std::vector<std::string> base_args{"--list", list, "--out", dir + "/base"};
  base_args.insert(base_args.end(), path_flags.begin(), path_flags.end());
  const RunResult base = caption("", base_args);
  ASSERT_EQ(base.rc, 0) << base.out;

  std::vector<std::string> fail_args{"--list",     list,           "--out",
                                     dir + "/out", "--stats-json", dir + "/summary.json"};
  fail_args.insert(fail_args.end(), path_flags.begin(), path_flags.end());
  const RunResult failed = caption("vision_tower_batch:2", fail_args);
  // A shard with some failed samples is written with them and is done: exit 0 (CAPTION.md,
  // "Exit codes"; only a shard whose every sample failed exits 1).
  ASSERT_EQ(failed.rc, 0) << failed.out;
  EXPECT_EQ(failed.out, "") << "--quiet prints errors and warnings only";

  const std::string out = dir + "/out";
  for (const char* f : {"00000.tar", "00000.jsonl", "00000_stats.json"})
    EXPECT_TRUE(io::file_exists(out + "/" + f)) << f;
  const auto base_side = sidecar_by_key(dir + "/base/00000.jsonl");
  const auto side = sidecar_by_key(out + "/00000.jsonl");
  ASSERT_EQ(base_side.size(), static_cast<size_t>(kSamples));
  ASSERT_EQ(side.size(), static_cast<size_t>(kSamples));
  const auto base_tar = read_tar(dir + "/base/00000.tar");
  const auto tar = read_tar(out + "/00000.tar");

  std::set<std::string> failed_keys;
  for (auto& [key, j] : side) {
    SCOPED_TRACE(key);
    const json& b = base_side.at(key);
    ASSERT_EQ(b.at("status"), "success") << b.dump();
    if (j.at("status") == "success") {
      // Captioned as without the failpoint: every sidecar field but the timings, and every
      // tar member byte.
      EXPECT_EQ(without_timings(j), without_timings(b));
      EXPECT_EQ(members_without_timings(tar, key), members_without_timings(base_tar, key));
      continue;
    }
    failed_keys.insert(key);
    EXPECT_EQ(j.at("status"), "failed_to_caption") << j.dump();
    EXPECT_EQ(j.at("error_message"), kFailError) << j.dump();
    EXPECT_EQ(j.at("url"), b.at("url"));
    EXPECT_FALSE(j.contains("re_caption")) << j.dump();
    // As img2dataset does with failed samples: recorded in the sidecar only, nothing in the tar.
    EXPECT_TRUE(members_of(tar, key).empty()) << key;
  }
  // Only the second tower batch failed: at least one sample and at most --vision-batch.
  EXPECT_GE(failed_keys.size(), 1u);
  EXPECT_LE(failed_keys.size(), static_cast<size_t>(kVisionBatch));

  const json stats = json::parse(io::read_file(out + "/00000_stats.json"));
  EXPECT_EQ(stats.at("count"), kSamples);
  EXPECT_EQ(stats.at("successes"), kSamples - static_cast<int>(failed_keys.size()));
  EXPECT_EQ(stats.at("failed_to_caption"), static_cast<int>(failed_keys.size()));
  EXPECT_EQ(stats.at("status_dict").at(kFailError), static_cast<int>(failed_keys.size())) << stats.dump();
  const json summary = json::parse(io::read_file(dir + "/summary.json"));
  EXPECT_EQ(summary.at("samples"), kSamples);
  EXPECT_EQ(summary.at("failed"), static_cast<int>(failed_keys.size()));
  EXPECT_EQ(summary.at("shards_done"), 1);
  EXPECT_EQ(summary.at("vision_thread"), vision_thread);  // the tower path this case is about

  // A rerun without the failpoint: the shard is done (its stats exist), so it is skipped and
  // its failed samples stay failed (not retried); nothing is rewritten.
  std::map<std::string, std::string> before;
  for (const char* f : {"00000.tar", "00000.jsonl", "00000_stats.json"})
    before[f] = io::read_file(out + "/" + f);
  std::vector<std::string> rerun_args{"--list", list, "--out", out, "--stats-json", dir + "/rerun.json"};
  rerun_args.insert(rerun_args.end(), path_flags.begin(), path_flags.end());
  const RunResult rerun = caption("", rerun_args);
  ASSERT_EQ(rerun.rc, 0) << rerun.out;
  for (auto& [f, bytes] : before) EXPECT_EQ(io::read_file(out + "/" + f), bytes) << f;
  const json rerun_summary = json::parse(io::read_file(dir + "/rerun.json"));
  EXPECT_EQ(rerun_summary.at("samples"), 0) << rerun_summary.dump();
  EXPECT_EQ(rerun_summary.at("shards_skipped"), 1) << rerun_summary.dump();
  EXPECT_EQ(rerun_summary.at("shards_done"), 0) << rerun_summary.dump();  // done by this run

  // Inputs are read-only under every flag.
  EXPECT_EQ(io::read_file(list), list_bytes);
  for (int i = 0; i < kSamples; ++i) {
    const std::string& src = kImageNames[i % kImageNames.size()];
    EXPECT_EQ(io::read_file(dir + "/img/" + std::to_string(i) + "_" + src),
              io::read_file(kImages + "/" + src));
  }
}

}  // namespace

TEST(TowerFailureCli, FailedTowerBatchFailsOnlyItsSamplesOnTheVisionThread) {
  run_policy_case("tower_fail_thread", {"--threads", "2"}, true);
}

TEST(TowerFailureCli, FailedTowerBatchFailsOnlyItsSamplesInline) {
  run_policy_case("tower_fail_inline", {"--threads", "2", "--no-vision-thread"}, false);
}

// A malformed RECAP_FAILPOINTS is a usage error before anything runs: exit 2, naming the
// variable, no output directory.
TEST(TowerFailureCli, MalformedFailpointsIsAUsageError) {
  const std::string dir = make_temp_dir("tower_fail_usage");
  const std::string list = write_images_and_list(dir);
  const RunResult unknown = caption("vision_tower:2", {"--list", list, "--out", dir + "/out"});
  EXPECT_EQ(unknown.rc, 2);
  EXPECT_EQ(unknown.out,
            "recap-engine caption: error: RECAP_FAILPOINTS=\"vision_tower:2\": unknown failpoint "
            "\"vision_tower\" (known: vision_tower_batch:N)\n");
  const RunResult bad_number = caption("vision_tower_batch:0", {"--list", list, "--out", dir + "/out"});
  EXPECT_EQ(bad_number.rc, 2);
  EXPECT_EQ(bad_number.out,
            "recap-engine caption: error: RECAP_FAILPOINTS=\"vision_tower_batch:0\": vision_tower_batch "
            "needs a batch number >= 1 (vision_tower_batch:N), not \"0\"\n");
  EXPECT_FALSE(io::file_exists(dir + "/out"));
}
