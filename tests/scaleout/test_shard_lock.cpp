// Shard locking and publishing (engine/shard_output.h): flock where it works, lock files where
// the filesystem has none, and a published tar that is never replaced.
//
// This test binary wraps flock(), link() and unlink() (its definitions take precedence over
// libc's for the engine code linked into it): flock can be made to fail with a chosen errno,
// as on a filesystem without flock, and a forked child can be made to die right after a given
// step of publishing, as if killed there.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

#include "../caption/cli_util.h"
#include "engine/shard_output.h"

using namespace recap::testing;
using nlohmann::json;
using recap::engine::FingerprintMismatch;
using recap::engine::probe_shard;
using recap::engine::SampleOutcome;
using recap::engine::ShardOutput;
using recap::engine::ShardProbe;
using recap::engine::ShardState;
namespace io = recap::io;

namespace {
std::atomic<int> g_flock_errno{0};  // nonzero: flock fails with it
std::atomic<int> g_link_errno{0};   // nonzero: link fails with it (a filesystem without hard links)
enum class Crash { None, AfterTarLink, AfterPartialUnlink };
Crash g_crash = Crash::None;  // set in forked children only

bool ends_with(const char* s, const char* suf) {
  size_t n = std::strlen(s), m = std::strlen(suf);
  return n >= m && std::strcmp(s + n - m, suf) == 0;
}
}  // namespace

extern "C" int flock(int fd, int op) noexcept {
  static auto real = reinterpret_cast<int (*)(int, int)>(dlsym(RTLD_NEXT, "flock"));
  if (int e = g_flock_errno.load()) {
    errno = e;
    return -1;
  }
  return real(fd, op);
}

extern "C" int link(const char* from, const char* to) noexcept {
  static auto real = reinterpret_cast<int (*)(const char*, const char*)>(dlsym(RTLD_NEXT, "link"));
  if (int e = g_link_errno.load()) {
    errno = e;
    return -1;
  }
  int rc = real(from, to);
  if (rc == 0 && g_crash == Crash::AfterTarLink && ends_with(to, ".tar")) ::_exit(137);
  return rc;
}

extern "C" int unlink(const char* path) noexcept {
  static auto real = reinterpret_cast<int (*)(const char*)>(dlsym(RTLD_NEXT, "unlink"));
  int rc = real(path);
  if (rc == 0 && g_crash == Crash::AfterPartialUnlink && ends_with(path, ".tar.partial")) ::_exit(137);
  return rc;
}

namespace {

struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  std::string name_, old_;
  bool had_ = false;
};

struct FlockFails {
  explicit FlockFails(int e) { g_flock_errno = e; }
  ~FlockFails() { g_flock_errno = 0; }
};

SampleOutcome outcome(int64_t i, bool ok = true) {
  SampleOutcome s;
  s.index = i;
  s.key = "k" + std::to_string(i);
  s.success = ok;
  s.meta = {
      {"key", s.key}, {"status", ok ? "success" : "failed_to_download"}, {"error_message", ok ? "" : "404"}};
  if (ok) {
    s.captions = {"caption " + std::to_string(i)};
    s.image_bytes = std::string(600, 'i');
    s.image_ext = "jpg";
  }
  return s;
}

std::unique_ptr<ShardOutput> open_shard(const std::string& dir, const std::string& shard, ShardProbe* p,
                                        bool overwrite = false) {
  return ShardOutput::open(dir, shard, "fp", overwrite, 0, p);
}

std::string first_line(const std::string& path) {
  std::string s;
  try {
    s = io::read_file(path);
  } catch (...) {
  }
  return s.substr(0, s.find('\n'));
}

