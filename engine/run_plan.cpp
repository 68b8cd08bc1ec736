#include "engine/run_plan.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <stdexcept>

#include "engine/fingerprint.h"
#include "io/fileutil.h"

namespace recap::engine {

using nlohmann::ordered_json;

std::string run_plan_path(const std::string& out_dir) {
  return io::join_path(out_dir, kRunPlanFile);
}

std::string canonical_input_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return buf;
  return path;
}

ordered_json shard_plan_entry(const ShardSpec& s, int64_t samples_per_shard) {
  ordered_json e;
  e["input"] = canonical_input_path(s.path);
  e["kind"] = s.is_tar ? "tar" : "list";
  if (s.is_tar) {
    e["samples"] = nullptr;
  } else {
    e["shard_id"] = s.shard_id;
    e["first_record"] = s.first_record;
    e["samples"] = s.n_records;
    e["samples_per_shard"] = samples_per_shard;
  }
  return e;
}

ordered_json read_run_plan_shards(const std::string& out_dir) {
  const std::string path = run_plan_path(out_dir);
  if (!io::file_exists(path)) return ordered_json::object();
  ordered_json j;
  try {
    j = ordered_json::parse(io::read_file(path));
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a readable run plan (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("shards") || !j["shards"].is_object())
    throw std::runtime_error(path + ": not a run plan (no \"shards\" object)");
  return j["shards"];
}

PlanMerge merge_run_plan(const ordered_json& old_shards,
                         const std::vector<std::pair<std::string, ordered_json>>& entries,
                         const std::set<std::string>& run_inputs) {
  PlanMerge m;
  m.shards = ordered_json::object();
  std::set<std::string> planned;
  for (auto& [name, e] : entries) planned.insert(name);
  // Old entries first, in their order: kept, replaced by this run's, or dropped as stale.
  for (auto it = old_shards.begin(); it != old_shards.end(); ++it) {
    const std::string& name = it.key();
    if (planned.count(name)) continue;  // this run's entry is added below
    const ordered_json& e = it.value();
    const std::string input = e.is_object() ? e.value("input", std::string()) : std::string();
    if (run_inputs.count(input)) {
      m.stale.push_back(name);
      m.differs = true;
      continue;
    }
    m.shards[name] = e;
  }
  for (auto& [name, e] : entries) {
    if (old_shards.contains(name)) {
      if (old_shards[name] != e) {
        m.changed.emplace_back(name, describe_material_change(old_shards[name], e));
        m.differs = true;
      }
    } else {
      m.differs = true;
    }
    m.shards[name] = e;
  }
  return m;
}

void write_run_plan(const std::string& out_dir, const ordered_json& shards) {
  ordered_json j;
  j["recap_plan"] = 1;
  j["shards"] = shards;
  io::atomic_write(run_plan_path(out_dir), j.dump(1) + "\n");
}

RunPlanLock::RunPlanLock(const std::string& out_dir) {
  // The directory itself is locked: no lock file is left behind (a shard's lock files are the
  // only ones in --out, and they go with the shard).
  fd_ = ::open(out_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RunPlanLock::~RunPlanLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace recap::engine
