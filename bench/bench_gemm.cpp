// GEMM benchmarks at the model's real shapes, measured against this machine's own limits.
//
//   limits/...                  memory read bandwidth (1 and 2 threads), f32 FMA, int8 dot
//                               and bf16 vdpbf16ps peaks, measured once per run; the int8 dot
//                               peak is that of the active int8 GEMM's instructions (label):
//                               vpdpbusd zmm, or under RECAP_FORCE_ISA=avx2 (and AVX-512
//                               without VNNI) the AVX2 vpmaddubsw+vpmaddwd+vpaddd ymm triple
//   ceiling/int(8|4)_tile_(dots|groups)   the int8/int4 full-tile kernel's instructions alone
//                               (all operands in L1): dots only, then with the per-group
//                               float step; frac_of_peak against the int8 peak probed
//                               alternately in the same row (AVX-512 VNNI only)
//   gemm/<fmt>/<shape>/M:<m>    recap GEMM, fmt in f32|bf16|int8|int4
//   blas_sgemm/<shape>/M:<m>    OpenBLAS cblas_sgemm on the same shape (f32 baseline)
//   batched_decode/<fmt>/<shape>/M:<m>   int8/int4, M in {1,4,8,16}: frac_of_bound against
//                               the larger of the bandwidth and the vpdpbusd compute bound
//   prefill/<fmt>/<shape>/M:616, prefill_xquant/<fmt>/<shape>/M:616   pp616 against the int8
//                               peak, and the activation quantization alone (one-panel GEMM)
// Counters: GOPS (2*M*N*K / s), GBps (weight + activation bytes / s), frac_of_limit
// (throughput over the limit that bounds the row: read bandwidth for M <= 16, probed right
// after the row so host-level drift does not skew it, else the peak
// of the format's dot instruction: f32 FMA for f32/BLAS, vdpbf16ps for bf16, the int8 dot
// peak above for int8/int4) and limit (that limit's value). Weights smaller than ~128 MB are replicated and
// rotated so every call streams from memory, not cache.
//
// Threads: OMP_NUM_THREADS (default: all cores). Quick run:
//   bench_gemm --benchmark_filter='limits|gate_up' --benchmark_min_time=0.1
// On a shared machine: --benchmark_repetitions=5 and read the _max rows (best repetition).
// The AVX2 int8/int4 path at 1 thread, prefill against the AVX2 int8 peak (CPU time):
//   OMP_NUM_THREADS=1 RECAP_FORCE_ISA=avx2 bench_gemm
//     --benchmark_filter='limits/int8|prefill/int(8|4)/llama_q_o|gemm/int(8|4)/llama_gate_up/M:(16|640)'
// (prefill/... rows: frac_of_peak_cpu; gemm/... rows: frac_of_limit, wall time).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/isa.h"
#include "kernels/machine_limits.h"
#include "kernels/weight_formats.h"

#ifdef RECAP_HAVE_BLAS
#include <cblas.h>
#endif

using namespace recap::kernels;

