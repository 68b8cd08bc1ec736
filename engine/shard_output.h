// The outputs of one shard, written so that a crash at any moment loses nothing and a rerun
// never duplicates a sample:
//
//   {out}/.{shard}.lock          flock'ed while a process works on the shard (a second worker
//                                given the same shard skips it; released by the kernel if the
//                                process dies, even by kill -9)
//   {out}/.{shard}.tar.partial   the tar being built: members appended per finished sample
//   {out}/.{shard}.log.partial   one JSON line per finished sample (its sidecar record, its input
//                                index and the tar size after its members), appended and flushed
//                                after the sample's tar members; line 1 records the fingerprint
//
// On resume the log is read back, a torn last line dropped, every record whose tar members
// are not wholly in the partial tar dropped, and the tar truncated to the end of the last
// kept record; those samples are not recomputed. finish() then publishes, in this order:
// {shard}.tar (end blocks appended, renamed), {shard}.jsonl (every sample's record sorted
// by input index, failures included), and LAST {shard}_stats.json (exclusive create), the
// done marker: a shard is done iff its stats file exists.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/fileutil.h"

namespace recap::engine {

// A shard output that exists with another fingerprint (refused unless --overwrite).
struct FingerprintMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SampleOutcome {
  int64_t index = 0;  // position in the input shard
  std::string key;
  bool success = false;
  nlohmann::ordered_json meta;        // the {key}.json / sidecar record
  std::vector<std::string> captions;  // {key}.txt, then {key}.1.txt ... when several
  std::string image_bytes;            // original bytes (empty: no image member)
  std::string image_ext;              // "jpg", "png", "webp"
};

enum class ShardState {
  Todo,      // nothing or a partial run with our fingerprint (resumable)
  Done,      // stats exist with our fingerprint: skip
  Conflict,  // stats or partial log with another fingerprint (or unreadable)
  Busy,      // another process holds the lock
};

struct ShardProbe {
  ShardState state = ShardState::Todo;
  std::string detail;  // for Conflict: which file and which fingerprint
};

std::string shard_stats_path(const std::string& out_dir, const std::string& shard);
std::string shard_tar_path(const std::string& out_dir, const std::string& shard);
std::string shard_jsonl_path(const std::string& out_dir, const std::string& shard);

// Looks at a shard's outputs without locking (for skipping and up-front refusal).
ShardProbe probe_shard(const std::string& out_dir, const std::string& shard, const std::string& fingerprint);

class ShardOutput {
 public:
  // Locks and opens the shard (resuming a partial run). Returns null with *probe set when
  // the shard is Busy or Done (nothing to do). Throws FingerprintMismatch on a conflict
  // unless `overwrite` (then the old outputs and partial files are discarded).
  static std::unique_ptr<ShardOutput> open(const std::string& out_dir, const std::string& shard,
                                           const std::string& fingerprint, bool overwrite, int64_t mtime,
                                           ShardProbe* probe);
  ~ShardOutput();

  const std::string& name() const { return shard_; }
  // Input indices already finished by an earlier run.
  const std::set<int64_t>& done_indices() const { return done_; }
  int64_t resumed_count() const { return resumed_; }

  // Appends one sample (tar members for a success, then its log line). Not thread safe.
  void append(const SampleOutcome& s);
  // Publishes tar, sidecar and stats (extra keys merged into the computed stats). Returns
  // the stats written. After finish() the object only holds its lock until destroyed.
  nlohmann::ordered_json finish(const nlohmann::ordered_json& extra_stats, double start_time,
                                double end_time);

 private:
  ShardOutput() = default;
  void load_partial(bool overwrite);

  std::string out_dir_, shard_, fingerprint_;
  int64_t mtime_ = 0;
  int lock_fd_ = -1;
  io::OutFile tar_, log_;
  std::string tar_partial_, log_partial_, lock_path_;
  std::set<int64_t> done_;
  std::map<int64_t, std::string> records_;  // index -> sidecar line (compact JSON)
  int64_t resumed_ = 0;
  bool finished_ = false;
  double first_start_time_ = 0;
  int64_t last_sync_ = 0;
};

}  // namespace recap::engine
