// Static assignment of input shards to workers (one process of a job array): worker I of N
// takes shards I, I+N, I+2N, ... (strided, so any number of shards spreads evenly).
//
// Resolution order: the --shard-index/--shard-count flags; SLURM_ARRAY_TASK_ID -
// SLURM_ARRAY_TASK_MIN with SLURM_ARRAY_TASK_COUNT; SLURM_PROCID with SLURM_NTASKS;
// JOB_COMPLETION_INDEX (Kubernetes Indexed Job; the count must come from --shard-count);
// otherwise 0 of 1.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace recap::engine {

struct ShardAssignment {
  int64_t index = 0;
  int64_t count = 1;
  std::string source;  // "flags", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "JOB_COMPLETION_INDEX", "default"
  bool takes(int64_t shard_position) const { return shard_position % count == index; }
  std::string describe() const;  // "worker 3 of 8 (from SLURM_ARRAY_TASK_ID)"
};

struct AssignmentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Throws AssignmentError for inconsistent values (index outside [0, count), count < 1, a
// non-numeric variable, an index without a count).
ShardAssignment resolve_shard_assignment(std::optional<int64_t> flag_index, std::optional<int64_t> flag_count,
                                         const EnvLookup& env = process_env());

// Positions (0-based, in input order) this worker takes out of n_shards.
std::vector<int64_t> assigned_positions(const ShardAssignment& a, int64_t n_shards);

// A hand-picked subset of the input shards (--shards / --shards-file), to rerun a few.
//
// Spec syntax: comma- or whitespace-separated items, each a shard id (`17`, `00017`), an
// inclusive id range (`120-159`), or a shard name (tar inputs: the input's basename without
// `.tar`). `@FILE` reads the items from FILE (one or more per line; `#` starts a comment), as
// does --shards-file FILE; a file may name the shards by their output file names too
// (`00017.tar`, `00017_stats.json`), so a list printed by `ls` or `merge-stats` works.
// An id matches the shard whose name is that number (any zero padding).
struct ShardSelection {
  std::vector<std::pair<int64_t, int64_t>> id_ranges;  // inclusive
  std::vector<std::string> names;
  std::string origin;  // "--shards 120-159" / "--shards-file f.txt", for messages
  bool empty() const { return id_ranges.empty() && names.empty(); }
  std::string describe() const;  // "shards 120-159" / "3 shard ids from f.txt"
};

// Parses a --shards spec (`@FILE` allowed). Throws AssignmentError naming the bad item (and
// the file and line when read from a file).
ShardSelection parse_shard_selection(const std::string& spec);
ShardSelection read_shard_selection_file(const std::string& path);
// Both flags may be given; their items add up.
ShardSelection merge_selections(ShardSelection a, const ShardSelection& b);

// The shard's id when its name is all digits, else -1.
int64_t shard_name_id(const std::string& name);

// Positions (in input order) of the shards `sel` picks out of `shard_names`; an empty
// selection picks all. Throws AssignmentError when an item matches no shard (a typo or a
// different --samples-per-shard would otherwise silently do nothing).
std::vector<int64_t> selected_positions(const ShardSelection& sel,
                                        const std::vector<std::string>& shard_names);

// The shards this worker takes: the selected ones, strided by the assignment (so a
// hand-picked rerun can itself be spread over an array). Positions in input order.
std::vector<int64_t> worker_positions(const ShardAssignment& a, const ShardSelection& sel,
                                      const std::vector<std::string>& shard_names);

// "0-3,7,9-12": the compact form of a set of ids, as --shards accepts it.
std::string format_id_ranges(std::vector<int64_t> ids);

}  // namespace recap::engine