namespace {

struct Limits {
  double bw1 = 0, bw2 = 0, bw_threads = 0;  // GB/s
  double fma = 0, vnni = 0, bf16 = 0;       // GFLOP/s, GOP/s, GFLOP/s at omp_get_max_threads()
  const char* int8_instruction = "";        // what the int8 dot peak (vnni) measured
  int threads = 1;
};

const Limits& limits() {
  static const Limits l = [] {
    Limits r;
    r.threads = omp_get_max_threads();
    r.bw1 = measure_read_bandwidth(1).value;
    r.bw2 = measure_read_bandwidth(2).value;
    r.bw_threads = r.threads == 1 ? r.bw1 : r.threads == 2 ? r.bw2 : measure_read_bandwidth(r.threads).value;
    r.fma = measure_f32_fma_peak(r.threads).value;
    const LimitProbe int8_peak = measure_int8_dot_peak(r.threads);
    r.vnni = int8_peak.value;
    r.int8_instruction = int8_peak.instruction;
    r.bf16 = measure_bf16_dot_peak(r.threads).value;
    return r;
  }();
  return l;
}

void BM_limit(benchmark::State& state, int which) {
  const Limits& l = limits();
  const double values[] = {l.bw1, l.bw2, l.fma, l.vnni, l.bf16};
  for (auto _ : state) benchmark::DoNotOptimize(values[which]);
  state.counters["value"] = values[which];
  state.counters["threads"] = which == 0 ? 1 : which == 1 ? 2 : l.threads;
  state.SetLabel(which == 3 ? std::string(isa_name(active_isa())) + " " + l.int8_instruction
                            : std::string(isa_name(active_isa())));
}

// The int8/int4 full-tile kernel's instruction mix run from L1 (kernels/machine_limits.h,
// QuantTileMix) against the int8 dot peak, both measured here in alternation (best of 3 each)
// so host drift between them cancels: the ceiling those instructions put on the kernel.
void BM_ceiling(benchmark::State& state, QuantTileMix mix) {
  const int threads = omp_get_max_threads();
  double peak = 0, ceiling = 0;
  for (auto _ : state)
    for (int r = 0; r < 3; ++r) {
      peak = std::max(peak, measure_int8_dot_peak(threads).value);
      ceiling = std::max(ceiling, measure_quant_tile_ceiling(threads, mix).value);
    }
  if (ceiling == 0) {
    state.SkipWithError("needs AVX-512 VNNI (the kernel whose mix this is)");
    return;
  }
  state.counters["GOPS"] = ceiling;
  state.counters["int8_peak"] = peak;
  state.counters["frac_of_peak"] = ceiling / peak;
  state.SetLabel(std::string(isa_name(active_isa())) + " threads=" + std::to_string(threads));
}

struct Shape {
  const char* name;
  int64_t n, k;
  std::vector<int64_t> ms;
  bool with_f32 = true;   // f32 copies of lm_head (2 GB each) are skipped
  bool in_cache = false;  // kernel-efficiency rows: one weight copy that stays in L2/L3
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {
      {"llama_q_o", 4096, 4096, {1, 16, 64, 616, 640}},
      {"llama_k_v", 1024, 4096, {1, 16, 64, 640}},
      {"llama_gate_up", 14336, 4096, {1, 16, 64, 640}},
      {"llama_down", 4096, 14336, {1, 16, 64, 640}},
      {"llama_lm_head", 128256, 4096, {1, 16}, false},
      {"clip_qkv", 3072, 1024, {577}},
      {"clip_fc1", 4096, 1024, {577}},
      {"clip_fc2", 1024, 4096, {577}},
      {"proj_fc1", 4096, 1024, {576}},
      {"proj_fc2", 4096, 4096, {576}},
      // Compute efficiency of the micro-kernels with weights resident in cache (one N-chunk
      // per thread): separates kernel quality from memory effects. Not a model shape. Each
      // row is 40 single calls; the _max row is the best call (robust on a shared machine).
      {"incache_512x4096", 512, 4096, {16, 256}, true, true},
  };
  return s;
}

// Deterministic pseudo-Gaussian bf16 source weights (sum of 4 uniforms, sd ~0.02).
std::vector<uint16_t> make_source(int64_t n, int64_t k) {
  std::vector<uint16_t> w(static_cast<size_t>(n * k));
#pragma omp parallel for
  for (int64_t r = 0; r < n; ++r) {
    uint64_t s = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1);
    for (int64_t c = 0; c < k; ++c) {
      float acc = 0;
      for (int i = 0; i < 4; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        acc += static_cast<float>(s >> 40) / static_cast<float>(1 << 24) - 0.5f;
      }
      w[r * k + c] = wf::f32_to_bf16(acc * 0.035f);
    }
  }
  return w;
}

// The last shape's source and the last (shape, format)'s packed copies are kept.
struct Cache {
  std::string source_key;
  std::vector<uint16_t> source;
  std::string packed_key;
  std::vector<PackedWeight> packed;
  std::string f32_key;
  std::vector<std::vector<float>> f32;  // unpacked copies for BLAS
} g_cache;

int copies_for(size_t bytes) {
  const size_t target = size_t{128} << 20;
  return static_cast<int>(std::clamp<size_t>((target + bytes - 1) / bytes, 1, 64));
}

const std::vector<uint16_t>& source_for(const Shape& s) {
  if (g_cache.source_key != s.name) {
    g_cache.source.clear();
    g_cache.source.shrink_to_fit();
    g_cache.source = make_source(s.n, s.k);
    g_cache.source_key = s.name;
  }
  return g_cache.source;
}

