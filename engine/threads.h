// How many compute threads this process may use: the CPUs in its affinity mask, capped by a
// cgroup CPU quota (v2 cpu.max or v1 cfs_quota/period) and by SLURM_CPUS_PER_TASK when set;
// OMP_NUM_THREADS, when set, picks a count within that limit (a larger value is capped, and
// the source says so); an explicit --threads wins over everything. Never the node's raw core
// count.
#pragma once
#include <string>

namespace recap::engine {

struct ThreadBudget {
  int threads = 1;
  std::string source;  // "--threads", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "cgroup", "affinity"
};

int affinity_cpu_count();
// CPU quota of this process's cgroup rounded up, or 0 when unlimited/unknown.
int cgroup_cpu_limit();
ThreadBudget resolve_threads(int requested /* 0: auto */);
// Applies the budget to OpenMP (omp_set_num_threads).
void apply_threads(int threads);

}  // namespace recap::engine
