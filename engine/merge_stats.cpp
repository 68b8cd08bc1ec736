#include "engine/merge_stats.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

#include "engine/errors.h"
#include "engine/fingerprint.h"
#include "engine/run_plan.h"
#include "engine/shard_assign.h"
#include "io/fileutil.h"

namespace recap::engine {

using nlohmann::ordered_json;

const char* merged_state_name(MergedShardState s) {
  switch (s) {
    case MergedShardState::Done:
      return "done";
    case MergedShardState::Incomplete:
      return "incomplete";
    case MergedShardState::Partial:
      return "partial";
    case MergedShardState::Missing:
      return "missing";
    case MergedShardState::Corrupt:
      return "corrupt";
  }
  return "?";
}

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The shard a file of the output directory belongs to, "" for other files.
std::string shard_of_file(const std::string& f) {
  if (f.rfind(std::string(".") + kRunPlanFile, 0) == 0) return "";  // the plan's temp file
  if (ends_with(f, "_stats.json")) return f.substr(0, f.size() - 11);
  if (!f.empty() && f[0] == '.') {
    for (const char* suf : {".log.partial", ".tar.partial", ".lock"})
      if (ends_with(f, suf)) return f.substr(1, f.size() - 1 - std::strlen(suf));
    // A lock file where flock is unavailable: ".{shard}.lock.{generation}".
    const size_t dot = f.find_last_not_of("0123456789");  // not npos: f[0] is '.'
    if (dot + 1 < f.size() && f[dot] == '.' && dot >= 7 && f.compare(dot - 5, 5, ".lock") == 0)
      return f.substr(1, dot - 6);
    return "";
  }
  // A published tar (a shard whose stats are still missing is unfinished: publishing
  // links the tar first and creates the stats last).
  if (ends_with(f, ".tar") && f.find(".tmp") == std::string::npos) return f.substr(0, f.size() - 4);
  return "";
}

// Samples finished so far in a partial log (line 1 is the header; a torn last line is not
// counted).
int64_t partial_log_samples(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  int64_t n = 0;
  bool header = true;
  while (std::getline(f, line)) {
    if (f.eof()) break;  // no newline: torn
    if (header) {
      header = false;
      continue;
    }
    if (!line.empty()) ++n;
  }
  return n;
}

int64_t as_int(const ordered_json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number()) return static_cast<int64_t>(v.get<double>());
  return 0;
}

std::string fmt_hms(double s) {
  if (s < 0) s = 0;
  auto t = static_cast<int64_t>(s + 0.5);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

}  // namespace

std::vector<std::string> shards_in_directory(const std::string& out_dir) {
  DIR* d = ::opendir(out_dir.c_str());
  if (!d) throw UsageError(out_dir + ": cannot open the output directory (" + std::strerror(errno) + ")");
  std::set<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string s = shard_of_file(e->d_name);
    if (!s.empty()) names.insert(s);
  }
  ::closedir(d);
  return {names.begin(), names.end()};
}

std::vector<std::string> expected_from_directory(const std::vector<std::string>& seen) {
  std::set<std::string> out(seen.begin(), seen.end());
  if (seen.empty()) return {};
  const size_t width = seen.front().size();
  int64_t lo = INT64_MAX, hi = -1;
  for (auto& n : seen) {
    int64_t id = shard_name_id(n);
    if (id < 0 || n.size() != width) return {out.begin(), out.end()};  // not a numbered series
    lo = std::min(lo, id);
    hi = std::max(hi, id);
  }
  if (hi - lo > 10000000) return {out.begin(), out.end()};
  for (int64_t id = lo; id <= hi; ++id) {
    std::string s = std::to_string(id);
    if (s.size() < width) s.insert(0, width - s.size(), '0');
    out.insert(s);
  }
  return {out.begin(), out.end()};
}

MergeSummary merge_shard_stats(const std::string& out_dir, const std::vector<std::string>& expected) {
  std::vector<PlannedShard> planned;
  for (auto& n : expected) planned.push_back({n, -1, nullptr});
  return merge_shard_stats(out_dir, planned);
}

