// Many engine processes on one output directory, as the tasks of a Slurm array would run
// them, without a scheduler: the assignment comes from the Slurm variables in each process's
// environment. Four workers plus a duplicate of one of them (a task that runs twice, e.g.
// after a requeue) run concurrently over 8 shards: every sample ends up exactly once, and
// merge-stats reports every shard done. Then a worker killed with SIGKILL mid-shard is found
// by merge-stats (partial + missing, with the --shards to rerun) and a rerun completes it.
#include <signal.h>

#include "../io_lists/loopback_http.h"
#include "scaleout_util.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

constexpr int kShards = 8, kPerShard = 3;

std::vector<std::string> array_env(int task) {
  return {"SLURM_ARRAY_TASK_ID=" + std::to_string(10 + task), "SLURM_ARRAY_TASK_MIN=10",
          "SLURM_ARRAY_TASK_COUNT=4", "SLURM_CPUS_PER_TASK=1"};
}

}  // namespace

TEST(ScaleoutWorkers, FourArrayTasksAndADuplicateShareOneOutput) {
  auto dir = make_temp_dir("scaleout_workers");
  auto list = write_dataset(dir, kShards, kPerShard, [](int) { return std::string(); });
  const std::string out = dir + "/out";
  auto flags = job_flags(list, out, kPerShard);

  std::vector<pid_t> pids;
  for (int t = 0; t < 4; ++t)
    pids.push_back(spawn_cmd(worker_cmd(array_env(t), flags), dir + "/w" + std::to_string(t) + ".log"));
  // The duplicate of task 1: same shards, same time.
  pids.push_back(spawn_cmd(worker_cmd(array_env(1), flags), dir + "/dup.log"));
  for (size_t i = 0; i < pids.size(); ++i) {
    ASSERT_GT(pids[i], 0);
    int rc = wait_exit(pids[i]);
    std::string log = io::read_file(dir + (i < 4 ? "/w" + std::to_string(i) : std::string("/dup")) + ".log");
    EXPECT_EQ(rc, 0) << log;
    const int task = i < 4 ? static_cast<int>(i) : 1;
    // The resolved assignment is printed at the start, with the thread budget it implies.
    EXPECT_NE(log.find("8 input shard(s); worker " + std::to_string(task) +
                       " of 4 (from SLURM_ARRAY_TASK_ID) takes 2; threads 1 (SLURM_CPUS_PER_TASK)"),
              std::string::npos)
        << log;
  }
  expect_every_sample_once(out, kShards, kPerShard);

  // Task 1 and its duplicate: each of their shards was finished by exactly one of them.
  std::string l1 = io::read_file(dir + "/w1.log"), dup = io::read_file(dir + "/dup.log");
  for (const char* s : {"shard 00001: done", "shard 00005: done"})
    EXPECT_EQ(count_substr(l1, s) + count_substr(dup, s), 1) << l1 << "\n----\n" << dup;
  for (int t : {0, 2, 3}) {
    std::string log = io::read_file(dir + "/w" + std::to_string(t) + ".log");
    EXPECT_EQ(count_substr(log, ": done,"), 2) << log;
  }

  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
  auto j = json::parse(m.out);
  EXPECT_EQ(j["shards_done"], kShards);
  EXPECT_EQ(j["samples"]["count"], kShards * kPerShard);
  EXPECT_EQ(j["samples"]["successes"], kShards * kPerShard);
  EXPECT_GT(j["images_per_hour"].get<double>(), 0);
}

TEST(ScaleoutWorkers, KilledWorkerIsFoundByMergeStatsAndRerun) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir("scaleout_kill");
  // Worker 2 of 4 (SLURM_PROCID) takes shards 2 and 6; the last two samples of shard 2 stall
  // on HTTP so that it is reliably caught mid-shard.
  auto set_stall = [&](int ms) {
    for (int i : {7, 8}) {
      srv.set("/img" + std::to_string(i) + ".png",
              {200, io::read_file(kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]), 0, ms});
    }
  };
  set_stall(60000);
  auto list = write_dataset(dir, kShards, kPerShard, [&](int i) {
    return i == 7 || i == 8 ? srv.url("/img" + std::to_string(i) + ".png") : std::string();
  });
  const std::string out = dir + "/out";
  auto flags = job_flags(list, out, kPerShard);
  flags.insert(flags.end(), {"--http-timeout", "120"});
  auto task_env = [](int t) {
    return std::vector<std::string>{"SLURM_PROCID=" + std::to_string(t), "SLURM_NTASKS=4",
                                    "SLURM_CPUS_PER_TASK=1"};
  };

  std::vector<pid_t> pids;
  for (int t = 0; t < 4; ++t)
    pids.push_back(spawn_cmd(worker_cmd(task_env(t), flags), dir + "/w" + std::to_string(t) + ".log"));
  const std::string partial = out + "/.00002.log.partial";
  bool reached = wait_until([&] { return count_lines(partial) >= 2; });  // header + sample 6
  ::kill(pids[2], SIGKILL);
  EXPECT_EQ(wait_exit(pids[2]), 128 + SIGKILL);
  ASSERT_TRUE(reached) << io::read_file(dir + "/w2.log");
  for (int t : {0, 1, 3})
    EXPECT_EQ(wait_exit(pids[static_cast<size_t>(t)]), 0)
        << io::read_file(dir + "/w" + std::to_string(t) + ".log");

  auto m = merge_stats(out, list, kPerShard, {"--todo-file", dir + "/todo.txt"});
  EXPECT_EQ(m.rc, 1) << m.out;
  auto j = json::parse(m.out);
  EXPECT_EQ(j["shards_done"], kShards - 2);
  // Shard 2 was caught mid-shard; shard 6 is partial too when the worker had already opened it
  // (it reads ahead into the next shard while one stalls), else missing.
  ASSERT_GE(j["partial"].size(), 1u) << m.out;
  EXPECT_EQ(j["partial"][0]["shard"], "00002");
  EXPECT_GE(j["partial"][0]["samples_done"].get<int>(), 1);
  EXPECT_EQ(j["partial"].size() + j["missing"].size(), 2u) << m.out;
  EXPECT_EQ(j["rerun"], "--shards 2,6");
  EXPECT_EQ(io::read_file(dir + "/todo.txt"), "00002\n00006\n");

  // Rerun the shards left, as one worker of one (the way a user resubmits by hand).
  set_stall(0);
  auto rerun = worker_cmd({}, flags);
  rerun.insert(rerun.end(), {"--shards-file", dir + "/todo.txt"});
  auto r = run_cmd(rerun);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("shards 2,6 selected; worker 0 of 1 (from default) takes 2"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("shard 00002: resuming"), std::string::npos) << r.out;
  expect_every_sample_once(out, kShards, kPerShard);
  m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
}
