#include "engine/shard_output.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>

#include "engine/fingerprint.h"
#include "io/keys.h"
#include "io/tar.h"

namespace recap::engine {

using nlohmann::ordered_json;

std::string shard_stats_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + "_stats.json");
}
std::string shard_tar_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + ".tar");
}
std::string shard_jsonl_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + ".jsonl");
}

namespace {
std::string log_partial_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, "." + shard + ".log.partial");
}
std::string tar_partial_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, "." + shard + ".tar.partial");
}

// Compares the fingerprint recorded in `rec` (a stats object or a partial log header, read
// from `file`) with ours. "" when they match; else the conflict, naming the fields that
// changed, or why the record cannot be compared.
std::string recorded_fingerprint_change(const ordered_json& rec, const std::string& file,
                                        const std::string& shard, const ShardFingerprint& fp) {
  if (!rec.is_object() || !rec.contains("fingerprint") || !rec["fingerprint"].is_string())
    return "shard " + shard + ": " + file +
           " has no fingerprint (not written by recap-engine caption, or by a version before fingerprints)";
  const std::string old = rec["fingerprint"].get<std::string>();
  if (old == fp.hash) return "";
  if (!rec.contains("fingerprint_material"))
    return "shard " + shard + ": " + file + " was written by an older recap-engine (fingerprint " + old +
           " without its material; this run: " + fp.hash + ")";
  std::string change = describe_material_change(rec["fingerprint_material"], fp.material);
  if (change.empty()) change = "fingerprint " + old + " differs";
  return "shard " + shard + ": " + change + " (" + file + " was written with fingerprint " + old +
         ", this run: " + fp.hash + ")";
}

// The partial log's header, or null: *why is set when the header is there but unusable; a
// torn header (no newline yet) is neither, nothing usable was written.
ordered_json log_header(const std::string& path, std::string* why) {
  std::string text;
  try {
    text = io::read_file(path);
  } catch (const std::exception& e) {
    *why = e.what();
    return nullptr;
  }
  size_t nl = text.find('\n');
  if (nl == std::string::npos) return nullptr;
  try {
    auto h = ordered_json::parse(text.substr(0, nl));
    if (h.is_object()) return h;
  } catch (...) {
  }
  *why = "has an unreadable header";
  return nullptr;
}

// Removes the temp files a publish of `shard` leaves when killed midway (io::atomic_write and
// io::exclusive_write name them ".{final name}.tmp.{pid}.{n}"). Only called by the holder of
// the shard lock, the only process that may be publishing the shard. Returns how many.
int remove_publish_temps(const std::string& out_dir, const std::string& shard) {
  const std::string jsonl_tmp = "." + shard + ".jsonl.tmp.";
  const std::string stats_tmp = "." + shard + "_stats.json.tmp.";
  int removed = 0;
  DIR* d = ::opendir(out_dir.c_str());
  if (!d) return 0;
  std::vector<std::string> victims;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind(jsonl_tmp, 0) == 0 || n.rfind(stats_tmp, 0) == 0) victims.push_back(n);
  }
  ::closedir(d);
  for (auto& n : victims)
    if (::unlink(io::join_path(out_dir, n).c_str()) == 0) ++removed;
  return removed;
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}
}  // namespace

// ---------------------------------------------------------------- the shard lock

namespace {

enum class LockMode { Auto, Flock, File };

LockMode lock_mode_from_env() {
  const char* v = std::getenv("RECAP_LOCK_MODE");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return LockMode::Auto;
  if (std::strcmp(v, "flock") == 0) return LockMode::Flock;
  if (std::strcmp(v, "file") == 0) return LockMode::File;
  throw io::IoError(std::string("RECAP_LOCK_MODE=") + v + ": expected auto, flock or file");
}

double stale_seconds_from_env() {
  const char* v = std::getenv("RECAP_LOCK_STALE_SECONDS");
  if (!v || !*v) return 1800;
  char* end = nullptr;
  double s = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(s > 0))
    throw io::IoError(std::string("RECAP_LOCK_STALE_SECONDS=") + v +
                      ": expected a positive number of seconds");
  return s;
}