MergeSummary merge_shard_stats(const std::string& out_dir, const std::vector<PlannedShard>& expected_in) {
  MergeSummary m;
  m.out_dir = out_dir;
  std::vector<std::string> seen = shards_in_directory(out_dir);  // also checks the directory
  std::vector<PlannedShard> planned = expected_in;
  m.expected_from = "inputs";
  if (planned.empty()) {
    // An unreadable run plan is the user's directory's problem, not a failed summary: exit 2.
    const ordered_json plan = as_usage_error("", [&] { return read_run_plan_shards(out_dir); });
    for (auto it = plan.begin(); it != plan.end(); ++it) {
      const auto& e = it.value();
      const int64_t n = e.is_object() && e.contains("samples") && e["samples"].is_number_integer()
                            ? e["samples"].get<int64_t>()
                            : -1;
      planned.push_back({it.key(), n, e});
    }
    m.expected_from = planned.empty() ? "directory" : "plan";
  }
  if (planned.empty())
    for (auto& n : expected_from_directory(seen)) planned.push_back({n, -1, nullptr});
  if (m.expected_from != "directory") {
    std::set<std::string> names;
    for (auto& p : planned) names.insert(p.name);
    for (auto& n : seen)
      if (!names.count(n)) m.stale.push_back(n);
  }

  for (const auto& plan : planned) {
    const std::string& name = plan.name;
    MergedShard sh;
    sh.name = name;
    sh.planned = plan.samples;
    const std::string stats = io::join_path(out_dir, name + "_stats.json");
    const std::string log = io::join_path(out_dir, "." + name + ".log.partial");
    if (io::file_exists(stats)) {
      try {
        auto j = ordered_json::parse(io::read_file(stats));
        if (!j.is_object() || !j.contains("count")) throw std::runtime_error("no \"count\" field");
        sh.samples = as_int(j["count"]);
        // Done only when it holds what the plan says: a shard written under another layout of
        // the same input (other records) or cut short is not.
        if (plan.samples >= 0 && sh.samples != plan.samples)
          sh.detail = "holds " + std::to_string(sh.samples) + " sample(s), the plan has " +
                      std::to_string(plan.samples);
        else if (plan.entry.is_object() && j.contains("plan") && j["plan"] != plan.entry)
          sh.detail = "written for another plan: " + describe_material_change(j["plan"], plan.entry);
        if (!sh.detail.empty()) {
          sh.state = MergedShardState::Incomplete;
          m.n_incomplete++;
          m.shards.push_back(std::move(sh));
          continue;
        }
        sh.state = MergedShardState::Done;
        for (auto it = j.begin(); it != j.end(); ++it) {
          const std::string& k = it.key();
          if (k == "count" || k == "successes" || k.rfind("failed_to_", 0) == 0 || k == "tokens_in" ||
              k == "tokens_out" || k == "resumed_samples")
            m.counters[k] += as_int(it.value());
        }
        if (j.contains("status_dict") && j["status_dict"].is_object())
          for (auto it = j["status_dict"].begin(); it != j["status_dict"].end(); ++it)
            m.status_dict[it.key()] += as_int(it.value());
        if (j.contains("duration") && j["duration"].is_number())
          m.worker_seconds += j["duration"].get<double>();
        if (j.contains("start_time") && j["start_time"].is_number()) {
          double t = j["start_time"].get<double>();
          if (m.first_start == 0 || t < m.first_start) m.first_start = t;
        }
        if (j.contains("end_time") && j["end_time"].is_number())
          m.last_end = std::max(m.last_end, j["end_time"].get<double>());
        if (j.contains("fingerprint") && j["fingerprint"].is_string())
          m.fingerprints[j["fingerprint"].get<std::string>()]++;
        m.n_done++;
      } catch (const std::exception& e) {
        sh.state = MergedShardState::Corrupt;
        sh.detail = stats + ": " + e.what();
        m.n_corrupt++;
      }
    } else if (io::file_exists(log) || io::file_exists(io::join_path(out_dir, "." + name + ".tar.partial")) ||
               io::file_exists(io::join_path(out_dir, "." + name + ".lock")) ||
               io::file_exists(io::join_path(out_dir, "." + name + ".lock.0")) ||
               io::file_exists(io::join_path(out_dir, name + ".tar"))) {
      sh.state = MergedShardState::Partial;
      sh.samples = io::file_exists(log) ? partial_log_samples(log) : 0;
      m.samples_in_partial += sh.samples;
      m.n_partial++;
    } else {
      m.n_missing++;
    }
    m.shards.push_back(std::move(sh));
  }
  return m;
}

