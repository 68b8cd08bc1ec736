// Probes of this machine's throughput limits, measured at run time so benchmark rows can
// report their fraction of the limit that bounds them (docs/PERFORMANCE.md):
//   memory read bandwidth (streaming a buffer far larger than the caches),
//   f32 FMA peak (vfmadd231ps), int8 dot peak (vpdpbusd, or the AVX2 vpmaddubsw triple) and bf16 dot peak
//   (vdpbf16ps).
// Each probe runs `threads` OpenMP threads; the compute peaks return the best of many short
// repetitions, the bandwidth the median of 21 passes (see measure_read_bandwidth).
// Operation counts: one multiply-add = 2 operations (same convention as GEMM's 2*M*N*K).
#pragma once

namespace recap::kernels {

struct LimitProbe {
  double value = 0;         // GB/s, GFLOP/s or GOP/s; 0 when the instruction is unavailable
  const char* instruction;  // what was measured, e.g. "vpdpbusd zmm"
};

// Read bandwidth in GB/s (1e9 bytes/s) over a `megabytes` buffer split among the threads,
// each thread reading its slice as four concurrent sequential streams.
LimitProbe measure_read_bandwidth(int threads, int megabytes = 256);
// Peak f32 multiply-add throughput in GFLOP/s (widest FMA the CPU runs: zmm, else ymm).
LimitProbe measure_f32_fma_peak(int threads);
// Peak int8 dot-product throughput in GOP/s of the instructions the active int8/int4 GEMM
// uses: AVX-512 VNNI vpdpbusd zmm when the active choice has VNNI, else (AVX2, or AVX-512
// without VNNI, whose int8/int4 GEMM is the AVX2 one) vpmaddubsw + vpmaddwd + vpaddd ymm;
// 0 on the ref ISA.
LimitProbe measure_int8_dot_peak(int threads);
// Peak bf16 dot-product throughput in GFLOP/s (AVX-512 BF16 vdpbf16ps zmm); 0 if absent.
LimitProbe measure_bf16_dot_peak(int threads);

// The instruction mix of the AVX-512 VNNI int8/int4 full-tile GEMM (gemm_avx512vnni.cpp) run
// with all operands at fixed addresses in L1: the rate that kernel's instructions alone allow
// on this core, as a fraction of the int8 dot peak above (docs/PERFORMANCE.md, "ceiling").
//   Int8Dots    per unit: 3 weight loads, 4 broadcasts, 12 vpdpbusd
//   Int8Groups  + per 16-unit group: the 12 sums' correction start and float step
//               (vcvtdq2ps + vfmadd231ps by the group scale), as the numerics contract requires
//   Int4Dots    per 2 units: 3 lines, 6 nibble extractions (and/shift/and), 8 broadcasts, 24 vpdpbusd
//   Int4Groups  + per 8-unit group: the same start and float step
enum class QuantTileMix { Int8Dots, Int8Groups, Int4Dots, Int4Groups };
// GOP/s of `mix` on `threads` threads (best of many short repetitions, as the peaks); value 0
// without AVX-512 VNNI.
LimitProbe measure_quant_tile_ceiling(int threads, QuantTileMix mix);

namespace avx512 {
double read_pass(const void* data, long bytes);  // streams bytes, returns a checksum
double f32_fma_loop(long iters);                 // 12 independent chains x iters vfmadd231ps zmm
}  // namespace avx512
namespace avx512vnni {
double int8_dot_loop(long iters);                      // 12 x iters vpdpbusd zmm
double quant_tile_loop(long iters, QuantTileMix mix);  // 192 x iters vpdpbusd zmm in `mix`
}  // namespace avx512vnni
namespace avx512bf16 {
double bf16_dot_loop(long iters);  // 12 x iters vdpbf16ps zmm
}
namespace avx2 {
double read_pass(const void* data, long bytes);
double f32_fma_loop(long iters);   // 12 x iters vfmadd231ps ymm
double int8_dot_loop(long iters);  // 6 x iters vpmaddubsw + vpmaddwd + vpaddd ymm
}  // namespace avx2

}  // namespace recap::kernels
