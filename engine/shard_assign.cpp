#include "engine/shard_assign.h"

#include <cstdlib>

namespace recap::engine {

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
}

std::string ShardAssignment::describe() const {
  return "worker " + std::to_string(index) + " of " + std::to_string(count) + " (from " + source + ")";
}

namespace {
int64_t parse_num(const std::string& name, const std::string& v) {
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0') throw AssignmentError(name + "='" + v + "' is not an integer");
  return n;
}
ShardAssignment checked(int64_t index, int64_t count, std::string source) {
  if (count < 1)
    throw AssignmentError("shard count must be at least 1 (got " + std::to_string(count) + " from " + source +
                          ")");
  if (index < 0 || index >= count)
    throw AssignmentError("shard index " + std::to_string(index) + " is outside [0, " +
                          std::to_string(count) + ") (from " + source + ")");
  return {index, count, std::move(source)};
}
}  // namespace

ShardAssignment resolve_shard_assignment(std::optional<int64_t> flag_index, std::optional<int64_t> flag_count,
                                         const EnvLookup& env) {
  if (flag_index) {
    if (!flag_count) throw AssignmentError("--shard-index needs --shard-count");
    return checked(*flag_index, *flag_count, "flags");
  }
  // The index comes from the scheduler; the count from the flag when given, else from it too.
  if (auto id = env("SLURM_ARRAY_TASK_ID")) {
    int64_t min = 0;
    if (auto m = env("SLURM_ARRAY_TASK_MIN")) min = parse_num("SLURM_ARRAY_TASK_MIN", *m);
    auto cnt = env("SLURM_ARRAY_TASK_COUNT");
    if (!flag_count && !cnt)
      throw AssignmentError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
    int64_t count = flag_count ? *flag_count : parse_num("SLURM_ARRAY_TASK_COUNT", *cnt);
    return checked(parse_num("SLURM_ARRAY_TASK_ID", *id) - min, count, "SLURM_ARRAY_TASK_ID");
  }
  if (auto pid = env("SLURM_PROCID")) {
    auto nt = env("SLURM_NTASKS");
    if (flag_count || nt) {
      int64_t count = flag_count ? *flag_count : parse_num("SLURM_NTASKS", *nt);
      return checked(parse_num("SLURM_PROCID", *pid), count, "SLURM_PROCID");
    }
  }
  if (auto jci = env("JOB_COMPLETION_INDEX")) {
    if (!flag_count)
      throw AssignmentError(
          "JOB_COMPLETION_INDEX is set: pass --shard-count (the Indexed Job's completions)");
    return checked(parse_num("JOB_COMPLETION_INDEX", *jci), *flag_count, "JOB_COMPLETION_INDEX");
  }
  if (flag_count) return checked(0, *flag_count, "flags");
  return {0, 1, "default"};
}

std::vector<int64_t> assigned_positions(const ShardAssignment& a, int64_t n_shards) {
  std::vector<int64_t> out;
  for (int64_t p = a.index; p < n_shards; p += a.count) out.push_back(p);
  return out;
}

}  // namespace recap::engine
