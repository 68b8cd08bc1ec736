// A real Slurm (Debian's slurm-wlm: slurmctld + slurmd + munge, one node on localhost,
// started by scripts/slurm_setup.sh) running examples/slurm/recap.sbatch as a job array over
// 8 tiny shards with the tiny model:
//   - a 4-task array (throttled to 2 at once): every sample appears exactly once across the
//     outputs and merge-stats reports all done;
//   - one task killed with SIGKILL mid-shard (every pid of `scontrol listpids`): merge-stats
//     lists what is left, and resubmitting that array index finishes it;
//   - SIGTERM to one task's batch script (what --signal=B:TERM@120 sends before the time
//     limit): the engine checkpoints and exits 75, the script requeues the task, and the
//     requeued task finishes the shard.
// Needs root (the setup installs packages and starts daemons). RECAP_SKIP_SLURM=1 skips.
#include <signal.h>
#include <unistd.h>

#include "../io_lists/loopback_http.h"
#include "scaleout_util.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

constexpr int kShards = 8, kPerShard = 3;
const std::string kSbatch = std::string(RECAP_SOURCE_DIR) + "/examples/slurm/recap.sbatch";

class SlurmArray : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* skip = std::getenv("RECAP_SKIP_SLURM");
    if (skip && std::string(skip) == "1") return;
    if (::geteuid() != 0) return;
    setup_ = run_cmd({std::string(RECAP_SOURCE_DIR) + "/scripts/slurm_setup.sh"});
  }
  void SetUp() override {
    const char* skip = std::getenv("RECAP_SKIP_SLURM");
    if (skip && std::string(skip) == "1") GTEST_SKIP() << "RECAP_SKIP_SLURM=1";
    if (::geteuid() != 0) GTEST_SKIP() << "not root: scripts/slurm_setup.sh cannot install and start Slurm";
    ASSERT_EQ(setup_.rc, 0) << "scripts/slurm_setup.sh failed:\n" << setup_.out;
    // The engine's thread budget must come from Slurm's allocation, not from our environment.
    ::unsetenv("OMP_NUM_THREADS");
  }

  // Submits recap.sbatch; returns the array job id.
  std::string submit(const std::string& dir, const std::string& array, const std::string& list,
                     const std::string& out, const std::string& extra_args = "") {
    ::setenv("RECAP_BIN", RECAP_BIN, 1);
    ::setenv("RECAP_WEIGHTS", kWeights.c_str(), 1);
    ::setenv("RECAP_TOKENIZER", kTokenizer.c_str(), 1);
    ::setenv("RECAP_LIST", list.c_str(), 1);
    ::setenv("RECAP_OUT", out.c_str(), 1);
    std::string args = "--samples-per-shard " + std::to_string(kPerShard) +
                       " --max-new-tokens 8 --log-interval 1000 --io-workers 2 --http-timeout 120 " +
                       extra_args;
    ::setenv("RECAP_ARGS", args.c_str(), 1);
    auto r = run_cmd({"sbatch", "--parsable", "--array=" + array, "--cpus-per-task=1", "--mem=1G",
                      "--time=15", "--job-name=recap-test", "--output=" + dir + "/slurm_%A_%a.log", kSbatch});
    EXPECT_EQ(r.rc, 0) << r.out;
    std::string id = r.out.substr(0, r.out.find_first_of(";\n"));
    EXPECT_FALSE(id.empty()) << r.out;
    return id;
  }

  // Waits (bounded) until no task of the job is pending or running.
  static bool wait_job(const std::string& job, double limit_s = 300) {
    return wait_until(
        [&] {
          auto r = run_cmd({"squeue", "-h", "-j", job, "-o", "%i"});
          return r.rc == 0 && r.out.find_first_not_of(" \n") == std::string::npos;
        },
        limit_s);
  }

  // "ArrayTaskId -> JobState ExitCode" of a finished job, from the controller (one line per
  // task of `scontrol -o`: space-separated Key=Value fields).
  static std::map<int, std::string> task_states(const std::string& job) {
    std::map<int, std::string> m;
    auto r = run_cmd({"scontrol", "-o", "show", "job", job});
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      std::map<std::string, std::string> fields;
      std::istringstream words(line);
      for (std::string w; words >> w;) {
        const size_t eq = w.find('=');
        if (eq != std::string::npos) fields.emplace(w.substr(0, eq), w.substr(eq + 1));
      }
      const auto id = fields.find("ArrayTaskId"), st = fields.find("JobState"), ec = fields.find("ExitCode");
      if (id == fields.end() || st == fields.end() || ec == fields.end() || id->second.empty() ||
          id->second.find_first_not_of("0123456789") != std::string::npos)
        continue;
      m[std::stoi(id->second)] = st->second + " " + ec->second;
    }
    return m;
  }

  static std::string task_log(const std::string& dir, const std::string& job, int task) {
    std::string p = dir + "/slurm_" + job + "_" + std::to_string(task) + ".log";
    return io::file_exists(p) ? io::read_file(p) : "(no log " + p + ")";
  }

  static std::string all_logs(const std::string& dir, const std::string& job, int n) {
    std::string s;
    for (int t = 0; t < n; ++t) s += "---- task " + std::to_string(t) + "\n" + task_log(dir, job, t);
    return s;
  }

  static RunResult setup_;
};
RunResult SlurmArray::setup_;

}  // namespace