// flock errors that mean "this filesystem cannot flock" rather than "someone holds it".
// ENOLCK is not one of them: NFS returns it when lockd is unreachable, which can be
// transient, and a worker that fell back to lock files then would not see a flock holder.
// It stops the run with a hint instead (RECAP_LOCK_MODE=file on every worker).
bool flock_unsupported(int e) {
  return e == ENOSYS || e == EOPNOTSUPP || e == ENOTSUP;
}

std::string first_line_of(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return "";
  char buf[256];
  std::string s = std::fgets(buf, sizeof buf, f) ? buf : "";
  std::fclose(f);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// What makes two processes "on the same host" for judging a pid: the same hostname, the same
// boot (a rebooted node's old pids mean nothing) and the same pid namespace (containers).
struct HostId {
  std::string host, boot, pidns;
};

const HostId& this_host() {
  static const HostId id = [] {
    HostId h;
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) == 0) h.host = name;
    h.boot = first_line_of("/proc/sys/kernel/random/boot_id");
    char ns[128] = {};
    ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    if (n > 0) h.pidns.assign(ns, static_cast<size_t>(n));
    return h;
  }();
  return id;
}

// Start time of a process in clock ticks since boot (/proc/PID/stat field 22), -1 if unknown:
// tells a live owner from an unrelated process that reused its pid.
int64_t process_start_ticks(long pid) {
  std::string stat;
  try {
    stat = io::read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (...) {
    return -1;
  }
  size_t p = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (p == std::string::npos) return -1;
  // Fields after the name start with field 3 (state); starttime is field 22.
  int field = 2;
  for (size_t i = p + 1; i < stat.size(); ++i) {
    if (stat[i] == ' ') {
      if (++field == 22) return std::strtoll(stat.c_str() + i + 1, nullptr, 10);
    }
  }
  return -1;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

// Exclusive ownership of one shard (see the header): flock on .{shard}.lock, or a generation
// of lock files .{shard}.lock.{gen} refreshed by a heartbeat thread.
class ShardLock {
 public:
  // Null with *busy set when another process holds the shard. Throws io::IoError when the
  // shard cannot be locked at all.
  static std::unique_ptr<ShardLock> acquire(const std::string& out_dir, const std::string& shard,
                                            std::string* busy);
  ~ShardLock();

  // Throws io::IoError when a lock file was taken over by another worker (or removed).
  void check_held() const;
  void mark_finished() { finished_ = true; }

 private:
  ShardLock() = default;
  std::string gen_path(int64_t gen) const { return base_ + "." + std::to_string(gen); }
  bool acquire_file(std::string* busy);
  void heartbeat();

  std::string out_dir_, shard_, base_;  // base_: {out}/.{shard}.lock
  bool finished_ = false;
  // flock
  int flock_fd_ = -1;
  bool flock_file_made_ = false;  // .{shard}.lock exists because of us (auto fallback)
  // lock files
  int file_fd_ = -1;
  int64_t gen_ = -1;
  double stale_s_ = 1800;
  std::thread beat_;
  std::mutex beat_mu_;
  std::condition_variable beat_cv_;
  bool beat_stop_ = false;
  std::atomic<bool> beat_failed_{false};
};

void validate_lock_settings() {
  (void)lock_mode_from_env();
  (void)stale_seconds_from_env();
}

std::unique_ptr<ShardLock> ShardLock::acquire(const std::string& out_dir, const std::string& shard,
                                              std::string* busy) {
  const LockMode mode = lock_mode_from_env();
  std::unique_ptr<ShardLock> l(new ShardLock());
  l->out_dir_ = out_dir;
  l->shard_ = shard;
  l->base_ = io::join_path(out_dir, "." + shard + ".lock");
  if (mode != LockMode::File) {
    int fd = ::open(l->base_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) throw io::IoError("cannot create " + l->base_ + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      l->flock_fd_ = fd;
      return l;
    }
    const int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK || e == EAGAIN) {
      *busy = "another process is working on shard " + shard;
      return nullptr;
    }
    if (mode == LockMode::Flock || !flock_unsupported(e))
      throw io::IoError(
          "cannot lock " + l->base_ + ": " + std::strerror(e) +
          (flock_unsupported(e)
               ? " (RECAP_LOCK_MODE=flock; this filesystem has no flock: use RECAP_LOCK_MODE=file "
                 "or auto)"
           : e == ENOLCK ? " (no lock manager for this filesystem, e.g. NFS without lockd: set "
                           "RECAP_LOCK_MODE=file on every worker)"
                         : ""));
    l->flock_file_made_ = true;
    static std::once_flag told;
    std::call_once(told, [&] {
      std::fprintf(stderr,
                   "recap: %s has no flock (%s); shards are locked with lock files .{shard}.lock.N "
                   "instead (RECAP_LOCK_MODE, RECAP_LOCK_STALE_SECONDS; docs/CAPTION.md)\n",
                   out_dir.c_str(), std::strerror(e));
    });
  }
  l->stale_s_ = stale_seconds_from_env();
  if (!l->acquire_file(busy)) return nullptr;
  return l;
}

bool ShardLock::acquire_file(std::string* busy) {
  const HostId& me = this_host();
  // Creating generation g needs every existing generation below it stale; a generation is
  // only removed by its owner (or, after the shard is done, by the one who finished it), so
  // the existing ones always start at 0. Losing the exclusive create to another worker means
  // looking again.
  for (int attempt = 0; attempt < 20; ++attempt) {
    int64_t g = 0;
    for (;; ++g) {
      const std::string path = gen_path(g);
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOENT) break;
        throw io::IoError("cannot read lock file " + path + ": " + std::strerror(errno));
      }
      struct stat st {};
      std::string text(4096, '\0');
      ssize_t n = ::fstat(fd, &st) == 0 ? ::read(fd, text.data(), text.size()) : -1;
      ::close(fd);
      text.resize(n > 0 ? static_cast<size_t>(n) : 0);
      const double age = now_seconds() - static_cast<double>(st.st_mtime);
      std::string who = "unreadable";
      bool stale = age > stale_s_;
      try {
        const auto j = nlohmann::json::parse(text);
        const long pid = j.at("pid").get<long>();
        const std::string host = j.at("host").get<std::string>();
        who = host + " pid " + std::to_string(pid);
        if (host == me.host && j.at("boot_id").get<std::string>() == me.boot &&
            j.at("pid_ns").get<std::string>() == me.pidns && !me.host.empty() && !me.boot.empty() &&
            pid > 0) {
          // Same host: the pid decides, whatever the age.
          const bool gone = ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
          const int64_t start = j.value("start_ticks", int64_t(-1)), now_start = process_start_ticks(pid);
          stale = gone || (start >= 0 && now_start >= 0 && start != now_start);
        }
      } catch (const std::exception&) {
        // Being written, or not ours: judged by its age alone.
      }
      if (!stale) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.0f", age < 0 ? 0.0 : age);
        *busy = "another process is working on shard " + shard_ + " (" + path + ": " + who + ", refreshed " +
                buf + " s ago)";
        return false;
      }
    }
    const std::string path = gen_path(g);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // another worker took generation g first
      throw io::IoError("cannot create lock file " + path + ": " + std::strerror(errno));
    }
    nlohmann::json j;
    j["host"] = me.host;
    j["boot_id"] = me.boot;
    j["pid_ns"] = me.pidns;
    j["pid"] = static_cast<long>(::getpid());
    j["start_ticks"] = process_start_ticks(::getpid());
    j["time"] = now_seconds();
    j["shard"] = shard_;
    const std::string text = j.dump() + "\n";
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::fsync(fd) != 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      throw io::IoError("cannot write lock file " + path + ": " + std::strerror(e));
    }
    file_fd_ = fd;
    gen_ = g;
    beat_ = std::thread([this] { heartbeat(); });
    return true;
  }
  *busy = "shard " + shard_ + ": its lock files keep changing (other workers are taking it)";
  return false;
}