int64_t start_ticks(long pid) {
  std::string st;
  try {
    st = io::read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (...) {
    return -1;
  }
  std::istringstream in(st.substr(st.rfind(')') + 2));
  std::string f;
  for (int i = 3; i <= 22 && in >> f; ++i)
    if (i == 22) return std::stoll(f);
  return -1;
}

// A lock file's content as a process `pid` of this host would write it.
json this_host_owner(long pid) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  char ns[128] = {};
  ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
  return {{"host", host},
          {"boot_id", first_line("/proc/sys/kernel/random/boot_id")},
          {"pid_ns", std::string(ns, n > 0 ? static_cast<size_t>(n) : 0)},
          {"pid", pid},
          {"start_ticks", start_ticks(pid)},
          {"time", 0}};
}

json other_host_owner() {
  return {{"host", "node-elsewhere"}, {"boot_id", "x"}, {"pid_ns", "pid:[1]"}, {"pid", 4242}, {"time", 0}};
}

std::string lock_file(const std::string& dir, const std::string& shard, int gen) {
  return dir + "/." + shard + ".lock." + std::to_string(gen);
}

// Leaves a lock file as its owner would, last refreshed `age_s` seconds ago.
void plant_lock(const std::string& path, const std::string& content, double age_s) {
  io::atomic_write(path, content);
  struct timespec ts[2];
  ::clock_gettime(CLOCK_REALTIME, &ts[0]);
  ts[0].tv_sec -= static_cast<time_t>(age_s);
  ts[1] = ts[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, 0), 0);
}

double age_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<double>(::time(nullptr) - st.st_mtime);
}

long dead_pid() {
  pid_t c = ::fork();
  if (c == 0) ::_exit(0);
  ::waitpid(c, nullptr, 0);
  return c;
}

// Every sample of a published shard exactly once.
void expect_published(const std::string& dir, const std::string& shard, int n) {
  ASSERT_TRUE(io::file_exists(dir + "/" + shard + "_stats.json"));
  std::vector<std::string> order;
  read_tar(dir + "/" + shard + ".tar", &order);
  std::map<std::string, int> seen;
  for (auto& m : order) seen[m]++;
  int successes = 0;
  for (int i = 0; i < n; ++i) successes += i % 3 != 1;
  EXPECT_EQ(order.size(), static_cast<size_t>(3 * successes)) << shard;
  for (auto& [m, c] : seen) EXPECT_EQ(c, 1) << m;
  EXPECT_EQ(read_jsonl(dir + "/" + shard + ".jsonl").size(), static_cast<size_t>(n));
  for (const char* tmp : {".tar.partial", ".log.partial", ".lock", ".lock.0", ".lock.1"})
    EXPECT_FALSE(io::file_exists(dir + "/." + shard + tmp)) << tmp;
}

}  // namespace

TEST(ShardOutputLock, AutoFallsBackToLockFilesWhereFlockIsUnsupported) {
  ScopedEnv mode("RECAP_LOCK_MODE", nullptr);
  for (int e : {ENOSYS, EOPNOTSUPP}) {
    SCOPED_TRACE(std::strerror(e));
    FlockFails nf(e);
    auto dir = make_temp_dir("lock_fallback");
    ShardProbe p;
    auto o = open_shard(dir, "00001", &p);
    ASSERT_TRUE(o);
    auto owner = json::parse(first_line(lock_file(dir, "00001", 0)));
    EXPECT_EQ(owner["pid"], ::getpid());
    EXPECT_EQ(owner["shard"], "00001");
    // A second worker (here: a second open in this process) finds it busy, and says who has it.
    ShardProbe p2;
    EXPECT_EQ(open_shard(dir, "00001", &p2), nullptr);
    EXPECT_EQ(p2.state, ShardState::Busy);
    EXPECT_NE(p2.detail.find("pid " + std::to_string(::getpid())), std::string::npos) << p2.detail;
    o->append(outcome(0));
    o->finish({}, 1, 2);
    o.reset();
    expect_published(dir, "00001", 1);
  }
  // ENOLCK (NFS without a reachable lockd) can be transient: a worker falling back to lock
  // files then would not see another's flock. It stops with a hint instead.
  FlockFails nolck(ENOLCK);
  auto dir = make_temp_dir("lock_enolck");
  ShardProbe p;
  try {
    open_shard(dir, "00001", &p);
    ADD_FAILURE() << "ENOLCK fell back to lock files";
  } catch (const io::IoError& err) {
    EXPECT_NE(std::string(err.what()).find("RECAP_LOCK_MODE=file"), std::string::npos) << err.what();
  }
  EXPECT_FALSE(io::file_exists(lock_file(dir, "00001", 0)));
}

