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

}  // namespace recap::engine
