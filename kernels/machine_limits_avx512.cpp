// AVX-512 loops of the machine-limit probes (kernels/machine_limits.h).
#include <immintrin.h>

#include "kernels/machine_limits.h"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace recap::kernels::avx512 {

// Four concurrent sequential streams (the quarters of the buffer), as a GEMV reads several
// weight panels at once: more lines in flight than one stream's prefetcher keeps.
double read_pass(const void* data, long bytes) {
  const long lines = bytes / 64 / 4;
  const __m512i* p0 = static_cast<const __m512i*>(data);
  const __m512i* p1 = p0 + lines;
  const __m512i* p2 = p1 + lines;
  const __m512i* p3 = p2 + lines;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (long i = 0; i < lines; ++i) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p0 + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p1 + i));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p2 + i));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p3 + i));
  }
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
  return static_cast<double>(_mm512_reduce_add_epi64(s));
}

// 12 independent accumulator chains hide the instruction latency (4-5 cycles) on 2 pipes.
double f32_fma_loop(long iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(0.001f * j);
  const __m512 a = _mm512_set1_ps(0.9999f), b = _mm512_set1_ps(0.0001f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace recap::kernels::avx512
