#include "engine/threads.h"

#include <omp.h>
#include <sched.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace recap::engine {

int affinity_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

namespace {
int positive_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (end == v || n <= 0 || n > 1 << 20) return 0;
  return static_cast<int>(n);
}

// The cgroup (v2) path of this process, "" if unknown.
std::string cgroup_v2_dir() {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  }
  return "";
}
// cgroup v1 cpu controller: (mount, path of this process's cgroup) for each usual mount
// name, e.g. ("/sys/fs/cgroup/cpu,cpuacct", "/slurm/uid_0/job_7").
std::vector<std::pair<std::string, std::string>> cgroup_v1_cpu_paths() {
  std::vector<std::pair<std::string, std::string>> out;
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = ",";  // appended: g++ 12's -Wrestrict misfires on "," + std::string
    controllers += line.substr(a + 1, b - a - 1);
    controllers += ",";
    if (controllers.find(",cpu,") == std::string::npos) continue;
    std::string rel = line.substr(b + 1);
    if (rel == "/") rel.clear();
    for (const char* mount : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"})
      out.emplace_back(mount, rel);
  }
  return out;
}
}  // namespace

int cgroup_cpu_limit() {
  // cgroup v2: "max 100000" or "<quota> <period>", looked up from our cgroup to the root.
  // The tightest quota on the way up applies (a parent's can be smaller than the leaf's).
  std::string dir = cgroup_v2_dir();
  int v2 = 0;
  while (!dir.empty()) {
    std::ifstream f(dir + "/cpu.max");
    std::string quota;
    long period = 0;
    if (f >> quota >> period && quota != "max" && period > 0) {
      double q = std::atof(quota.c_str());
      if (q > 0) {
        const int n = std::max(1, static_cast<int>(std::ceil(q / static_cast<double>(period))));
        if (v2 == 0 || n < v2) v2 = n;
      }
    }
    if (dir == "/sys/fs/cgroup") break;
    dir = dir.substr(0, dir.find_last_of('/'));
  }
  if (v2 > 0) return v2;
  // cgroup v1: our cpu controller's path ("N:cpu,cpuacct:/path" in /proc/self/cgroup) under
  // its mount, walked up to the mount; the tightest quota on the way applies.
  int best = 0;
  for (const auto& [mount, rel] : cgroup_v1_cpu_paths()) {
    std::string r = rel;
    for (;;) {
      std::ifstream q(mount + r + "/cpu.cfs_quota_us"), p(mount + r + "/cpu.cfs_period_us");
      long quota = 0, period = 0;
      if (q >> quota && p >> period && quota > 0 && period > 0) {
        const int n = std::max(
            1, static_cast<int>(std::ceil(static_cast<double>(quota) / static_cast<double>(period))));
        if (best == 0 || n < best) best = n;
      }
      if (r.empty() || r == "/") break;
      r = r.substr(0, r.find_last_of('/'));
    }
  }
  return best;
}

ThreadBudget resolve_threads(int requested) {
  if (requested > 0) return {requested, "--threads"};
  ThreadBudget b{affinity_cpu_count(), "affinity"};
  if (int c = cgroup_cpu_limit(); c > 0 && c < b.threads) b = {c, "cgroup"};
  if (int s = positive_env("SLURM_CPUS_PER_TASK"); s > 0 && s < b.threads) b = {s, "SLURM_CPUS_PER_TASK"};
  // OMP_NUM_THREADS chooses within the limit, never past it: more threads than CPUs only
  // time-slice (and spin) against each other.
  if (int n = positive_env("OMP_NUM_THREADS")) {
    if (n <= b.threads) return {n, "OMP_NUM_THREADS"};
    b.source = "OMP_NUM_THREADS=" + std::to_string(n) + " capped by " + b.source;
  }
  return b;
}

void apply_threads(int threads) {
  omp_set_num_threads(threads > 0 ? threads : 1);
}

}  // namespace recap::engine
