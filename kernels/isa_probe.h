// RECAP_COMPILED_FEATURE_SET: the kernels::FeatureSet of extensions the compiler may use in
// the translation unit being compiled, from its predefined macros. A macro, not a function:
// its value differs per file (per ISA flags), which an inline function must not.
// Only kernels/isa.cpp and kernels/isa_probe_*.cpp include this.
#pragma once
#include "kernels/isa.h"

// An extension the flags enabled but Feature does not model could be used by the compiler
// without any runtime check: refuse to build rather than dispatch unsafely.
#if defined(__AVXVNNI__) || defined(__AVX512FP16__) || defined(__AVX512VP2INTERSECT__) ||                  \
    defined(__GFNI__) || defined(__VAES__) || defined(__VPCLMULQDQ__) || defined(__AMX_TILE__) ||          \
    defined(__AVX512ER__) || defined(__AVX512PF__) || defined(__AES__) || defined(__PCLMUL__) ||           \
    defined(__SHA__) || defined(__ADX__) || defined(__RDRND__) || defined(__RDSEED__) ||                   \
    defined(__AVXIFMA__) || defined(__AVXVNNIINT8__) || defined(__AVXNECONVERT__) || defined(__SSE4A__) || \
    defined(__FMA4__) || defined(__XOP__) || defined(__TBM__)
#error "ISA flags enable an extension kernels/isa.h does not model: add it to Feature, detect() and here"
#endif

#define RECAP_FEATURE_IF(defined_, f) \
  ((defined_) ? ::recap::kernels::feature_bit(::recap::kernels::Feature::f) : 0)

#ifdef __SSE3__
#define RECAP_HAS_SSE3 1
#else
#define RECAP_HAS_SSE3 0
#endif
#ifdef __SSSE3__
#define RECAP_HAS_SSSE3 1
#else
#define RECAP_HAS_SSSE3 0
#endif
#ifdef __SSE4_1__
#define RECAP_HAS_SSE41 1
#else
#define RECAP_HAS_SSE41 0
#endif
#if defined(__SSE4_2__) || defined(__CRC32__)
#define RECAP_HAS_SSE42 1
#else
#define RECAP_HAS_SSE42 0
#endif
#ifdef __POPCNT__
#define RECAP_HAS_POPCNT 1
#else
#define RECAP_HAS_POPCNT 0
#endif
#ifdef __XSAVE__
#define RECAP_HAS_XSAVE 1
#else
#define RECAP_HAS_XSAVE 0
#endif
#ifdef __AVX__
#define RECAP_HAS_AVX 1
#else
#define RECAP_HAS_AVX 0
#endif
#ifdef __AVX2__
#define RECAP_HAS_AVX2 1
#else
#define RECAP_HAS_AVX2 0
#endif
#ifdef __FMA__
#define RECAP_HAS_FMA 1
#else
#define RECAP_HAS_FMA 0
#endif
#ifdef __F16C__
#define RECAP_HAS_F16C 1
#else
#define RECAP_HAS_F16C 0
#endif
#ifdef __BMI__
#define RECAP_HAS_BMI1 1
#else
#define RECAP_HAS_BMI1 0
#endif
#ifdef __BMI2__
#define RECAP_HAS_BMI2 1
#else
#define RECAP_HAS_BMI2 0
#endif
#ifdef __LZCNT__
#define RECAP_HAS_LZCNT 1
#else
#define RECAP_HAS_LZCNT 0
#endif
#ifdef __MOVBE__
#define RECAP_HAS_MOVBE 1
#else
#define RECAP_HAS_MOVBE 0
#endif
#ifdef __AVX512F__
#define RECAP_HAS_AVX512F 1
#else
#define RECAP_HAS_AVX512F 0
#endif
#ifdef __AVX512BW__
#define RECAP_HAS_AVX512BW 1
#else
#define RECAP_HAS_AVX512BW 0
#endif
#ifdef __AVX512VL__
#define RECAP_HAS_AVX512VL 1
#else
#define RECAP_HAS_AVX512VL 0
#endif
#ifdef __AVX512DQ__
#define RECAP_HAS_AVX512DQ 1
#else
#define RECAP_HAS_AVX512DQ 0
#endif
#ifdef __AVX512CD__
#define RECAP_HAS_AVX512CD 1
#else
#define RECAP_HAS_AVX512CD 0
#endif
#ifdef __AVX512VNNI__
#define RECAP_HAS_AVX512VNNI 1
#else
#define RECAP_HAS_AVX512VNNI 0
#endif
#ifdef __AVX512BF16__
#define RECAP_HAS_AVX512BF16 1
#else
#define RECAP_HAS_AVX512BF16 0
#endif
#ifdef __AVX512VBMI__
#define RECAP_HAS_AVX512VBMI 1
#else
#define RECAP_HAS_AVX512VBMI 0
#endif
#ifdef __AVX512VBMI2__
#define RECAP_HAS_AVX512VBMI2 1
#else
#define RECAP_HAS_AVX512VBMI2 0
#endif
#ifdef __AVX512IFMA__
#define RECAP_HAS_AVX512IFMA 1
#else
#define RECAP_HAS_AVX512IFMA 0
#endif
#ifdef __AVX512BITALG__
#define RECAP_HAS_AVX512BITALG 1
#else
#define RECAP_HAS_AVX512BITALG 0
#endif
#ifdef __AVX512VPOPCNTDQ__
#define RECAP_HAS_AVX512VPOPCNTDQ 1
#else
#define RECAP_HAS_AVX512VPOPCNTDQ 0
#endif