TEST_F(SlurmArray, FourTaskArrayCaptionsEverySampleOnce) {
  auto dir = make_temp_dir("slurm_array");
  auto list = write_dataset(dir, kShards, kPerShard, [](int) { return std::string(); });
  const std::string out = dir + "/out";
  std::string job = submit(dir, "0-3%2", list, out);
  ASSERT_TRUE(wait_job(job)) << "job " << job << " did not finish\n" << all_logs(dir, job, 4);
  auto states = task_states(job);
  ASSERT_EQ(states.size(), 4u) << all_logs(dir, job, 4);
  for (auto& [t, st] : states)
    EXPECT_EQ(st, "COMPLETED 0:0") << "task " << t << "\n" << task_log(dir, job, t);
  for (int t = 0; t < 4; ++t) {
    std::string log = task_log(dir, job, t);
    EXPECT_NE(log.find("8 input shard(s); worker " + std::to_string(t) +
                       " of 4 (from SLURM_ARRAY_TASK_ID) takes 2; threads 1 (SLURM_CPUS_PER_TASK)"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("recap.sbatch: task " + job + "_" + std::to_string(t) + " done"), std::string::npos)
        << log;
  }
  expect_every_sample_once(out, kShards, kPerShard);
  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
  auto j = json::parse(m.out);
  EXPECT_EQ(j["all_done"], true);
  EXPECT_EQ(j["shards_done"], kShards);
  EXPECT_EQ(j["samples"]["successes"], kShards * kPerShard);
}

TEST_F(SlurmArray, KilledTaskIsResubmittedAndFinishes) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir("slurm_kill");
  // Task 1 of 4 takes shards 1 and 5; the last two samples of shard 1 stall on HTTP so the
  // task is reliably caught mid-shard.
  auto set_stall = [&](int ms) {
    for (int i : {4, 5})
      srv.set("/img" + std::to_string(i) + ".png",
              {200, io::read_file(kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]), 0, ms});
  };
  set_stall(120000);
  auto list = write_dataset(dir, kShards, kPerShard, [&](int i) {
    return i == 4 || i == 5 ? srv.url("/img" + std::to_string(i) + ".png") : std::string();
  });
  const std::string out = dir + "/out";
  std::string job = submit(dir, "0-3", list, out);
  const std::string partial = out + "/.00001.log.partial";
  bool reached = wait_until([&] { return count_lines(partial) >= 2; }, 300);  // header + sample 3
  ASSERT_TRUE(reached) << all_logs(dir, job, 4);
  // kill -9 every process of the task (batch shell and engine), as a node crash would: the
  // pids come from the controller (`scontrol listpids`; the node is this machine).
  auto id = run_cmd({"squeue", "-h", "-j", job + "_1", "-o", "%A"});
  ASSERT_EQ(id.rc, 0) << id.out;
  auto pids = run_cmd({"scontrol", "listpids", id.out.substr(0, id.out.find('\n'))});
  ASSERT_EQ(pids.rc, 0) << pids.out;
  std::istringstream rows(pids.out);
  std::string row;
  int killed = 0;
  while (std::getline(rows, row)) {
    long pid = std::strtol(row.c_str(), nullptr, 10);  // the header line parses as 0
    if (pid > 1 && ::kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++killed;
  }
  ASSERT_GE(killed, 2) << pids.out;  // the batch shell and the engine
  ASSERT_TRUE(wait_job(job)) << all_logs(dir, job, 4);
  auto states = task_states(job);
  for (int t : {0, 2, 3}) EXPECT_EQ(states[t], "COMPLETED 0:0") << task_log(dir, job, t);
  EXPECT_EQ(states[1].rfind("FAILED", 0), 0u) << states[1] << "\n" << task_log(dir, job, 1);
  EXPECT_FALSE(io::file_exists(out + "/00001_stats.json"));

  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 1) << m.out;
  auto j = json::parse(m.out);
  EXPECT_EQ(j["shards_done"], kShards - 2);
  EXPECT_EQ(j["rerun"], "--shards 1,5");

  // Resubmit the failed array index. Alone in its array it is worker 0 of 1: it takes every
  // shard, skips the six finished ones and resumes shard 1 mid-shard.
  set_stall(0);
  std::string job2 = submit(dir, "1", list, out);
  ASSERT_TRUE(wait_job(job2)) << task_log(dir, job2, 1);
  std::string log = task_log(dir, job2, 1);
  EXPECT_EQ(task_states(job2)[1], "COMPLETED 0:0") << log;
  EXPECT_NE(log.find("worker 0 of 1 (from SLURM_ARRAY_TASK_ID) takes 8"), std::string::npos) << log;
  EXPECT_EQ(count_substr(log, "already done, skipped"), 6) << log;
  EXPECT_NE(log.find("shard 00001: resuming, 1 sample(s) already done"), std::string::npos) << log;
  expect_every_sample_once(out, kShards, kPerShard);
  m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
}