void ShardLock::heartbeat() {
  const auto every = std::chrono::duration<double>(std::min(60.0, stale_s_ / 10));
  std::unique_lock<std::mutex> lk(beat_mu_);
  while (!beat_cv_.wait_for(lk, every, [&] { return beat_stop_; }))
    if (::futimens(file_fd_, nullptr) != 0) beat_failed_ = true;
}

void ShardLock::check_held() const {
  if (file_fd_ < 0) return;
  struct stat st {};
  const std::string next = gen_path(gen_ + 1);
  std::string why;
  if (::fstat(file_fd_, &st) != 0 || st.st_nlink == 0)
    why = "its lock file " + gen_path(gen_) + " was removed";
  else if (::stat(next.c_str(), &st) == 0)
    why = "another worker judged its lock stale and took it over (" + next +
          "; was this process stopped longer than RECAP_LOCK_STALE_SECONDS?)";
  else if (beat_failed_)
    why = "its lock file " + gen_path(gen_) + " could not be refreshed";
  if (!why.empty()) throw io::IoError("shard " + shard_ + ": lost the shard lock: " + why);
}

ShardLock::~ShardLock() {
  if (beat_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(beat_mu_);
      beat_stop_ = true;
    }
    beat_cv_.notify_all();
    beat_.join();
  }
  if (file_fd_ >= 0) {
    // Once the shard is done, stale generations left by dead owners go too (lowest first: a
    // worker creating generation 0 meanwhile only finds the shard done). Before that they
    // must stay, or a newcomer could create a generation below a live one.
    if (finished_)
      for (int64_t g = 0; g < gen_; ++g) ::unlink(gen_path(g).c_str());
    // A holder that was taken over leaves its generation in place: removing it would open a
    // gap below the new owner's, and a newcomer scanning from 0 would stop at the gap and
    // create a generation while the new owner still works.
    struct stat next {};
    if (finished_ || ::stat(gen_path(gen_ + 1).c_str(), &next) != 0) ::unlink(gen_path(gen_).c_str());
    ::close(file_fd_);
  }
  if (finished_ && (flock_fd_ >= 0 || flock_file_made_)) ::unlink(base_.c_str());
  if (flock_fd_ >= 0) ::close(flock_fd_);
}