#define RECAP_COMPILED_FEATURE_SET                                                                           \
  (RECAP_FEATURE_IF(RECAP_HAS_SSE3, Sse3) | RECAP_FEATURE_IF(RECAP_HAS_SSSE3, Ssse3) |                       \
   RECAP_FEATURE_IF(RECAP_HAS_SSE41, Sse41) | RECAP_FEATURE_IF(RECAP_HAS_SSE42, Sse42) |                     \
   RECAP_FEATURE_IF(RECAP_HAS_POPCNT, Popcnt) | RECAP_FEATURE_IF(RECAP_HAS_XSAVE, Xsave) |                   \
   RECAP_FEATURE_IF(RECAP_HAS_AVX, Avx) | RECAP_FEATURE_IF(RECAP_HAS_AVX2, Avx2) |                           \
   RECAP_FEATURE_IF(RECAP_HAS_FMA, Fma) | RECAP_FEATURE_IF(RECAP_HAS_F16C, F16c) |                           \
   RECAP_FEATURE_IF(RECAP_HAS_BMI1, Bmi1) | RECAP_FEATURE_IF(RECAP_HAS_BMI2, Bmi2) |                         \
   RECAP_FEATURE_IF(RECAP_HAS_LZCNT, Lzcnt) | RECAP_FEATURE_IF(RECAP_HAS_MOVBE, Movbe) |                     \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512F, Avx512F) | RECAP_FEATURE_IF(RECAP_HAS_AVX512BW, Avx512Bw) |           \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512VL, Avx512Vl) | RECAP_FEATURE_IF(RECAP_HAS_AVX512DQ, Avx512Dq) |         \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512CD, Avx512Cd) | RECAP_FEATURE_IF(RECAP_HAS_AVX512VNNI, Avx512Vnni) |     \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512BF16, Avx512Bf16) | RECAP_FEATURE_IF(RECAP_HAS_AVX512VBMI, Avx512Vbmi) | \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512VBMI2, Avx512Vbmi2) |                                                    \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512IFMA, Avx512Ifma) |                                                      \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512BITALG, Avx512Bitalg) |                                                  \
   RECAP_FEATURE_IF(RECAP_HAS_AVX512VPOPCNTDQ, Avx512Vpopcntdq))
