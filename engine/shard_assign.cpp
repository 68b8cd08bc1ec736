#include "engine/shard_assign.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

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

// ---------------------------------------------------------------------------------------------
// Shard selection (--shards / --shards-file).

namespace recap::engine {

namespace {

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// The shard name an output file name stands for ("00017.tar" -> "00017").
std::string strip_output_suffix(const std::string& item) {
  for (const char* suf : {"_stats.json", ".tar", ".jsonl"}) {
    const std::string s(suf);
    if (item.size() > s.size() && item.compare(item.size() - s.size(), s.size(), s) == 0)
      return item.substr(0, item.size() - s.size());
  }
  return item;
}

void add_item(ShardSelection* sel, std::string item, const std::string& where) {
  if (item.empty()) return;
  // Paths as printed by `ls out/*.tar`: only the base name names the shard.
  if (auto slash = item.find_last_of('/'); slash != std::string::npos) item = item.substr(slash + 1);
  item = strip_output_suffix(item);
  if (all_digits(item)) {
    int64_t id = std::stoll(item);
    sel->id_ranges.emplace_back(id, id);
    return;
  }
  auto dash = item.find('-');
  if (dash != std::string::npos && dash > 0 && all_digits(item.substr(0, dash)) &&
      all_digits(item.substr(dash + 1))) {
    int64_t lo = std::stoll(item.substr(0, dash)), hi = std::stoll(item.substr(dash + 1));
    if (hi - lo >= 100000000)
      throw AssignmentError(where + ": shard range '" + item + "' is too large (at most 10^8 ids)");
    if (lo > hi)
      throw AssignmentError(where + ": shard range '" + item + "' is empty (" + std::to_string(lo) + " > " +
                            std::to_string(hi) + ")");
    sel->id_ranges.emplace_back(lo, hi);
    return;
  }
  if (item.find_first_of("*?[]{}") != std::string::npos || item == "." || item == "..")
    throw AssignmentError(where + ": '" + item +
                          "' is neither a shard id, an id range (120-159) nor a shard name");
  sel->names.push_back(item);
}

void add_items(ShardSelection* sel, const std::string& text, const std::string& where) {
  std::string cur;
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      add_item(sel, cur, where);
      cur.clear();
    } else {
      cur += c;
    }
  }
  add_item(sel, cur, where);
}

}  // namespace

ShardSelection read_shard_selection_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw AssignmentError("shard list " + path + ": cannot be read (" + std::strerror(errno) + ")");
  ShardSelection sel;
  sel.origin = path;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    add_items(&sel, line, path + ":" + std::to_string(n));
  }
  if (sel.empty()) throw AssignmentError("shard list " + path + " names no shard");
  return sel;
}

ShardSelection parse_shard_selection(const std::string& spec) {
  if (!spec.empty() && spec[0] == '@') return read_shard_selection_file(spec.substr(1));
  ShardSelection sel;
  sel.origin = "--shards " + spec;
  add_items(&sel, spec, "--shards");
  if (sel.empty()) throw AssignmentError("--shards '" + spec + "' names no shard");
  return sel;
}

ShardSelection merge_selections(ShardSelection a, const ShardSelection& b) {
  a.id_ranges.insert(a.id_ranges.end(), b.id_ranges.begin(), b.id_ranges.end());
  a.names.insert(a.names.end(), b.names.begin(), b.names.end());
  a.origin = a.origin.empty() ? b.origin : b.origin.empty() ? a.origin : a.origin + " + " + b.origin;
  return a;
}

std::string ShardSelection::describe() const {
  std::string s;
  for (auto& [lo, hi] : id_ranges) {
    if (!s.empty()) s += ",";
    s += lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
  }
  for (auto& n : names) s += (s.empty() ? "" : ",") + n;
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return "shards " + s;
}

int64_t shard_name_id(const std::string& name) {
  return all_digits(name) ? std::stoll(name) : -1;
}

std::vector<int64_t> selected_positions(const ShardSelection& sel,
                                        const std::vector<std::string>& shard_names) {
  std::vector<int64_t> out;
  if (sel.empty()) {
    for (size_t i = 0; i < shard_names.size(); ++i) out.push_back(static_cast<int64_t>(i));
    return out;
  }
  std::vector<char> name_hit(sel.names.size(), 0);
  for (size_t i = 0; i < shard_names.size(); ++i) {
    const std::string& name = shard_names[i];
    const int64_t id = shard_name_id(name);
    bool take = false;
    for (size_t r = 0; r < sel.id_ranges.size(); ++r)
      if (id >= 0 && id >= sel.id_ranges[r].first && id <= sel.id_ranges[r].second) take = true;
    for (size_t k = 0; k < sel.names.size(); ++k)
      if (sel.names[k] == name) {
        take = true;
        name_hit[k] = 1;
      }
    if (take) out.push_back(static_cast<int64_t>(i));
  }
  // Every item must match something; a range must match every id in it.
  std::vector<std::string> unmatched;
  std::set<int64_t> ids;
  for (auto& n : shard_names)
    if (int64_t id = shard_name_id(n); id >= 0) ids.insert(id);
  for (size_t r = 0; r < sel.id_ranges.size(); ++r) {
    auto [lo, hi] = sel.id_ranges[r];
    std::vector<int64_t> missing;
    for (int64_t id = lo; id <= hi && missing.size() < 1000000; ++id)
      if (!ids.count(id)) missing.push_back(id);
    if (!missing.empty()) unmatched.push_back(format_id_ranges(missing));
  }
  for (size_t k = 0; k < sel.names.size(); ++k)
    if (!name_hit[k]) unmatched.push_back(sel.names[k]);
  if (!unmatched.empty()) {
    std::string list;
    for (auto& u : unmatched) list += (list.empty() ? "" : ",") + u;
    std::string range = shard_names.empty() ? "none" : shard_names.front() + " .. " + shard_names.back();
    throw AssignmentError(sel.origin + ": no input shard " + list + " (the inputs have " +
                          std::to_string(shard_names.size()) + " shard(s): " + range + ")");
  }
  return out;
}

std::vector<int64_t> worker_positions(const ShardAssignment& a, const ShardSelection& sel,
                                      const std::vector<std::string>& shard_names) {
  std::vector<int64_t> picked = selected_positions(sel, shard_names);
  std::vector<int64_t> out;
  for (int64_t j : assigned_positions(a, static_cast<int64_t>(picked.size())))
    out.push_back(picked[static_cast<size_t>(j)]);
  return out;
}

std::string format_id_ranges(std::vector<int64_t> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::string s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(ids[i]);
    if (j > i) {
      s += '-';
      s += std::to_string(ids[j]);
    }
    i = j + 1;
  }
  return s;
}

}  // namespace recap::engine