const std::vector<PackedWeight>& packed_for(const Shape& s, WeightFormat f) {
  const std::string key = std::string(s.name) + "/" + weight_format_name(f);
  if (g_cache.packed_key != key) {
    g_cache.packed.clear();
    const std::vector<uint16_t>& src = source_for(s);
    g_cache.packed.push_back(pack_weight(src.data(), SrcType::BF16, s.n, s.k, f));
    const size_t bytes = g_cache.packed[0].data.size();
    for (int c = 1; c < (s.in_cache ? 1 : copies_for(bytes)); ++c) {
      PackedWeight p;
      p.format = f;
      p.n = s.n;
      p.k = s.k;
      p.data.allocate(bytes);
      std::memcpy(p.data.data(), g_cache.packed[0].data.data(), bytes);
      g_cache.packed.push_back(std::move(p));
    }
    g_cache.packed_key = key;
  }
  return g_cache.packed;
}

std::vector<float> activations(int64_t m, int64_t k) {
  std::vector<float> x(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m * k; ++i) x[i] = std::sin(0.001f * static_cast<float>(i)) + 0.1f;
  return x;
}

// CPU seconds this process has used (all threads): on a loaded machine the wall time of a
// row includes the time its threads waited for a core, its CPU time does not.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void report(benchmark::State& state, double seconds, int64_t iters, int64_t m, const Shape& s,
            size_t weight_bytes, double compute_limit) {
  const double ops = 2.0 * m * s.n * s.k * iters / seconds / 1e9;
  const double bytes = (static_cast<double>(weight_bytes) + 4.0 * m * (s.n + s.k)) * iters / seconds / 1e9;
  const Limits& l = limits();
  const bool bandwidth_bound = m <= 16;
  // The read bandwidth this VM gets drifts with the host's other tenants (35-60 GB/s within
  // minutes here), so a bandwidth-bound row is compared with a probe taken right after its
  // timed loop, not with the one at the start of the run (kept as bw_at_start).
  const double limit = bandwidth_bound ? measure_read_bandwidth(l.threads).value : compute_limit;
  if (bandwidth_bound) state.counters["bw_at_start"] = l.bw_threads;
  state.counters["GOPS"] = ops;
  state.counters["GBps"] = bytes;
  state.counters["limit"] = limit;
  state.counters["frac_of_limit"] = limit > 0 ? (bandwidth_bound ? bytes : ops) / limit : 0;
  state.counters["tok_per_s"] = m * iters / seconds;
}

void BM_gemm(benchmark::State& state, const Shape* s, WeightFormat f, int64_t m) {
  const std::vector<PackedWeight>& w = packed_for(*s, f);
  const std::vector<float> x = activations(m, s->k);
  std::vector<float> y(static_cast<size_t>(m * s->n));
  gemm(x.data(), m, s->k, w[0], nullptr, y.data(), s->n);  // warm-up (page faults, scratch)
  int64_t iters = 0;
  size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    gemm(x.data(), m, s->k, w[i], nullptr, y.data(), s->n);
    i = (i + 1) % w.size();
    ++iters;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Limits& l = limits();
  const double peak = f == WeightFormat::F32 ? l.fma : f == WeightFormat::BF16 ? l.bf16 : l.vnni;
  report(state, sec, iters, m, *s, w[0].data.size(), peak);
  state.SetLabel(std::string(isa_name(active_isa())) + " copies=" + std::to_string(w.size()));
}

