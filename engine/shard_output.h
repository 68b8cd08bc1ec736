// The outputs of one shard, written so that a crash at any moment loses nothing and a rerun
// never duplicates a sample:
//
//   {out}/.{shard}.lock          flock'ed while a process works on the shard (a second worker
//                                given the same shard skips it; released by the kernel if the
//                                process dies, even by kill -9)
//   {out}/.{shard}.lock.{gen}    instead, where flock is unavailable: a lock file (see below)
//   {out}/.{shard}.tar.partial   the tar being built: members appended per finished sample
//   {out}/.{shard}.log.partial   one JSON line per finished sample (its sidecar record, its input
//                                index and the tar size after its members), appended and flushed
//                                after the sample's tar members; line 1 records the fingerprint
//                                and its material (engine/fingerprint.h)
//   {out}/.{shard}.jsonl.tmp.*, .{shard}_stats.json.tmp.*   temp files of a publish; a kill
//                                during a publish can leave them: the next holder of the lock
//                                removes them (no other process may write them meanwhile)
//
// Only the lock holder ever writes the partial files, so two workers never write the same
// temp file. On resume the log is read back, a torn last line dropped, every record whose tar
// members are not wholly in the partial tar dropped, and the tar truncated to the end of the
// last kept record; those samples are not recomputed. finish() then publishes, in this order:
// {shard}.tar (end blocks appended, then link()ed to the final name, which fails if that name
// exists: a published tar is never replaced), {shard}.jsonl (every sample's record sorted by
// input index, failures included), and LAST {shard}_stats.json (exclusive create), the done
// marker: a shard is done iff its stats file exists. A run killed between publishing the tar
// and the stats resumes from the published tar (it goes back under its temp name).
//
// Locking, RECAP_LOCK_MODE=auto|flock|file (default auto):
//   flock  flock(LOCK_EX|LOCK_NB) on .{shard}.lock; only EWOULDBLOCK means busy, any other
//          error fails loudly (io::IoError).
//   auto   flock, but where the filesystem has none (ENOSYS, EOPNOTSUPP, ENOLCK: Lustre
//          mounted noflock, NFS without lockd, some FUSE) lock files instead.
//   file   lock files only. Every worker on one output directory must lock the same way:
//          set file on all of them when some nodes lack flock, or when flock is node-local
//          (Lustre localflock).
// A lock file .{shard}.lock.{gen} is created with O_CREAT|O_EXCL and holds the owner's host,
// boot id, pid namespace, pid, process start time and the time; the owner refreshes its mtime
// every min(60 s, stale/10) and removes it when done. A worker takes the shard by creating
// the next generation, which it may only do when every existing generation is stale:
//   - its owner is on this host (same hostname, boot id and pid namespace) and that pid is
//     gone or belongs to another process (start time differs), or
//   - its mtime is older than RECAP_LOCK_STALE_SECONDS (default 1800; clocks are assumed to
//     agree within minutes).
// A live owner on this host is never judged stale, however old its file. Two workers breaking
// the same stale lock race for one exclusive create: exactly one wins. A holder whose lock was
// taken over anyway (stopped longer than the stale time) notices before its next write (a
// newer generation exists) and fails instead of writing. Old generations are removed when the
// shard is done.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/sources.h"
#include "io/fileutil.h"

