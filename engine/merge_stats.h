// One summary over every shard of a caption output directory (`recap-engine merge-stats`):
// which shards are done, which are partial or missing (what to resubmit), the failed samples
// by status, and the throughput. Reads only: safe to run while workers are writing.
//
// A shard is done iff its {shard}_stats.json exists and parses (engine/shard_output.h writes it
// last). Partial: the shard has started (.{shard}.log.partial / .tar.partial / .lock) but has no
// stats: unfinished, or still running somewhere. Missing: expected, nothing on disk.
//
// The expected shards, with the number of samples each must hold, come from the inputs when
// given (the same --list/--input flags as caption), else from the run plan the caption job
// wrote ({out}/_recap_plan.json, engine/run_plan.h), else from the directory: every shard
// name seen, plus the gaps in an all-numeric naming (00000, 00001, ...) between the lowest and
// highest id seen (shards after the last one ever started cannot be known that way; the
// summary says so).
//
// A shard whose stats hold fewer samples than planned, or that was written for another plan
// (another layout of the same input), is incomplete: never done. Shards on disk that the
// plan does not have (left by an older layout) are listed as stale and counted nowhere.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace recap::engine {

enum class MergedShardState { Done, Incomplete, Partial, Missing, Corrupt };
const char* merged_state_name(MergedShardState s);

struct MergedShard {
  std::string name;
  MergedShardState state = MergedShardState::Missing;
  int64_t samples = 0;   // done/incomplete: stats "count"; partial: samples finished so far
  int64_t planned = -1;  // samples the plan says it must hold (-1: unknown, e.g. a tar input)
  std::string detail;    // corrupt: why the stats file is unusable; incomplete: what is short
};

// A shard the run planned: its name, the samples it must hold (-1: unknown) and its plan
// entry (engine/run_plan.h; null when unknown).
struct PlannedShard {
  std::string name;
  int64_t samples = -1;
  nlohmann::ordered_json entry;
};

struct MergeSummary {
  std::string out_dir;
  std::string expected_from;  // "inputs" | "plan" | "directory"
  std::vector<MergedShard> shards;
  int64_t n_done = 0, n_incomplete = 0, n_partial = 0, n_missing = 0, n_corrupt = 0;
  std::vector<std::string> stale;  // shards on disk the plan does not have (not counted)
  // Summed over done shards (img2dataset stats keys, plus ours).
  std::map<std::string, int64_t>
      counters;  // count, successes, failed_to_*, tokens_in, tokens_out, resumed_samples
  std::map<std::string, int64_t> status_dict;  // status / error message -> samples
  int64_t samples_in_partial = 0;
  double worker_seconds = 0;                    // sum of shard durations
  double first_start = 0, last_end = 0;         // epoch seconds over done shards (0: none)
  std::map<std::string, int64_t> fingerprints;  // fingerprint -> done shards

  bool all_done() const { return !shards.empty() && n_done == static_cast<int64_t>(shards.size()); }
  double images_per_hour_wall() const;        // successes / (last_end - first_start)
  double images_per_worker_hour() const;      // successes / sum of durations
  std::vector<std::string> not_done() const;  // names, in order
  // "--shards 3,7-9" when every not-done shard has a numeric name, else "" (use the todo file).
  std::string rerun_spec() const;
  nlohmann::ordered_json to_json() const;
  std::string to_text() const;
};

// Shard names found in out_dir (from stats, tar, partial and lock files), sorted. Throws
// UsageError when out_dir cannot be opened.
std::vector<std::string> shards_in_directory(const std::string& out_dir);
// The directory's names plus the gaps of an all-numeric naming (same width), sorted.
std::vector<std::string> expected_from_directory(const std::vector<std::string>& seen);

// Builds the summary. `expected` empty: from the run plan in out_dir, else derived from the
// directory. Throws UsageError (engine/errors.h: exit 2) when out_dir is not a readable
// directory or its run plan is unreadable.
MergeSummary merge_shard_stats(const std::string& out_dir, const std::vector<PlannedShard>& expected);
// Names only (sample counts unknown).
MergeSummary merge_shard_stats(const std::string& out_dir, const std::vector<std::string>& expected);

}  // namespace recap::engine