// Batched decode: M = 1..16 rows against one weight matrix (issue 16). The row is bound by
// the slower of two limits measured in this run: streaming the packed weights at the read
// bandwidth probed right after the row, and 2*M*N*K operations at the vpdpbusd peak.
// frac_of_bound = max(t_bandwidth, t_compute) / t (1.0 = at the binding limit). On a loaded
// machine compare rows by cpu_ms_per_call (per-thread CPU time): the wall-time figures and the
// bandwidth probe both include the time the threads waited for a core.
void BM_batched_decode(benchmark::State& state, const Shape* s, WeightFormat f, int64_t m) {
  const std::vector<PackedWeight>& w = packed_for(*s, f);
  const std::vector<float> x = activations(m, s->k);
  std::vector<float> y(static_cast<size_t>(m * s->n));
  gemm(x.data(), m, s->k, w[0], nullptr, y.data(), s->n);
  int64_t iters = 0;
  size_t i = 0;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    gemm(x.data(), m, s->k, w[i], nullptr, y.data(), s->n);
    i = (i + 1) % w.size();
    ++iters;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  // Per-thread CPU seconds per call: the time the row would take with the cores to itself
  // (OpenMP's idle threads may spin, which only makes this figure pessimistic).
  const double cpu_sec = (process_cpu_seconds() - cpu0) / iters / omp_get_max_threads();
  const Limits& l = limits();
  const double bw = measure_read_bandwidth(l.threads).value;
  const double bytes = static_cast<double>(w[0].data.size()) + 4.0 * m * (s->n + s->k);
  const double ops = 2.0 * m * s->n * s->k;
  const double t_bw = bytes / (bw * 1e9), t_compute = l.vnni > 0 ? ops / (l.vnni * 1e9) : 0;
  state.counters["GOPS"] = ops / sec / 1e9;
  state.counters["GBps"] = bytes / sec / 1e9;
  state.counters["bw_limit"] = bw;
  state.counters["int8_peak"] = l.vnni;
  state.counters["compute_bound"] = t_compute > t_bw ? 1 : 0;
  state.counters["frac_of_bound"] = std::max(t_bw, t_compute) / sec;
  state.counters["cpu_ms_per_call"] = cpu_sec * 1e3;
  state.counters["tok_per_s"] = m / sec;
  state.SetLabel(std::string(isa_name(active_isa())) + " copies=" + std::to_string(w.size()));
}

// Prefill (M = 616: the 576 image rows plus 40 text tokens of a LLaVA prompt) against the
// int8 peak, and the cost of the activation quantization alone: the same X through a GEMM
// with a single 16-row weight panel (N = 16), whose dot products are 1/256 of a 4096-column
// row's, so its time is the per-call quantize + pack of X[616, K] (prefill_xquant rows).
void BM_prefill(benchmark::State& state, const Shape* s, WeightFormat f, int64_t m, bool quant_only) {
  const Shape one_panel{"one_panel", 16, s->k, {m}, false, true};
  const Shape& shape = quant_only ? one_panel : *s;
  const std::vector<uint16_t> src = quant_only ? make_source(16, s->k) : std::vector<uint16_t>{};
  std::vector<PackedWeight> local;
  if (quant_only) local.push_back(pack_weight(src.data(), SrcType::BF16, 16, s->k, f));
  const std::vector<PackedWeight>& w = quant_only ? local : packed_for(*s, f);
  const std::vector<float> x = activations(m, s->k);
  std::vector<float> y(static_cast<size_t>(m * shape.n));
  gemm(x.data(), m, s->k, w[0], nullptr, y.data(), shape.n);
  int64_t iters = 0;
  size_t i = 0;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    gemm(x.data(), m, s->k, w[i], nullptr, y.data(), shape.n);
    i = (i + 1) % w.size();
    ++iters;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  // Per-thread CPU seconds per call: the time the row would take with the cores to itself
  // (OpenMP's idle threads may spin, which only makes this figure pessimistic).
  const double cpu_sec = (process_cpu_seconds() - cpu0) / iters / omp_get_max_threads();
  const double ops = 2.0 * m * shape.n * s->k;
  state.counters["GOPS"] = ops / sec / 1e9;
  state.counters["int8_peak"] = limits().vnni;
  state.counters["frac_of_peak"] = limits().vnni > 0 ? ops / sec / 1e9 / limits().vnni : 0;
  state.counters["frac_of_peak_cpu"] = limits().vnni > 0 ? ops / cpu_sec / 1e9 / limits().vnni : 0;
  state.counters["ms_per_call"] = sec * 1e3;
  state.counters["cpu_ms_per_call"] = cpu_sec * 1e3;
  state.SetLabel(std::string(isa_name(active_isa())) + " copies=" + std::to_string(w.size()));
}