TEST(ShardOutputLock, OnlyEwouldblockMeansBusy) {
  ScopedEnv mode("RECAP_LOCK_MODE", nullptr);
  auto dir = make_temp_dir("lock_errno");
  {
    FlockFails held(EWOULDBLOCK);
    ShardProbe p;
    EXPECT_EQ(open_shard(dir, "00002", &p), nullptr);
    EXPECT_EQ(p.state, ShardState::Busy);
    EXPECT_FALSE(io::file_exists(lock_file(dir, "00002", 0)));
  }
  for (int e : {EIO, EBADF, EINVAL}) {
    FlockFails odd(e);
    ShardProbe p;
    EXPECT_THROW(open_shard(dir, "00002", &p), io::IoError) << std::strerror(e);
  }
  {
    ScopedEnv flock_only("RECAP_LOCK_MODE", "flock");
    FlockFails nf(ENOSYS);
    ShardProbe p;
    try {
      open_shard(dir, "00002", &p);
      ADD_FAILURE() << "no lock, no error";
    } catch (const io::IoError& e) {
      EXPECT_NE(std::string(e.what()).find("RECAP_LOCK_MODE"), std::string::npos) << e.what();
    }
  }
  {
    ScopedEnv bad("RECAP_LOCK_MODE", "sometimes");
    ShardProbe p;
    EXPECT_THROW(open_shard(dir, "00002", &p), io::IoError);
  }
  // A working flock: the flock file, no lock files.
  ShardProbe p;
  auto o = open_shard(dir, "00002", &p);
  ASSERT_TRUE(o);
  EXPECT_TRUE(io::file_exists(dir + "/.00002.lock"));
  EXPECT_FALSE(io::file_exists(lock_file(dir, "00002", 0)));
}

TEST(ShardOutputLock, LockFilesAreTakenOverOnlyWhenStale) {
  ScopedEnv mode("RECAP_LOCK_MODE", "file");
  ScopedEnv stale("RECAP_LOCK_STALE_SECONDS", nullptr);  // default 1800 s
  auto dir = make_temp_dir("lock_stale");
  int n = 0;
  // Expect `busy` when lock generation 0 holds `content`, refreshed `age_s` ago.
  auto check = [&](const std::string& what, const std::string& content, double age_s, bool busy) {
    SCOPED_TRACE(what);
    const std::string shard = "1" + std::to_string(n++);
    plant_lock(lock_file(dir, shard, 0), content, age_s);
    ShardProbe p;
    auto o = open_shard(dir, shard, &p);
    EXPECT_EQ(o == nullptr, busy) << p.detail;
    if (busy) {
      EXPECT_EQ(p.state, ShardState::Busy);
      EXPECT_TRUE(io::file_exists(lock_file(dir, shard, 0)));
      EXPECT_FALSE(io::file_exists(lock_file(dir, shard, 1)));
      return;
    }
    // Taken as the next generation; the stale one goes once the shard is done.
    EXPECT_TRUE(io::file_exists(lock_file(dir, shard, 1)));
    o->append(outcome(0));
    o->finish({}, 1, 2);
    o.reset();
    expect_published(dir, shard, 1);
  };
  const long parent = ::getppid();  // alive all along
  check("this host, owner gone", this_host_owner(dead_pid()).dump(), 0, false);
  check("this host, owner alive, however old", this_host_owner(parent).dump(), 36000, true);
  auto reused = this_host_owner(parent);
  reused["start_ticks"] = reused["start_ticks"].get<int64_t>() + 12345;
  check("this host, pid now another process", reused.dump(), 0, false);
  auto rebooted = this_host_owner(dead_pid());
  rebooted["boot_id"] = "another boot";
  check("same name, another boot: only the age counts", rebooted.dump(), 0, true);
  check("another host, refreshed lately", other_host_owner().dump(), 60, true);
  check("another host, silent for 2 h", other_host_owner().dump(), 7200, false);
  check("unreadable, fresh (being written)", "", 0, true);
  check("unreadable, silent for 2 h", "{garbage", 7200, false);
  {
    ScopedEnv short_stale("RECAP_LOCK_STALE_SECONDS", "30");
    check("another host, silent for 60 s of 30", other_host_owner().dump(), 60, false);
    check("another host, silent for 5 s of 30", other_host_owner().dump(), 5, true);
  }
  // Every existing generation must be stale, not only the newest.
  plant_lock(lock_file(dir, "00009", 0), other_host_owner().dump(), 10);
  plant_lock(lock_file(dir, "00009", 1), this_host_owner(dead_pid()).dump(), 0);
  ShardProbe p;
  EXPECT_EQ(open_shard(dir, "00009", &p), nullptr);
  EXPECT_FALSE(io::file_exists(lock_file(dir, "00009", 2)));
}