namespace recap::engine {

class ShardLock;  // shard_output.cpp

// A shard output that exists with another fingerprint (refused unless --overwrite).
struct FingerprintMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What a shard's outputs must have been written with: the hash, and the material it is the
// hash of (engine/fingerprint.h), both recorded in the partial log's header and the stats, so
// that a conflict names the fields that changed.
struct ShardFingerprint {
  std::string hash;
  nlohmann::ordered_json material;
  ShardFingerprint() = default;
  ShardFingerprint(std::string h, nlohmann::ordered_json m) : hash(std::move(h)), material(std::move(m)) {}
  // A bare hash (unit tests, embedders): its material is {"fingerprint": hash}.
  ShardFingerprint(const std::string& h) : hash(h), material({{"fingerprint", h}}) {}  // NOLINT
  ShardFingerprint(const char* h) : ShardFingerprint(std::string(h)) {}                // NOLINT
};

struct SampleOutcome {
  int64_t index = 0;  // position in the input shard
  std::string key;
  bool success = false;
  nlohmann::ordered_json meta;         // the {key}.json / sidecar record
  std::vector<std::string> captions;   // {key}.txt, then {key}.1.txt ... when several
  std::string image_bytes;             // original bytes (empty: no image member)
  std::string image_ext;               // "jpg", "png", "webp"; tar inputs: the input's suffix ("JPEG")
  std::vector<CarriedMember> carried;  // tar inputs: the other members, written as {key}.{suffix}
};

enum class ShardState {
  Todo,      // nothing or a partial run with our fingerprint (resumable)
  Done,      // stats exist with our fingerprint: skip
  Conflict,  // stats or partial log with another fingerprint, without material, or unreadable
  Busy,      // another process holds the lock
};

struct ShardProbe {
  ShardState state = ShardState::Todo;
  // Conflict: "shard S: FIELD was OLD, now NEW (FILE ...)" or why FILE is unusable; Busy: who
  // holds it.
  std::string detail;
};

std::string shard_stats_path(const std::string& out_dir, const std::string& shard);
std::string shard_tar_path(const std::string& out_dir, const std::string& shard);
std::string shard_jsonl_path(const std::string& out_dir, const std::string& shard);

// Throws io::IoError naming the variable when RECAP_LOCK_MODE (auto|flock|file) or
// RECAP_LOCK_STALE_SECONDS (a positive number) is malformed: checked once at start.
void validate_lock_settings();

// Looks at a shard's outputs without locking (for skipping and up-front refusal).
ShardProbe probe_shard(const std::string& out_dir, const std::string& shard,
                       const ShardFingerprint& fingerprint);

// Removes every output of a shard that is no longer part of the plan (a layout change with
// --overwrite), under its lock: the stats (done marker) first, then tar, sidecar, partial and
// temp files. Returns false with *busy set when another process holds the shard.
bool remove_shard_outputs(const std::string& out_dir, const std::string& shard, std::string* busy);

class ShardOutput {
 public:
  // Locks and opens the shard (resuming a partial run). Returns null with *probe set when
  // the shard is Busy or Done (nothing to do). Throws FingerprintMismatch on a conflict
  // unless `overwrite` (then the old outputs and partial files are discarded), io::IoError
  // when the shard cannot be locked (see RECAP_LOCK_MODE above).
  static std::unique_ptr<ShardOutput> open(const std::string& out_dir, const std::string& shard,
                                           const ShardFingerprint& fingerprint, bool overwrite, int64_t mtime,
                                           ShardProbe* probe);
  ~ShardOutput();

  const std::string& name() const { return shard_; }
  // Input indices already finished by an earlier run.
  const std::set<int64_t>& done_indices() const { return done_; }
  int64_t resumed_count() const { return resumed_; }

  // Appends one sample (tar members for a success, then its log line). Not thread safe.
  // Throws io::IoError when the shard lock was lost (lock files only) or a write fails, or, for
  // a success, when its key fails io::key_problem() or a carried suffix holds '/', '\\' or
  // control bytes (no member name is ever built from those).
  // With keep_input_order(true) an outcome is held until every earlier input index has been
  // appended (or was done by an earlier run), so the tar lists samples in input order; held
  // outcomes are lost if the object is destroyed first (a rerun recomputes them).
  // Returns false (writes and holds nothing) when that input index is already recorded or held.
  // Every sample really written (now, later when held, or by finish()) is passed to the
  // on_written hook: counting there counts what the outputs hold, never more.
  bool append(const SampleOutcome& s) { return append(SampleOutcome(s)); }
  bool append(SampleOutcome&& s);
  void keep_input_order(bool on) { ordered_ = on; }
  void on_written(std::function<void(const SampleOutcome&)> hook) { on_written_ = std::move(hook); }
  // Outcomes held back by keep_input_order.
  size_t held() const { return held_.size(); }
  // Publishes tar, sidecar and stats (extra keys merged into the computed stats). Returns
  // the stats written. After finish() the object only holds its lock until destroyed.
  // Throws io::IoError, leaving the shard not done, when {shard}.tar already exists.
  nlohmann::ordered_json finish(const nlohmann::ordered_json& extra_stats, double start_time,
                                double end_time);

 private:
  ShardOutput() = default;
  void load_partial(bool overwrite);

  std::string out_dir_, shard_;
  ShardFingerprint fingerprint_;
  int64_t mtime_ = 0;
  std::unique_ptr<ShardLock> lock_;  // declared before the files: released after they close
  io::OutFile tar_, log_;
  std::string tar_partial_, log_partial_;
  std::set<int64_t> done_;
  std::map<int64_t, std::string> records_;  // index -> sidecar line (compact JSON)
  int64_t resumed_ = 0;
  bool finished_ = false;
  double first_start_time_ = 0;
  int64_t last_sync_ = 0;
  bool write_sample(const SampleOutcome& s);  // false: index already recorded
  bool ordered_ = false;
  int64_t next_index_ = 0;                 // with ordered_: the next input index to write
  std::map<int64_t, SampleOutcome> held_;  // with ordered_: outcomes waiting for earlier ones
  std::function<void(const SampleOutcome&)> on_written_;
};

}  // namespace recap::engine