double MergeSummary::images_per_hour_wall() const {
  double wall = last_end - first_start;
  auto it = counters.find("successes");
  if (wall <= 0 || it == counters.end()) return 0;
  return static_cast<double>(it->second) * 3600.0 / wall;
}

double MergeSummary::images_per_worker_hour() const {
  auto it = counters.find("successes");
  if (worker_seconds <= 0 || it == counters.end()) return 0;
  return static_cast<double>(it->second) * 3600.0 / worker_seconds;
}

std::vector<std::string> MergeSummary::not_done() const {
  std::vector<std::string> v;
  for (auto& s : shards)
    if (s.state != MergedShardState::Done) v.push_back(s.name);
  return v;
}

std::string MergeSummary::rerun_spec() const {
  std::vector<int64_t> ids;
  for (auto& n : not_done()) {
    int64_t id = shard_name_id(n);
    if (id < 0) return "";
    ids.push_back(id);
  }
  return ids.empty() ? "" : "--shards " + format_id_ranges(ids);
}

ordered_json MergeSummary::to_json() const {
  ordered_json j;
  j["out"] = out_dir;
  j["expected_from"] = expected_from;
  j["all_done"] = all_done();
  j["shards_expected"] = shards.size();
  j["shards_done"] = n_done;
  j["shards_incomplete"] = n_incomplete;
  j["shards_partial"] = n_partial;
  j["shards_missing"] = n_missing;
  j["shards_corrupt"] = n_corrupt;
  auto list = [&](MergedShardState st) {
    ordered_json a = ordered_json::array();
    for (auto& s : shards)
      if (s.state == st) {
        if (st == MergedShardState::Partial)
          a.push_back({{"shard", s.name}, {"samples_done", s.samples}});
        else if (st == MergedShardState::Corrupt)
          a.push_back({{"shard", s.name}, {"error", s.detail}});
        else if (st == MergedShardState::Incomplete)
          a.push_back({{"shard", s.name}, {"samples", s.samples}, {"planned", s.planned}, {"why", s.detail}});
        else
          a.push_back(s.name);
      }
    return a;
  };
  j["incomplete"] = list(MergedShardState::Incomplete);
  j["partial"] = list(MergedShardState::Partial);
  j["missing"] = list(MergedShardState::Missing);
  j["corrupt"] = list(MergedShardState::Corrupt);
  j["stale"] = stale;
  j["rerun"] = rerun_spec();
  ordered_json samples = ordered_json::object();
  for (const char* k :
       {"count", "successes", "failed_to_download", "failed_to_decode", "failed_to_parse",
        "failed_to_caption", "failed_to_resize", "tokens_in", "tokens_out", "resumed_samples"})
    samples[k] = counters.count(k) ? counters.at(k) : 0;
  for (auto& [k, v] : counters)
    if (!samples.contains(k)) samples[k] = v;
  j["samples"] = samples;
  j["samples_in_partial_shards"] = samples_in_partial;
  ordered_json sd = ordered_json::object();
  for (auto& [k, v] : status_dict) sd[k] = v;
  j["status_dict"] = sd;
  j["first_start_time"] = first_start;
  j["last_end_time"] = last_end;
  j["worker_seconds"] = worker_seconds;
  j["images_per_hour"] = images_per_hour_wall();
  j["images_per_worker_hour"] = images_per_worker_hour();
  ordered_json fps = ordered_json::object();
  for (auto& [k, v] : fingerprints) fps[k] = v;
  j["fingerprints"] = fps;
  return j;
}

