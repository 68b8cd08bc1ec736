// Engine processes on an output directory whose filesystem has no flock (simulated with an
// LD_PRELOAD shim making flock() fail with ENOSYS, as Lustre mounted noflock does): the
// default lock mode falls back to lock files, and four array tasks plus a duplicate of one of
// them still finish every sample exactly once. With lock files forced (RECAP_LOCK_MODE=file),
// a worker killed with SIGKILL mid-shard leaves its lock file behind, and the same command
// rerun on the same host takes it over at once (its owner's pid is gone) and resumes.
#include <dirent.h>
#include <signal.h>

#include "../io_lists/loopback_http.h"
#include "scaleout_util.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

constexpr int kShards = 8, kPerShard = 3;

// Every worker here also leaves RECAP_LOCK_MODE to the test's own setting.
std::vector<std::string> lock_worker_cmd(const std::vector<std::string>& env,
                                         const std::vector<std::string>& flags) {
  return recap::testing::worker_cmd(env, flags, {"RECAP_LOCK_MODE"});
}

std::vector<std::string> no_flock_env(int task) {
  return {std::string("LD_PRELOAD=") + RECAP_NOFLOCK_PRELOAD,
          "ASAN_OPTIONS=verify_asan_link_order=0",
          "SLURM_ARRAY_TASK_ID=" + std::to_string(task),
          "SLURM_ARRAY_TASK_MIN=0",
          "SLURM_ARRAY_TASK_COUNT=4",
          "SLURM_CPUS_PER_TASK=1"};
}

std::vector<std::string> lock_files(const std::string& dir) {
  std::vector<std::string> v;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.find(".lock") != std::string::npos) v.push_back(n);
    }
    ::closedir(d);
  }
  return v;
}

}  // namespace

TEST(ScaleoutLockFiles, WorkersWithoutFlockShareOneOutput) {
  auto dir = make_temp_dir("lockfiles_workers");
  auto list = write_dataset(dir, kShards, kPerShard, [](int) { return std::string(); });
  const std::string out = dir + "/out";
  auto flags = job_flags(list, out, kPerShard);
  // The shim works: flock fails in a process that preloads it.
  auto probe =
      run_cmd({"env", std::string("LD_PRELOAD=") + RECAP_NOFLOCK_PRELOAD, "flock", "-n", dir, "true"});
  EXPECT_NE(probe.rc, 0) << probe.out;

  std::vector<pid_t> pids;
  for (int t = 0; t < 4; ++t)
    pids.push_back(
        spawn_cmd(lock_worker_cmd(no_flock_env(t), flags), dir + "/w" + std::to_string(t) + ".log"));
  pids.push_back(spawn_cmd(lock_worker_cmd(no_flock_env(1), flags), dir + "/dup.log"));
  for (size_t i = 0; i < pids.size(); ++i) {
    ASSERT_GT(pids[i], 0);
    int rc = wait_exit(pids[i]);
    std::string log = io::read_file(dir + (i < 4 ? "/w" + std::to_string(i) : std::string("/dup")) + ".log");
    EXPECT_EQ(rc, 0) << log;
    // Every worker that locked a shard said how (a duplicate may only find them done).
    if (log.find(": done,") != std::string::npos ||
        log.find("another process is working on") != std::string::npos) {
      EXPECT_NE(log.find("has no flock (Function not implemented); shards are locked with lock files"),
                std::string::npos)
          << log;
    }
  }
  expect_every_sample_once(out, kShards, kPerShard);
  std::string l1 = io::read_file(dir + "/w1.log"), dup = io::read_file(dir + "/dup.log");
  for (const char* s : {"shard 00001: done", "shard 00005: done"})
    EXPECT_EQ(count_substr(l1, s) + count_substr(dup, s), 1) << l1 << "\n----\n" << dup;
  EXPECT_EQ(lock_files(out), std::vector<std::string>{}) << "lock files are removed with the shard done";
  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
}

TEST(ScaleoutLockFiles, KilledWorkerIsTakenOverAtOnceOnTheSameHost) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto dir = make_temp_dir("lockfiles_kill");
  // The last two samples of shard 0 stall on HTTP so that the worker is caught mid-shard.
  auto set_stall = [&](int ms) {
    for (int i : {1, 2})
      srv.set("/img" + std::to_string(i) + ".png",
              {200, io::read_file(kImages + "/" + kImageNames[static_cast<size_t>(i % 4)]), 0, ms});
  };
  set_stall(60000);
  auto list = write_dataset(dir, 2, kPerShard, [&](int i) {
    return i == 1 || i == 2 ? srv.url("/img" + std::to_string(i) + ".png") : std::string();
  });
  const std::string out = dir + "/out";
  auto flags = job_flags(list, out, kPerShard);
  flags.insert(flags.end(), {"--http-timeout", "120"});
  const std::vector<std::string> env{"RECAP_LOCK_MODE=file", "SLURM_CPUS_PER_TASK=1"};

  pid_t w = spawn_cmd(lock_worker_cmd(env, flags), dir + "/w.log");
  ASSERT_GT(w, 0);
  const std::string partial = out + "/.00000.log.partial";
  bool reached = wait_until([&] { return count_lines(partial) >= 2; });  // header + sample 0
  ::kill(w, SIGKILL);
  EXPECT_EQ(wait_exit(w), 128 + SIGKILL);
  ASSERT_TRUE(reached) << io::read_file(dir + "/w.log");
  // Its lock file stays behind, naming the dead process.
  auto owner = json::parse(io::read_file(out + "/.00000.lock.0"));
  EXPECT_EQ(owner["pid"].get<long>(), static_cast<long>(w)) << owner.dump();  // sh exec'ed the engine
  auto m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 1) << m.out;
  EXPECT_EQ(json::parse(m.out)["partial"][0]["shard"], "00000") << m.out;

  set_stall(0);
  auto r = run_cmd(lock_worker_cmd(env, flags));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("shard 00000: resuming"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", 0 busy;"), std::string::npos) << r.out;  // not skipped as busy
  expect_every_sample_once(out, 2, kPerShard);
  EXPECT_EQ(lock_files(out), std::vector<std::string>{});
  m = merge_stats(out, list, kPerShard);
  EXPECT_EQ(m.rc, 0) << m.out;
}
