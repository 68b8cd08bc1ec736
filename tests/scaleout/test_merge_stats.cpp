// recap-engine merge-stats over hand-made output directories: done/partial/missing/corrupt
// shards, expected shards from the directory (numbering gaps) or from the inputs, sums of the
// stats, images/hour, the rerun spec and the todo file, exit codes.
#include <gtest/gtest.h>

#include "../caption/cli_util.h"
#include "engine/merge_stats.h"
#include "io/fileutil.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;
using recap::engine::merge_shard_stats;
using recap::engine::MergedShardState;

namespace {

void write_stats(const std::string& dir, const std::string& shard, int count, int ok, double start,
                 double end, const std::string& fp = "fp1") {
  json st{{"count", count},
          {"successes", ok},
          {"failed_to_download", count - ok - 1},
          {"failed_to_resize", 0},
          {"duration", end - start},
          {"start_time", start},
          {"end_time", end},
          {"status_dict", {{"success", ok}, {"HTTP 404", count - ok - 1}, {"cannot decode image", 1}}},
          {"failed_to_decode", 1},
          {"failed_to_parse", 0},
          {"failed_to_caption", 0},
          {"tokens_in", 100 * count},
          {"tokens_out", 10 * ok},
          {"fingerprint", fp}};
  io::atomic_write(dir + "/" + shard + "_stats.json", st.dump(2));
  io::atomic_write(dir + "/" + shard + ".tar", std::string(1024, '\0'));
}

// A partial log: header + n finished samples + a torn line.
void write_partial(const std::string& dir, const std::string& shard, int n) {
  std::string text = R"({"fingerprint": "fp1"})"
                     "\n";
  for (int i = 0; i < n; ++i) text += json{{"index", i}}.dump() + "\n";
  text += R"({"index": )";
  io::atomic_write(dir + "/." + shard + ".log.partial", text);
  io::atomic_write(dir + "/." + shard + ".tar.partial", "");
}

RunResult merge(const std::vector<std::string>& extra) {
  std::vector<std::string> a{RECAP_BIN, "merge-stats"};
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

}  // namespace

TEST(MergeStats, SumsAndStatesFromDirectory) {
  auto dir = make_temp_dir("merge_dir");
  write_stats(dir, "00000", 10, 8, 1000, 1100);
  write_stats(dir, "00001", 10, 7, 1050, 1250);
  write_partial(dir, "00003", 4);
  io::atomic_write(dir + "/00004_stats.json", "{ not json");
  write_stats(dir, "00006", 10, 9, 1100, 1300, "fp2");
  io::atomic_write(dir + "/.00007.lock", "");  // started, nothing written yet
  io::atomic_write(dir + "/unrelated.txt", "x");

  auto m = merge_shard_stats(dir, std::vector<std::string>{});
  EXPECT_EQ(m.expected_from, "directory");
  // Seen 0,1,3,4,6,7 plus the gaps 2 and 5.
  ASSERT_EQ(m.shards.size(), 8u);
  EXPECT_EQ(m.n_done, 3);
  EXPECT_EQ(m.n_partial, 2);
  EXPECT_EQ(m.n_missing, 2);
  EXPECT_EQ(m.n_corrupt, 1);
  EXPECT_FALSE(m.all_done());
  EXPECT_EQ(m.shards[3].state, MergedShardState::Partial);
  EXPECT_EQ(m.shards[3].samples, 4);  // the torn line is not counted
  EXPECT_EQ(m.shards[2].state, MergedShardState::Missing);
  EXPECT_EQ(m.shards[4].state, MergedShardState::Corrupt);
  EXPECT_NE(m.shards[4].detail.find("00004_stats.json"), std::string::npos);
  EXPECT_EQ(m.counters["count"], 30);
  EXPECT_EQ(m.counters["successes"], 24);
  EXPECT_EQ(m.counters["failed_to_download"], 3);
  EXPECT_EQ(m.counters["failed_to_decode"], 3);
  EXPECT_EQ(m.counters["tokens_out"], 240);
  EXPECT_EQ(m.status_dict["success"], 24);
  EXPECT_EQ(m.status_dict["cannot decode image"], 3);
  EXPECT_EQ(m.fingerprints.size(), 2u);
  // 24 images between t=1000 and t=1300 (300 s); 500 s of shard time.
  EXPECT_DOUBLE_EQ(m.images_per_hour_wall(), 24 * 3600.0 / 300);
  EXPECT_DOUBLE_EQ(m.images_per_worker_hour(), 24 * 3600.0 / 500);
  EXPECT_EQ(m.rerun_spec(), "--shards 2-5,7");
  auto text = m.to_text();
  EXPECT_NE(text.find("done 3, incomplete 0, partial 2, missing 2, corrupt 1"), std::string::npos) << text;
  EXPECT_NE(text.find("missing: 2,5"), std::string::npos) << text;
  EXPECT_NE(text.find("2 different fingerprints"), std::string::npos) << text;
  EXPECT_NE(text.find("inferred from the directory"), std::string::npos) << text;
}

TEST(MergeStats, CliExitCodesJsonAndTodoFile) {
  auto dir = make_temp_dir("merge_cli");
  io::make_dirs(dir + "/out");
  for (int s = 0; s < 3; ++s) write_stats(dir + "/out", "0000" + std::to_string(s), 5, 4, 100 + s, 200 + s);

  auto r = merge({"--out", dir + "/out"});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("all done"), std::string::npos) << r.out;

  // A list of 5 shards of 5 lines (the 5 samples each done shard holds): shards 3 and 4 never
  // started.
  std::string list;
  for (int i = 0; i < 25; ++i) list += json{{"url", "img" + std::to_string(i) + ".jpg"}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", list);
  r = merge({"--out", dir + "/out", "--list", dir + "/l.jsonl", "--samples-per-shard", "5", "--json",
             "--todo-file", dir + "/todo.txt"});
  EXPECT_EQ(r.rc, 1) << r.out;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["expected_from"], "inputs");
  EXPECT_EQ(j["shards_expected"], 5);
  EXPECT_EQ(j["shards_done"], 3);
  EXPECT_EQ(j["missing"], json::array({"00003", "00004"}));
  EXPECT_EQ(j["rerun"], "--shards 3-4");
  EXPECT_EQ(j["samples"]["count"], 15);
  EXPECT_EQ(j["all_done"], false);
  EXPECT_EQ(io::read_file(dir + "/todo.txt"), "00003\n00004\n");

  // Restricted to the shards that are done: exit 0.
  r = merge(
      {"--out", dir + "/out", "--list", dir + "/l.jsonl", "--samples-per-shard", "5", "--shards", "0-2"});
  EXPECT_EQ(r.rc, 0) << r.out;

  // Usage errors: exit 2 with the reason.
  r = merge({"--out", dir + "/nonexistent"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find(dir + "/nonexistent: cannot open the output directory"), std::string::npos) << r.out;
  r = merge({"--out", dir + "/out", "--list", dir + "/missing.jsonl"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("missing.jsonl"), std::string::npos) << r.out;
  r = merge({"--out", dir + "/out", "--list", dir + "/l.jsonl", "--samples-per-shard", "5", "--shards", "9"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("no input shard 9"), std::string::npos) << r.out;
  r = merge({"--out", dir + "/out", "--shards", "1"});
  EXPECT_EQ(r.rc, 2) << r.out;

  // An empty directory has nothing to summarize: not done (exit 1), with the reason.
  io::make_dirs(dir + "/empty");
  r = merge({"--out", dir + "/empty"});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("holds no shard outputs"), std::string::npos) << r.out;
}