TEST_F(SlurmArray, SigtermCheckpointsExits75AndRequeues) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir("slurm_term");
  // One task over 2 shards; sample 1 stalls until the test has sent SIGTERM.
  srv.set("/slow.png", {200, io::read_file(kImages + "/" + kImageNames[1]), 0, 120000});
  auto list =
      write_dataset(dir, 2, kPerShard, [&](int i) { return i == 1 ? srv.url("/slow.png") : std::string(); });
  const std::string out = dir + "/out";
  std::string job = submit(dir, "0", list, out);
  bool reached = wait_until([&] { return count_lines(out + "/.00000.log.partial") >= 2; }, 300);
  ASSERT_TRUE(reached) << task_log(dir, job, 0);
  // What --signal=B:TERM@120 does before the time limit: SIGTERM to the batch shell only.
  srv.set("/slow.png", {200, io::read_file(kImages + "/" + kImageNames[1]), 0, 0});
  auto sig = run_cmd({"scancel", "--signal=TERM", "--batch", job + "_0"});
  ASSERT_EQ(sig.rc, 0) << sig.out;
  ASSERT_TRUE(wait_until(
      [&] { return count_substr(task_log(dir, job, 0), "recap.sbatch: task " + job + "_0 done") == 1; }, 300))
      << task_log(dir, job, 0);
  ASSERT_TRUE(wait_job(job)) << task_log(dir, job, 0);
  std::string log = task_log(dir, job, 0);
  EXPECT_NE(log.find("engine checkpointed (exit 75); requeueing " + job + "_0"), std::string::npos) << log;
  EXPECT_NE(log.find("restart 1"), std::string::npos) << log;  // the requeued run (--open-mode=append)
  EXPECT_NE(log.find("shard 00000: resuming"), std::string::npos) << log;
  expect_every_sample_once(out, 2, kPerShard);
  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
}