// ---------------------------------------------------------------- probing and opening

ShardProbe probe_shard(const std::string& out_dir, const std::string& shard,
                       const ShardFingerprint& fingerprint) {
  ShardProbe p;
  std::string why;
  const std::string stats = shard_stats_path(out_dir, shard);
  if (io::file_exists(stats)) {
    ordered_json rec;
    try {
      rec = ordered_json::parse(io::read_file(stats));
    } catch (const std::exception& e) {
      p.state = ShardState::Conflict;
      p.detail = "shard " + shard + ": " + stats + " cannot be read (" + e.what() + ")";
      return p;
    }
    p.detail = recorded_fingerprint_change(rec, stats, shard, fingerprint);
    p.state = p.detail.empty() ? ShardState::Done : ShardState::Conflict;
    return p;
  }
  const std::string log = log_partial_path(out_dir, shard);
  if (io::file_exists(log)) {
    ordered_json h = log_header(log, &why);
    if (!h.is_null()) {
      p.detail = recorded_fingerprint_change(h, log + " (an unfinished run)", shard, fingerprint);
      if (!p.detail.empty()) p.state = ShardState::Conflict;
    } else if (!why.empty()) {
      p.state = ShardState::Conflict;
      p.detail = "shard " + shard + ": " + log + " " + why;
    }
  }
  // A published tar without stats is resumable when a finisher was killed between publishing
  // the tar and creating the stats: its partial log is still there, and its partial tar is
  // gone or is the same file (killed between link and unlink). Any other tar was not left by
  // such a run and is never replaced silently.
  const std::string tar = shard_tar_path(out_dir, shard);
  struct stat ft {};
  struct stat pt {};
  if (p.state == ShardState::Todo && ::stat(tar.c_str(), &ft) == 0) {
    const bool has_partial = ::stat(tar_partial_path(out_dir, shard).c_str(), &pt) == 0;
    const bool same = has_partial && pt.st_dev == ft.st_dev && pt.st_ino == ft.st_ino;
    const bool has_log = io::file_exists(log);
    if (!has_log || (has_partial && !same)) {
      // A finisher creates the stats before removing its log: they may have appeared since.
      if (io::file_exists(stats)) return probe_shard(out_dir, shard, fingerprint);
      p.state = ShardState::Conflict;
      p.detail = "shard " + shard + ": " + tar + " exists without " + io::base_name(stats) +
                 (has_log ? " and is not the unfinished run's partial tar"
                          : " or a partial log to resume from (not left by an interrupted run)");
    }
  }
  return p;
}

