// Machine-limit probes: timing, threading and ISA selection around the per-ISA loops.
#include "kernels/machine_limits.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/aligned_buffer.h"
#include "kernels/isa.h"

namespace recap::kernels {

// Keeps the probe loops' results alive (external linkage: the stores cannot be dropped).
double g_limits_sink = 0;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Portable read loop (ref ISA).
double read_pass_ref(const void* data, long bytes) {
  const uint64_t* p = static_cast<const uint64_t*>(data);
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const long words = bytes / 8;
  for (long i = 0; i + 4 <= words; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  return static_cast<double>(s0 + s1 + s2 + s3);
}

// Runs body(iters) on `threads` threads in lock step; returns the best rate of `reps`
// repetitions as (work per iteration * iters * threads) / wall seconds.
template <class Body>
double best_rate(int threads, long iters, double work_per_iter, int reps, Body body) {
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
#pragma omp master
      t0 = now();
#pragma omp barrier
      const double v = body(iters);
#pragma omp atomic
      g_limits_sink += v;
#pragma omp barrier
#pragma omp master
      t1 = now();
    }
    best = std::max(best, work_per_iter * static_cast<double>(iters) * threads / (t1 - t0));
  }
  return best;
}

}  // namespace

LimitProbe measure_read_bandwidth(int threads, int megabytes) {
  threads = std::max(1, threads);
  const long total = static_cast<long>(megabytes) << 20;
  const long slice = total / threads / 4096 * 4096;
  AlignedBuffer buf(static_cast<size_t>(slice * threads));
  uint8_t* base = buf.data();
  // First touch by the thread that reads the slice (page placement), non-zero content.
#pragma omp parallel num_threads(threads)
  std::memset(base + omp_get_thread_num() * slice, 1 + omp_get_thread_num(), static_cast<size_t>(slice));
  const Isa isa = active_isa();
  double (*pass)(const void*, long) = isa == Isa::Avx512 ? &avx512::read_pass
                                      : isa == Isa::Avx2 ? &avx2::read_pass
                                                         : &read_pass_ref;
  // The median of 21 passes, not the best: on a shared host single passes swing by +-30%, and
  // the GEMV rows it is compared with are averages over many calls, not their best call.
  std::vector<double> rates;
  for (int r = 0; r < 21; ++r) {
    double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
#pragma omp master
      t0 = now();
#pragma omp barrier
      const double v = pass(base + omp_get_thread_num() * slice, slice);
#pragma omp atomic
      g_limits_sink += v;
#pragma omp barrier
#pragma omp master
      t1 = now();
    }
    rates.push_back(static_cast<double>(slice) * threads / (t1 - t0) / 1e9);
  }
  std::nth_element(rates.begin(), rates.begin() + 10, rates.end());
  return {rates[10], isa == Isa::Avx512 ? "vmovdqa64 zmm loads"
                     : isa == Isa::Avx2 ? "vmovdqa ymm loads"
                                        : "64-bit loads"};
}

LimitProbe measure_f32_fma_peak(int threads) {
  const long iters = 200'000;  // ~1.5 ms per repetition, best of 60: short enough to run unpreempted
  switch (active_isa()) {
    case Isa::Avx512:
      return {best_rate(threads, iters, 12.0 * 32, 60, avx512::f32_fma_loop) / 1e9, "vfmadd231ps zmm"};
    case Isa::Avx2:
      return {best_rate(threads, iters, 12.0 * 16, 60, avx2::f32_fma_loop) / 1e9, "vfmadd231ps ymm"};
    case Isa::Ref:
      break;
  }
  return {0, "none (ref ISA)"};
}

LimitProbe measure_int8_dot_peak(int threads) {
  if (active_choice().avx512vnni)
    return {best_rate(threads, 200'000, 12.0 * 128, 60, avx512vnni::int8_dot_loop) / 1e9, "vpdpbusd zmm"};
  // Without VNNI the int8/int4 GEMM is the AVX2 one: its peak is the AVX2 triple's.
  if (active_isa() != Isa::Ref)
    return {best_rate(threads, 200'000, 6.0 * 64, 60, avx2::int8_dot_loop) / 1e9,
            "vpmaddubsw+vpmaddwd+vpaddd ymm"};
  return {0, "none (ref ISA)"};
}

LimitProbe measure_quant_tile_ceiling(int threads, QuantTileMix mix) {
  if (!active_choice().avx512vnni) return {0, "vpdpbusd unavailable"};
  // 192 vpdpbusd per iteration: as many per repetition as the int8 dot peak's (2.4 M).
  const double rate = best_rate(threads, 12'500, 192.0 * 128, 60,
                                [mix](long iters) { return avx512vnni::quant_tile_loop(iters, mix); });
  return {rate / 1e9, "vpdpbusd zmm (full-tile mix)"};
}

LimitProbe measure_bf16_dot_peak(int threads) {
  if (!active_choice().avx512bf16) return {0, "vdpbf16ps unavailable"};
  return {best_rate(threads, 200'000, 12.0 * 64, 60, avx512bf16::bf16_dot_loop) / 1e9, "vdpbf16ps zmm"};
}

}  // namespace recap::kernels
