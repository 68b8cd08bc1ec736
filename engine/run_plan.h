// The run plan: {out}/_recap_plan.json records every shard a caption run planned (all of the
// inputs, not only this worker's), with its input and the number of samples it must hold, so
// that merge-stats can tell a complete shard from one written under another layout, and list
// planned shards that have no outputs at all.
//
//   {"recap_plan": 1, "shards": {"00000": {"input": "/abs/list.jsonl", "kind": "list",
//     "shard_id": 0, "first_record": 0, "samples": 4, "samples_per_shard": 4}, ...,
//     "part-7": {"input": "/abs/part-7.tar", "kind": "tar", "samples": null}}}
//
// (tars: the sample count is only known once read). Runs merge into it per shard name: a
// shard planned the same way is left alone, a new one is added, entries of other inputs are
// kept (adding a list or a tar to a run does not disturb the others). A shard planned
// differently (another layout) whose outputs exist, and an entry on one of this run's inputs
// that this plan no longer has (a layout with fewer shards), are conflicts: refused (exit 2)
// unless --overwrite, which replaces the entry and removes the stale shard's outputs.
// Written atomically (temp + rename) under a flock of the --out directory itself where the
// filesystem has flock.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/sources.h"

namespace recap::engine {

inline constexpr const char* kRunPlanFile = "_recap_plan.json";

std::string run_plan_path(const std::string& out_dir);
// The absolute, symlink-resolved form of an input path (the path itself when it cannot be
// resolved): how inputs are compared and recorded.
std::string canonical_input_path(const std::string& path);
// One shard's plan entry (see above).
nlohmann::ordered_json shard_plan_entry(const ShardSpec& s, int64_t samples_per_shard);
// The "shards" object of {out}/_recap_plan.json (empty object when there is no plan). Throws
// std::runtime_error naming the file when it exists but is not a plan.
nlohmann::ordered_json read_run_plan_shards(const std::string& out_dir);

struct PlanMerge {
  nlohmann::ordered_json shards;  // the merged "shards" object
  // Re-planned shards: (name, "FIELD was OLD, now NEW; ...").
  std::vector<std::pair<std::string, std::string>> changed;
  std::vector<std::string> stale;  // names of old entries on this run's inputs, no longer planned
  bool differs = false;            // merged != old (the file must be written)
};
// Merges this run's entries (name -> entry, in plan order) into the old plan's shards.
// `run_inputs`: this run's canonical input paths.
PlanMerge merge_run_plan(const nlohmann::ordered_json& old_shards,
                         const std::vector<std::pair<std::string, nlohmann::ordered_json>>& entries,
                         const std::set<std::string>& run_inputs);
// Writes {out}/_recap_plan.json atomically. Throws io::IoError.
void write_run_plan(const std::string& out_dir, const nlohmann::ordered_json& shards);

// Serialises plan updates of concurrent workers: a blocking flock on the --out directory
// (none where the filesystem cannot flock: then the last writer wins, and every worker of one
// job writes the same plan). Released on destruction.
class RunPlanLock {
 public:
  explicit RunPlanLock(const std::string& out_dir);
  ~RunPlanLock();
  RunPlanLock(const RunPlanLock&) = delete;
  RunPlanLock& operator=(const RunPlanLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace recap::engine