std::unique_ptr<ShardOutput> ShardOutput::open(const std::string& out_dir, const std::string& shard,
                                               const ShardFingerprint& fingerprint, bool overwrite,
                                               int64_t mtime, ShardProbe* probe) {
  // A done shard stays done: no need to lock it to skip it.
  *probe = probe_shard(out_dir, shard, fingerprint);
  if (probe->state == ShardState::Done) return nullptr;
  std::unique_ptr<ShardOutput> o(new ShardOutput());
  o->out_dir_ = out_dir;
  o->shard_ = shard;
  o->fingerprint_ = fingerprint;
  o->mtime_ = mtime;
  o->tar_partial_ = tar_partial_path(out_dir, shard);
  o->log_partial_ = log_partial_path(out_dir, shard);
  std::string busy;
  o->lock_ = ShardLock::acquire(out_dir, shard, &busy);
  if (!o->lock_) {
    probe->state = ShardState::Busy;
    probe->detail = busy;
    return nullptr;
  }
  // Before touching any file of the shard: the lock must really be ours (a lock-file
  // generation can be superseded between its creation and here).
  o->lock_->check_held();
  // Under the lock, look again: another worker may have finished it meanwhile.
  *probe = probe_shard(out_dir, shard, fingerprint);
  if (probe->state == ShardState::Done) return nullptr;
  const std::string tar = shard_tar_path(out_dir, shard);
  if (probe->state == ShardState::Conflict) {
    if (!overwrite) throw FingerprintMismatch(probe->detail + "; pass --overwrite to replace it");
    // Replace: the old done marker goes first, so the shard never looks done with mixed data.
    ::unlink(shard_stats_path(out_dir, shard).c_str());
    ::unlink(tar.c_str());
    ::unlink(shard_jsonl_path(out_dir, shard).c_str());
    ::unlink(o->log_partial_.c_str());
    ::unlink(o->tar_partial_.c_str());
    io::fsync_dir(out_dir);
    probe->state = ShardState::Todo;
  }
  remove_publish_temps(out_dir, shard);
  // A publish cut short (probe_shard found it resumable): the published tar goes back under
  // the temp name, to be resumed and published again.
  struct stat ft {};
  struct stat pt {};
  if (::stat(tar.c_str(), &ft) == 0) {
    if (::stat(o->tar_partial_.c_str(), &pt) == 0) {
      if (pt.st_dev != ft.st_dev || pt.st_ino != ft.st_ino)
        throw io::IoError(tar + " and " + o->tar_partial_ + " differ (changed while locked?)");
      if (::unlink(tar.c_str()) != 0) throw io::IoError("cannot remove " + tar + ": " + std::strerror(errno));
    } else if (::rename(tar.c_str(), o->tar_partial_.c_str()) != 0) {
      throw io::IoError("cannot rename " + tar + ": " + std::strerror(errno));
    }
    io::fsync_dir(out_dir);
  }
  o->load_partial(overwrite);
  return o;
}

