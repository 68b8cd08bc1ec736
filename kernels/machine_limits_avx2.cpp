// AVX2 loops of the machine-limit probes (kernels/machine_limits.h), for CPUs without AVX-512.
#include <immintrin.h>

#include <cstdint>

#include "kernels/machine_limits.h"

namespace recap::kernels::avx2 {

// Four concurrent sequential streams (the quarters of the buffer), as a GEMV reads several
// weight panels at once: more lines in flight than one stream's prefetcher keeps.
double read_pass(const void* data, long bytes) {
  const long lines = bytes / 32 / 4;
  const __m256i* p0 = static_cast<const __m256i*>(data);
  const __m256i* p1 = p0 + lines;
  const __m256i* p2 = p1 + lines;
  const __m256i* p3 = p2 + lines;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (long i = 0; i < lines; ++i) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(p0 + i));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(p1 + i));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(p2 + i));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(p3 + i));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) long long v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return static_cast<double>(v[0] + v[1] + v[2] + v[3]);
}

double f32_fma_loop(long iters) {
  __m256 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(0.001f * j);
  const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(0.0001f);
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  __m256 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

// The AVX2 int8 dot peak: the triple that is AVX2's vpdpbusd, acc += vpmaddwd(vpmaddubsw(u8,
// s8), ones) (16 u8 x s8 pair products summed to int16, pairs of those to int32, accumulated),
// 32 multiply-adds per ymm triple, the same instructions in the same dependency shape as the
// inner loop of the AVX2 int8/int4 GEMM (kernels/gemm_avx2.cpp): 3 rows x 2 weight vectors,
// six independent int32 accumulators whose chains carry only the vpaddd, the multiplies
// depending on operands that change every iteration (an empty asm hides them from the
// compiler, which would otherwise hoist the loop-invariant products). Not counted: the extra
// operations s8 x s8 needs on AVX2 (vpsignb/vpabsb of the sign trick) or int4 needs (nibble
// unpacking), which the kernels pay on top; int4's int16 partial sums skip most vpmaddwd and
// can therefore run above this "peak". 6 x 32 multiply-adds per iteration.
double int8_dot_loop(long iters) {
  __m256i acc[6];
  for (int j = 0; j < 6; ++j) acc[j] = _mm256_set1_epi32(j);
  __m256i w0 = _mm256_set1_epi8(3), w1 = _mm256_set1_epi8(5);
  __m256i a0 = _mm256_set1_epi8(-2), a1 = _mm256_set1_epi8(7), a2 = _mm256_set1_epi8(-9);
  const __m256i ones = _mm256_set1_epi16(1);
  for (long i = 0; i < iters; ++i) {
    __asm__("" : "+x"(w0), "+x"(w1), "+x"(a0), "+x"(a1), "+x"(a2));
    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(_mm256_maddubs_epi16(w0, a0), ones));
    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(_mm256_maddubs_epi16(w1, a0), ones));
    acc[2] = _mm256_add_epi32(acc[2], _mm256_madd_epi16(_mm256_maddubs_epi16(w0, a1), ones));
    acc[3] = _mm256_add_epi32(acc[3], _mm256_madd_epi16(_mm256_maddubs_epi16(w1, a1), ones));
    acc[4] = _mm256_add_epi32(acc[4], _mm256_madd_epi16(_mm256_maddubs_epi16(w0, a2), ones));
    acc[5] = _mm256_add_epi32(acc[5], _mm256_madd_epi16(_mm256_maddubs_epi16(w1, a2), ones));
  }
  __m256i s = acc[0];
  for (int j = 1; j < 6; ++j) s = _mm256_add_epi32(s, acc[j]);
  alignas(32) int32_t v[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return static_cast<double>(v[0]) + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

}  // namespace recap::kernels::avx2
