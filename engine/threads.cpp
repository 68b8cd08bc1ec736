#include "engine/threads.h"

#include <omp.h>
#include <sched.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

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
}  // namespace

int cgroup_cpu_limit() {
  // cgroup v2: "max 100000" or "<quota> <period>", looked up from our cgroup to the root.
  std::string dir = cgroup_v2_dir();
  while (!dir.empty()) {
    std::ifstream f(dir + "/cpu.max");
    std::string quota;
    long period = 0;
    if (f >> quota >> period && quota != "max" && period > 0) {
      double q = std::atof(quota.c_str());
      if (q > 0) return std::max(1, static_cast<int>(std::ceil(q / static_cast<double>(period))));
    }
    if (dir == "/sys/fs/cgroup") break;
    dir = dir.substr(0, dir.find_last_of('/'));
  }
  // cgroup v1.
  std::ifstream q("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  long quota = 0, period = 0;
  if (q >> quota && p >> period && quota > 0 && period > 0)
    return std::max(1, static_cast<int>(std::ceil(static_cast<double>(quota) / static_cast<double>(period))));
  return 0;
}

ThreadBudget resolve_threads(int requested) {
  if (requested > 0) return {requested, "--threads"};
  if (int n = positive_env("OMP_NUM_THREADS")) return {n, "OMP_NUM_THREADS"};
  ThreadBudget b{affinity_cpu_count(), "affinity"};
  if (int c = cgroup_cpu_limit(); c > 0 && c < b.threads) b = {c, "cgroup"};
  if (int s = positive_env("SLURM_CPUS_PER_TASK"); s > 0 && s < b.threads) b = {s, "SLURM_CPUS_PER_TASK"};
  return b;
}

void apply_threads(int threads) {
  omp_set_num_threads(threads > 0 ? threads : 1);
}

}  // namespace recap::engine