bool remove_shard_outputs(const std::string& out_dir, const std::string& shard, std::string* busy) {
  auto lock = ShardLock::acquire(out_dir, shard, busy);
  if (!lock) return false;
  lock->check_held();
  ::unlink(shard_stats_path(out_dir, shard).c_str());  // the done marker first
  for (const std::string& f : {shard_tar_path(out_dir, shard), shard_jsonl_path(out_dir, shard),
                               log_partial_path(out_dir, shard), tar_partial_path(out_dir, shard)})
    ::unlink(f.c_str());
  remove_publish_temps(out_dir, shard);
  io::fsync_dir(out_dir);
  lock->mark_finished();  // its lock files go too
  return true;
}

void ShardOutput::load_partial(bool /*overwrite*/) {
  // Read back what an earlier run finished; keep only records whose tar bytes are present.
  std::string text;
  if (io::file_exists(log_partial_)) text = io::read_file(log_partial_);
  off_t tar_size = io::file_exists(tar_partial_) ? file_size(tar_partial_) : 0;
  uint64_t keep_tar = 0;
  size_t keep_log = 0;
  size_t pos = 0;
  bool header_ok = false;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line
    std::string line = text.substr(pos, nl - pos);
    ordered_json j;
    try {
      j = ordered_json::parse(line);
    } catch (...) {
      break;
    }
    if (!header_ok) {
      if (!j.contains("fingerprint") || j["fingerprint"] != fingerprint_.hash) break;
      first_start_time_ = j.value("start_time", 0.0);
      header_ok = true;
      keep_log = nl + 1;
      pos = nl + 1;
      continue;
    }
    uint64_t tar_end = j.value("tar_end", uint64_t(0));
    if (!j.contains("i") || !j.contains("meta") || tar_end < keep_tar ||
        static_cast<off_t>(tar_end) > tar_size)
      break;
    int64_t idx = j["i"].get<int64_t>();
    if (!done_.insert(idx).second) break;  // a duplicate would mean corruption: stop trusting here
    records_[idx] = j["meta"].dump();
    keep_tar = tar_end;
    keep_log = nl + 1;
    pos = nl + 1;
  }
  resumed_ = static_cast<int64_t>(done_.size());
  if (!header_ok) {
    // Fresh start (or a torn header): new files.
    tar_ = io::OutFile(tar_partial_, io::OutFile::Mode::Truncate);
    log_ = io::OutFile(log_partial_, io::OutFile::Mode::Truncate);
    first_start_time_ = 0;
    return;
  }
  if (::truncate(tar_partial_.c_str(), static_cast<off_t>(keep_tar)) != 0 && errno != ENOENT)
    throw io::IoError("cannot truncate " + tar_partial_ + ": " + std::strerror(errno));
  if (::truncate(log_partial_.c_str(), static_cast<off_t>(keep_log)) != 0)
    throw io::IoError("cannot truncate " + log_partial_ + ": " + std::strerror(errno));
  tar_ = io::OutFile(tar_partial_, io::OutFile::Mode::Append);
  log_ = io::OutFile(log_partial_, io::OutFile::Mode::Append);
}

bool ShardOutput::append(SampleOutcome&& s) {
  if (finished_) throw std::logic_error("append after finish");
  if (!ordered_) return write_sample(s);
  if (done_.count(s.index) || held_.count(s.index)) return false;  // already recorded: never twice
  while (done_.count(next_index_)) ++next_index_;
  if (s.index != next_index_) {
    held_.emplace(s.index, std::move(s));
    return true;
  }
  write_sample(s);
  for (;;) {
    while (done_.count(next_index_)) ++next_index_;
    auto it = held_.find(next_index_);
    if (it == held_.end()) break;
    write_sample(it->second);
    held_.erase(it);
  }
  return true;
}