TEST(ShardOutputLock, HolderRefreshesItsLockAndStopsWhenTakenOver) {
  ScopedEnv mode("RECAP_LOCK_MODE", "file");
  ScopedEnv stale("RECAP_LOCK_STALE_SECONDS", "2");  // refreshed every 0.2 s
  auto dir = make_temp_dir("lock_beat");
  ShardProbe p;
  auto o = open_shard(dir, "00003", &p);
  ASSERT_TRUE(o);
  o->append(outcome(0));
  const std::string mine = lock_file(dir, "00003", 0);
  struct timespec old[2];
  ::clock_gettime(CLOCK_REALTIME, &old[0]);
  old[0].tv_sec -= 100;
  old[1] = old[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, mine.c_str(), old, 0), 0);
  EXPECT_TRUE(wait_until([&] { return age_of(mine) >= 0 && age_of(mine) < 50; }, 10)) << age_of(mine);
  // Another worker judged it stale anyway (say this process was stopped) and took it.
  io::atomic_write(lock_file(dir, "00003", 1), other_host_owner().dump());
  try {
    o->append(outcome(1));
    ADD_FAILURE() << "wrote without the lock";
  } catch (const io::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("lost the shard lock"), std::string::npos) << e.what();
  }
  EXPECT_THROW(o->finish({}, 1, 2), io::IoError);
  EXPECT_FALSE(io::file_exists(dir + "/00003.tar"));
  EXPECT_FALSE(io::file_exists(dir + "/00003_stats.json"));
  // Closing, the superseded holder leaves its generation: removing it would open a gap below
  // the new owner's, and a newcomer scanning from 0 would take the shard beside it.
  const std::string partial = dir + "/.00003.tar.partial";
  const auto size_before = io::read_file(partial).size();
  o.reset();
  EXPECT_TRUE(io::file_exists(mine));
  ScopedEnv fresh("RECAP_LOCK_STALE_SECONDS", "1800");  // the new owner's lock is live
  auto newcomer = open_shard(dir, "00003", &p);
  EXPECT_FALSE(newcomer);
  EXPECT_EQ(p.state, ShardState::Busy) << p.detail;
  EXPECT_EQ(io::read_file(partial).size(), size_before);  // the owner's files untouched
}