#ifdef RECAP_HAVE_BLAS
void BM_blas(benchmark::State& state, const Shape* s, int64_t m) {
  if (g_cache.f32_key != s->name) {
    g_cache.f32.clear();
    const std::vector<uint16_t>& src = source_for(*s);
    const size_t bytes = src.size() * 4;
    for (int c = 0; c < (s->in_cache ? 1 : copies_for(bytes)); ++c) {
      std::vector<float> w(src.size());
      for (size_t j = 0; j < src.size(); ++j) w[j] = wf::bf16_to_f32(src[j]);
      g_cache.f32.push_back(std::move(w));
    }
    g_cache.f32_key = s->name;
  }
  const auto& w = g_cache.f32;
  const std::vector<float> x = activations(m, s->k);
  std::vector<float> y(static_cast<size_t>(m * s->n));
  auto call = [&](const std::vector<float>& wi) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(s->n),
                static_cast<int>(s->k), 1.f, x.data(), static_cast<int>(s->k), wi.data(),
                static_cast<int>(s->k), 0.f, y.data(), static_cast<int>(s->n));
  };
  call(w[0]);
  int64_t iters = 0;
  size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    call(w[i]);
    i = (i + 1) % w.size();
    ++iters;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report(state, sec, iters, m, *s, w[0].size() * 4, limits().fma);
  state.SetLabel("openblas copies=" + std::to_string(w.size()));
}
#endif

// With --benchmark_repetitions=R every row also reports _min and _max over the repetitions:
// on a shared machine the best repetition (min time, max GOPS / GBps / frac_of_limit) is the
// closest to what the kernel does when it has the cores to itself.
void with_stats(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond);
  b->ComputeStatistics("min",
                       [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
  b->ComputeStatistics("max",
                       [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

int register_all() {
  const char* limit_names[] = {"limits/mem_read_gbps/threads:1", "limits/mem_read_gbps/threads:2",
                               "limits/f32_fma_gflops", "limits/int8_dot_gops",
                               "limits/bf16_vdpbf16ps_gflops"};
  for (int i = 0; i < 5; ++i)
    benchmark::RegisterBenchmark(limit_names[i], BM_limit, i)->Iterations(1)->UseRealTime();
  const std::pair<const char*, QuantTileMix> mixes[] = {
      {"ceiling/int8_tile_dots", QuantTileMix::Int8Dots},
      {"ceiling/int8_tile_groups", QuantTileMix::Int8Groups},
      {"ceiling/int4_tile_dots", QuantTileMix::Int4Dots},
      {"ceiling/int4_tile_groups", QuantTileMix::Int4Groups}};
  for (const auto& [name, mix] : mixes)
    benchmark::RegisterBenchmark(name, BM_ceiling, mix)->Iterations(1)->UseRealTime();
  const WeightFormat formats[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8,
                                  WeightFormat::Int4};
  for (const Shape& s : shapes()) {
    for (WeightFormat f : formats) {
      if (f == WeightFormat::F32 && !s.with_f32) continue;
      for (int64_t m : s.ms) {
        if (m == 616 && f != WeightFormat::F32) continue;  // the OpenBLAS comparison point
        const std::string name =
            std::string("gemm/") + weight_format_name(f) + "/" + s.name + "/M:" + std::to_string(m);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_gemm, &s, f, m);
        with_stats(b);
        if (s.in_cache) b->Iterations(1)->Repetitions(40)->ReportAggregatesOnly(true);
      }
    }
#ifdef RECAP_HAVE_BLAS
    if (s.with_f32)
      for (int64_t m : s.ms) {
        const std::string name = std::string("blas_sgemm/") + s.name + "/M:" + std::to_string(m);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_blas, &s, m);
        with_stats(b);
        if (s.in_cache) b->Iterations(1)->Repetitions(40)->ReportAggregatesOnly(true);
      }
#endif
  }
  // Issue 16: batched decode M = 1..16 and pp616 prefill, int8 / int4, LLaMA-3-8B shapes.
  const WeightFormat quant_formats[] = {WeightFormat::Int8, WeightFormat::Int4};
  for (const Shape& s : shapes()) {
    if (std::string(s.name).rfind("llama_", 0) != 0 || s.n > 16384) continue;
    for (WeightFormat f : quant_formats) {
      const std::string tail = std::string(weight_format_name(f)) + "/" + s.name;
      for (int64_t m : {1, 4, 8, 16})
        with_stats(benchmark::RegisterBenchmark(
            ("batched_decode/" + tail + "/M:" + std::to_string(m)).c_str(), BM_batched_decode, &s, f, m));
      with_stats(benchmark::RegisterBenchmark(("prefill/" + tail + "/M:616").c_str(), BM_prefill, &s, f,
                                              int64_t{616}, false));
      with_stats(benchmark::RegisterBenchmark(("prefill_xquant/" + tail + "/M:616").c_str(), BM_prefill, &s,
                                              f, int64_t{616}, true));
    }
  }
  return 0;
}
const int g_registered = register_all();

}  // namespace

BENCHMARK_MAIN();