namespace {
// A carried suffix becomes part of a member name: only dots, not separators or control bytes.
bool safe_suffix(const std::string& suffix) {
  if (suffix.empty()) return false;
  for (unsigned char c : suffix)
    if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f) return false;
  return true;
}
}  // namespace

bool ShardOutput::write_sample(const SampleOutcome& s) {
  lock_->check_held();
  if (!done_.insert(s.index).second) return false;  // already recorded (resume): never twice
  if (log_.bytes_written() == 0) {
    ordered_json h;
    h["recap_partial"] = 1;
    h["shard"] = shard_;
    h["fingerprint"] = fingerprint_.hash;
    h["fingerprint_material"] = fingerprint_.material;
    h["start_time"] = static_cast<double>(::time(nullptr));
    log_.write(h.dump() + "\n");
  }
  if (s.success) {
    // Member names are built from the key: a key that could escape the output folder, cut a
    // name short or split a sample never gets that far (sources fail such samples first).
    const std::string bad = io::key_problem(s.key);
    if (!bad.empty())
      throw io::IoError("shard " + shard_ + ": refusing to write members for key '" +
                        io::printable_key(s.key) + "': " + bad);
    if (!s.image_bytes.empty() && !safe_suffix(s.image_ext))
      throw io::IoError("shard " + shard_ + ": refusing to write image suffix '" +
                        io::printable_key(s.image_ext) + "' of key " + s.key);
    for (auto& m : s.carried)
      if (!safe_suffix(m.suffix))
        throw io::IoError("shard " + shard_ + ": refusing to write member suffix '" +
                          io::printable_key(m.suffix) + "' of key " + s.key);
    std::string members;
    if (!s.image_bytes.empty())
      members += io::tar_member_bytes(s.key + "." + s.image_ext, s.image_bytes, mtime_);
    for (auto& m : s.carried) members += io::tar_member_bytes(s.key + "." + m.suffix, m.bytes, mtime_);
    for (size_t c = 0; c < s.captions.size(); ++c) {
      std::string name = c == 0 ? s.key + ".txt" : s.key + "." + std::to_string(c) + ".txt";
      members += io::tar_member_bytes(name, s.captions[c], mtime_);
    }
    members += io::tar_member_bytes(
        s.key + ".json", s.meta.dump(4, ' ', false, nlohmann::json::error_handler_t::replace), mtime_);
    tar_.write(members);
  }
  ordered_json rec;
  rec["i"] = s.index;
  rec["tar_end"] = tar_.bytes_written();
  rec["meta"] = s.meta;
  std::string line = rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  log_.write(line);
  // A process kill loses nothing already written; against a machine crash, sync every few
  // seconds, tar before log, so a durable log record always has durable tar bytes.
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  if (now - last_sync_ >= 10) {
    tar_.sync();
    log_.sync();
    last_sync_ = now;
  }
  records_[s.index] = s.meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (on_written_) on_written_(s);
  return true;
}