TEST(ShardOutputLock, RacingWorkersNeverShareAShard) {
  // Six processes go for the same shard at once, with lock files; in half the rounds they also
  // race to break the same stale lock. Exactly one works on it each time.
  ScopedEnv mode("RECAP_LOCK_MODE", "file");
  auto dir = make_temp_dir("lock_race");
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string shard = "0000" + std::to_string(round), go = dir + "/go" + std::to_string(round);
    if (round % 2) plant_lock(lock_file(dir, shard, 0), this_host_owner(dead_pid()).dump(), 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 6; ++k) {
      pid_t c = ::fork();
      if (c == 0) {
        while (::access(go.c_str(), F_OK) != 0) ::usleep(200);
        try {
          ShardProbe p;
          auto o = open_shard(dir, shard, &p);
          if (!o) ::_exit(p.state == ShardState::Done ? 30 : 20);
          for (int i = 0; i < 12; ++i) {
            o->append(outcome(i, i % 3 != 1));
            ::usleep(2000);
          }
          o->finish({}, 1, 2);
          o.reset();
          ::_exit(10);
        } catch (...) {
          ::_exit(1);
        }
      }
      kids.push_back(c);
    }
    io::atomic_write(go, "");
    std::map<int, int> rcs;
    for (pid_t c : kids) rcs[wait_exit(c)]++;
    EXPECT_EQ(rcs[10], 1);
    EXPECT_EQ(rcs[20] + rcs[30], 5);
    expect_published(dir, shard, 12);
  }
}

TEST(ShardOutputPublish, NeverReplacesAnExistingFinalTar) {
  for (const char* mode : {"auto", "file"}) {
    SCOPED_TRACE(mode);
    ScopedEnv m("RECAP_LOCK_MODE", mode);
    auto dir = make_temp_dir("publish_exists");
    ShardProbe p;
    auto o = open_shard(dir, "00004", &p);
    ASSERT_TRUE(o);
    o->append(outcome(0));
    o->append(outcome(1, false));
    io::atomic_write(dir + "/00004.tar", "someone else's tar");
    EXPECT_THROW(o->finish({}, 1, 2), io::IoError);
    o.reset();
    EXPECT_EQ(io::read_file(dir + "/00004.tar"), "someone else's tar");
    EXPECT_FALSE(io::file_exists(dir + "/00004_stats.json"));
    EXPECT_TRUE(io::file_exists(dir + "/.00004.tar.partial"));
    // It is not taken over by a later run either: refused, unless --overwrite.
    EXPECT_EQ(probe_shard(dir, "00004", "fp").state, ShardState::Conflict);
    EXPECT_THROW(open_shard(dir, "00004", &p), FingerprintMismatch);
    EXPECT_EQ(io::read_file(dir + "/00004.tar"), "someone else's tar");
    auto re = open_shard(dir, "00004", &p, true);
    ASSERT_TRUE(re);
    for (int i = 0; i < 3; ++i) re->append(outcome(i, i % 3 != 1));
    re->finish({}, 1, 2);
    re.reset();
    expect_published(dir, "00004", 3);
  }
  // A tar with no partial log beside it (not left by an interrupted run): refused as well.
  auto dir = make_temp_dir("publish_stray");
  io::atomic_write(dir + "/00005.tar", "stray");
  auto pr = probe_shard(dir, "00005", "fp");
  EXPECT_EQ(pr.state, ShardState::Conflict);
  EXPECT_NE(pr.detail.find("00005.tar exists without 00005_stats.json"), std::string::npos) << pr.detail;
  ShardProbe p;
  EXPECT_THROW(open_shard(dir, "00005", &p), FingerprintMismatch);
  EXPECT_EQ(io::read_file(dir + "/00005.tar"), "stray");
}

