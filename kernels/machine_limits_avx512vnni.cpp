// AVX-512 VNNI loop of the machine-limit probes (kernels/machine_limits.h).
#include <immintrin.h>

#include "kernels/machine_limits.h"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace recap::kernels::avx512vnni {

double int8_dot_loop(long iters) {
  __m512i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  return static_cast<double>(_mm512_reduce_add_epi32(s));
}

}  // namespace recap::kernels::avx512vnni