nlohmann::ordered_json ShardOutput::finish(const ordered_json& extra, double start_time, double end_time) {
  // keep_input_order: every input index has arrived when a shard is finished, so nothing is
  // held; should one be missing, the held samples are still written (out of order) rather
  // than lost.
  for (auto& [idx, held] : held_) write_sample(held);
  held_.clear();
  // Stats from every record (this run's and resumed ones).
  int64_t count = 0, successes = 0, failed_download = 0, failed_decode = 0, failed_parse = 0,
          failed_caption = 0;
  int64_t tokens_in = 0, tokens_out = 0;
  ordered_json status_dict = ordered_json::object();
  std::string sidecar;
  for (auto& [idx, line] : records_) {
    sidecar += line;
    sidecar += '\n';
    auto m = ordered_json::parse(line);
    ++count;
    std::string status = m.value("status", "");
    if (status == "success") ++successes;
    if (status == "failed_to_download") ++failed_download;
    if (status == "failed_to_decode") ++failed_decode;
    if (status == "failed_to_parse") ++failed_parse;
    if (status == "failed_to_caption") ++failed_caption;
    std::string k = status == "success"
                        ? "success"
                        : (m["error_message"].is_string() ? m["error_message"].get<std::string>() : status);
    status_dict[k] = status_dict.value(k, 0) + 1;
    tokens_in += m.value("tokens_in", int64_t(0));
    tokens_out += m.value("tokens_out", int64_t(0));
  }
  ordered_json st;
  st["count"] = count;
  st["successes"] = successes;
  st["failed_to_download"] = failed_download;
  st["failed_to_resize"] = 0;  // img2dataset key; we never resize the stored image
  st["failed_to_decode"] = failed_decode;
  st["failed_to_parse"] = failed_parse;
  st["failed_to_caption"] = failed_caption;
  st["duration"] = end_time - start_time;
  st["start_time"] = start_time;
  st["end_time"] = end_time;
  st["status_dict"] = status_dict;
  st["tokens_in"] = tokens_in;
  st["tokens_out"] = tokens_out;
  st["resumed_samples"] = resumed_;
  if (first_start_time_ > 0) st["first_start_time"] = first_start_time_;
  for (auto it = extra.begin(); it != extra.end(); ++it) st[it.key()] = it.value();
  st["fingerprint"] = fingerprint_.hash;
  st["fingerprint_material"] = fingerprint_.material;

  // 1. tar: link, not rename, so that an existing final tar is never replaced.
  lock_->check_held();
  tar_.write(io::tar_end_bytes());
  tar_.sync();
  tar_.close();
  const std::string final_tar = shard_tar_path(out_dir_, shard_);
  const std::string appeared = final_tar + " appeared while this process held the shard lock; it is left " +
                               "alone, this run's tar stays in " + tar_partial_ +
                               " and the shard is not marked done";
  if (::link(tar_partial_.c_str(), final_tar.c_str()) == 0) {
    ::unlink(tar_partial_.c_str());
  } else {
    const int e = errno;
    if (e == EEXIST) throw io::IoError(appeared);
    // Filesystems without hard links (some FUSE and object-store mounts, SMB) refuse link():
    // rename with RENAME_NOREPLACE where supported, else, under the shard lock that keeps a
    // second writer out, a check that nothing is there yet and a plain rename.
    if (e != EPERM && e != ENOTSUP && e != EOPNOTSUPP && e != ENOSYS && e != EXDEV && e != EMLINK)
      throw io::IoError("cannot publish " + final_tar + ": " + std::strerror(e));
    if (::renameat2(AT_FDCWD, tar_partial_.c_str(), AT_FDCWD, final_tar.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) throw io::IoError(appeared);
      struct stat existing;
      if (::stat(final_tar.c_str(), &existing) == 0) throw io::IoError(appeared);
      if (::rename(tar_partial_.c_str(), final_tar.c_str()) != 0)
        throw io::IoError("cannot publish " + final_tar + ": " + std::strerror(errno));
    }
  }
  io::fsync_dir(out_dir_);
  // 2. sidecar
  io::atomic_write(shard_jsonl_path(out_dir_, shard_), sidecar);
  // 3. stats, last: the done marker.
  log_.sync();
  log_.close();
  if (!io::exclusive_write(shard_stats_path(out_dir_, shard_),
                           st.dump(4, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"))
    throw io::IoError(shard_stats_path(out_dir_, shard_) +
                      " appeared while this process held the shard lock");
  ::unlink(log_partial_.c_str());
  finished_ = true;
  lock_->mark_finished();
  return st;
}

ShardOutput::~ShardOutput() = default;

}  // namespace recap::engine