// Where link() is refused (FUSE/object-store mounts, SMB: EPERM, EOPNOTSUPP, ...) the tar is
// published by rename under the shard lock, still never over an existing final tar; another
// link error stops the shard with the reason.
TEST(ShardOutputPublish, WithoutHardLinksRenamePublishes) {
  struct LinkFails {
    explicit LinkFails(int e) { g_link_errno = e; }
    ~LinkFails() { g_link_errno = 0; }
  };
  for (int e : {EPERM, EOPNOTSUPP}) {
    LinkFails lf(e);
    auto dir = make_temp_dir("publish_nolink");
    ShardProbe p;
    auto o = open_shard(dir, "00006", &p);
    ASSERT_TRUE(o);
    for (int i = 0; i < 4; ++i) o->append(outcome(i, i % 3 != 1));
    o->finish({}, 1, 2);
    o.reset();
    expect_published(dir, "00006", 4);
    // An existing final tar is still left alone.
    auto o2 = open_shard(dir, "00007", &p);
    ASSERT_TRUE(o2);
    o2->append(outcome(0));
    io::atomic_write(dir + "/00007.tar", "someone else's tar");
    EXPECT_THROW(o2->finish({}, 1, 2), io::IoError);
    o2.reset();
    EXPECT_EQ(io::read_file(dir + "/00007.tar"), "someone else's tar");
  }
  LinkFails lf(EIO);
  auto dir = make_temp_dir("publish_eio");
  ShardProbe p;
  auto o = open_shard(dir, "00008", &p);
  ASSERT_TRUE(o);
  o->append(outcome(0));
  try {
    o->finish({}, 1, 2);
    ADD_FAILURE() << "finish succeeded although link() failed with EIO";
  } catch (const io::IoError& err) {
    EXPECT_NE(std::string(err.what()).find("cannot publish"), std::string::npos) << err.what();
  }
  o.reset();
  EXPECT_FALSE(io::file_exists(dir + "/00008.tar"));
  EXPECT_FALSE(io::file_exists(dir + "/00008_stats.json"));
}

TEST(ShardOutputPublish, KilledWhilePublishingTheRerunFinishes) {
  // A worker killed right after linking the final tar (the partial name still there), or right
  // after removing the partial name (no stats yet): the same command rerun finishes the shard
  // without recomputing a sample, and every sample is in the tar once.
  for (const char* mode : {"auto", "file"})
    for (Crash at : {Crash::AfterTarLink, Crash::AfterPartialUnlink}) {
      SCOPED_TRACE(std::string(mode) + (at == Crash::AfterTarLink ? " after link" : " after unlink"));
      ScopedEnv m("RECAP_LOCK_MODE", mode);
      auto dir = make_temp_dir("publish_kill");
      pid_t c = ::fork();
      if (c == 0) {
        ShardProbe p;
        auto o = open_shard(dir, "00006", &p);
        if (!o) ::_exit(1);
        for (int i = 0; i < 5; ++i) o->append(outcome(i, i % 3 != 1));
        g_crash = at;
        try {
          o->finish({}, 1, 2);
        } catch (...) {
        }
        ::_exit(2);  // not reached when the crash point is
      }
      ASSERT_EQ(wait_exit(c), 137);
      EXPECT_TRUE(io::file_exists(dir + "/00006.tar"));
      EXPECT_EQ(io::file_exists(dir + "/.00006.tar.partial"), at == Crash::AfterTarLink);
      EXPECT_FALSE(io::file_exists(dir + "/00006_stats.json"));
      EXPECT_EQ(probe_shard(dir, "00006", "fp").state, ShardState::Todo);
      ShardProbe p;
      auto o = open_shard(dir, "00006", &p);
      ASSERT_TRUE(o) << p.detail;
      EXPECT_EQ(o->resumed_count(), 5);
      auto st = o->finish({}, 1, 2);
      EXPECT_EQ(st["count"], 5);
      EXPECT_EQ(st["resumed_samples"], 5);
      o.reset();
      expect_published(dir, "00006", 5);
      EXPECT_EQ(run_cmd({"tar", "-tf", dir + "/00006.tar"}).rc, 0);
    }
}