std::string MergeSummary::to_text() const {
  auto c = [&](const char* k) { return counters.count(k) ? counters.at(k) : int64_t{0}; };
  std::string t;
  char buf[512];
  std::snprintf(buf, sizeof buf, "merge-stats: %s: %zu shard(s) expected (from the %s)\n", out_dir.c_str(),
                shards.size(), expected_from.c_str());
  t += buf;
  std::snprintf(buf, sizeof buf, "  done %lld, incomplete %lld, partial %lld, missing %lld, corrupt %lld%s\n",
                static_cast<long long>(n_done), static_cast<long long>(n_incomplete),
                static_cast<long long>(n_partial), static_cast<long long>(n_missing),
                static_cast<long long>(n_corrupt), all_done() ? "  -- all done" : "");
  t += buf;
  std::snprintf(buf, sizeof buf,
                "  samples in done shards: %lld (ok %lld; failed_to_download %lld, failed_to_decode %lld, "
                "failed_to_parse %lld, failed_to_caption %lld); %lld more in partial shards\n",
                static_cast<long long>(c("count")), static_cast<long long>(c("successes")),
                static_cast<long long>(c("failed_to_download")),
                static_cast<long long>(c("failed_to_decode")), static_cast<long long>(c("failed_to_parse")),
                static_cast<long long>(c("failed_to_caption")), static_cast<long long>(samples_in_partial));
  t += buf;
  // The most frequent error messages (the status_dict keys other than "success").
  std::vector<std::pair<int64_t, std::string>> errs;
  for (auto& [k, v] : status_dict)
    if (k != "success") errs.emplace_back(v, k);
  std::sort(errs.begin(), errs.end(),
            [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  for (size_t i = 0; i < errs.size() && i < 10; ++i) {
    std::snprintf(buf, sizeof buf, "    %8lld  %.200s\n", static_cast<long long>(errs[i].first),
                  errs[i].second.c_str());
    t += buf;
  }
  if (errs.size() > 10)
    t += "    ... " + std::to_string(errs.size() - 10) + " more error message(s) (--json)\n";
  if (n_done > 0) {
    std::snprintf(
        buf, sizeof buf,
        "  throughput: %.0f images/hour over %s wall clock (first start to last end); %.0f images per "
        "worker-hour (%s of shard time)\n",
        images_per_hour_wall(), fmt_hms(last_end - first_start).c_str(), images_per_worker_hour(),
        fmt_hms(worker_seconds).c_str());
    t += buf;
  }
  if (fingerprints.size() > 1)
    t += "  warning: done shards carry " + std::to_string(fingerprints.size()) +
         " different fingerprints (different engine, weights or settings)\n";
  for (auto& s : shards) {
    if (s.state == MergedShardState::Done || s.state == MergedShardState::Missing) continue;
    t += "  " + std::string(merged_state_name(s.state)) + ": " + s.name;
    if (s.state == MergedShardState::Partial) t += " (" + std::to_string(s.samples) + " sample(s) so far)";
    if (s.state == MergedShardState::Corrupt || s.state == MergedShardState::Incomplete)
      t += " (" + s.detail + ")";
    t += "\n";
  }
  if (!stale.empty()) {
    std::string names;
    for (auto& n : stale)
      if (names.size() < 400) names += (names.empty() ? "" : ",") + n;
    t += "  stale (on disk, not in the plan; not counted): " + names + "\n";
  }
  if (n_missing > 0) {
    std::vector<int64_t> ids;
    std::string names;
    bool numeric = true;
    for (auto& s : shards)
      if (s.state == MergedShardState::Missing) {
        int64_t id = shard_name_id(s.name);
        if (id < 0) numeric = false;
        ids.push_back(id);
        if (names.size() < 400) names += (names.empty() ? "" : ",") + s.name;
      }
    t += "  missing: " + (numeric ? format_id_ranges(ids) : names) + "\n";
  }
  if (!all_done()) {
    std::string spec = rerun_spec();
    if (!spec.empty()) t += "  to rerun the shards not done: caption ... " + spec + "\n";
  }
  if (expected_from == "directory")
    t += "  note: the expected shards were inferred from the directory (names seen and numbering gaps); "
         "shards "
         "after the last one ever started are unknown: pass the caption job's --list/--input for the exact "
         "list\n";
  return t;
}

}  // namespace recap::engine
