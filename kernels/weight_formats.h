// Packed byte layouts of the GEMM weight formats, and the scalar helpers (f16/bf16
// conversion, quantization of one group) that every ISA shares.
//
// A logical weight W is [n, k] (PyTorch Linear: out x in). Every format cuts W into
// PANELS of kPanelRows = 16 consecutive rows (the last panel is zero-padded to 16 rows) and
// interleaves the 16 rows of a panel along k, so that one 64-byte load gives the SIMD
// kernels 16 output columns' worth of weights for a few consecutive k. The layout depends
// only on (format, n, k): packed weights are cached on disk and read by every ISA.
//
// Notation: P = ceil(n / 16) panels; row r lives in panel r / 16, lane r % 16.
//
// F32   (Kp = k)                       per panel: Kp * 64 bytes
//   panel p:  k=0: [w(16p+0,0) w(16p+1,0) ... w(16p+15,0)]   16 x f32 = 64 B (one zmm)
//             k=1: [w(16p+0,1) ...                 ...    ]
//             ...
//
// BF16  (Kp = round_up(k, 2), bf16 round-to-nearest-even)    per panel: Kp * 32 bytes
//   panel p:  pair j: [w(r0,2j) w(r0,2j+1) | w(r1,2j) w(r1,2j+1) | ... | w(r15,2j) w(r15,2j+1)]
//             = 32 x bf16 = 64 B: exactly the operand layout of vdpbf16ps (16 lanes x 2 k).
//
// INT8  (group G8 = 64 along k, Kp = round_up(k, 64), symmetric, q in [-127, 127])
//   region A (data, P * Kp * 16 bytes): stored byte = q + 128 (u8, 128 means 0)
//     panel p:  quad j: [r0: k4j..k4j+3 | r1: k4j..k4j+3 | ... | r15: ...]  16 x 4 B = 64 B
//               (the u8 operand layout of vpdpbusd: lane r gets 4 consecutive k)
//   region B (scales, P * (Kp/64) * 32 bytes), right after A:
//     panel p:  group g: [s(r0,g) s(r1,g) ... s(r15,g)]  16 x f16 = 32 B
//   w(r, k) ~= f32(s(r, k/64)) * q(r, k)
//
// INT4  (group G4 = 32 along k, Kp = round_up(k, 32), q in [-8, 7])
//   region A (data, P * Kp * 8 bytes): nibble = q + 8 (0..15, 8 means 0)
//     panel p:  octet j (k = 8j .. 8j+7): 64 B; byte (4 * lane + i), i < 4, holds
//                 low nibble:  k = 8j + i        high nibble: k = 8j + 4 + i
//               so (byte & 15) is the vpdpbusd quad k8j..8j+3 and (byte >> 4) the next quad.
//   region B (scales, P * (Kp/32) * 32 bytes): as INT8, one f16 per (row, group of 32).
//   w(r, k) ~= f32(s(r, k/32)) * q(r, k)
//
// Padding (rows >= n, k >= k): weight 0 (stored 128 / nibble 8), scale 0. Region offsets are
// multiples of 64 bytes when the buffer is 64-aligned.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/gemm.h"

namespace recap::kernels::wf {

inline constexpr int64_t kPanelRows = 16;
inline constexpr int64_t kInt8Group = 64;
inline constexpr int64_t kInt4Group = 32;
inline constexpr int32_t kInt8ZeroPoint = 128;  // stored u8 = q + 128
inline constexpr int32_t kInt4ZeroPoint = 8;    // stored nibble = q + 8

inline int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}
inline int64_t num_panels(int64_t n) {
  return (n + kPanelRows - 1) / kPanelRows;
}

// Padded k of a format (the k extent of its packed panels).
inline int64_t padded_k(WeightFormat f, int64_t k) {
  switch (f) {
    case WeightFormat::F32:
      return k;
    case WeightFormat::BF16:
      return round_up(k, 2);
    case WeightFormat::Int8:
      return round_up(k, kInt8Group);
    case WeightFormat::Int4:
      return round_up(k, kInt4Group);
  }
  return k;
}
inline int64_t group_size(WeightFormat f) {
  return f == WeightFormat::Int8 ? kInt8Group : f == WeightFormat::Int4 ? kInt4Group : 0;
}
// Bytes of one panel's data region (region A).
inline int64_t panel_data_bytes(WeightFormat f, int64_t k) {
  const int64_t kp = padded_k(f, k);
  switch (f) {
    case WeightFormat::F32:
      return kp * kPanelRows * 4;
    case WeightFormat::BF16:
      return kp * kPanelRows * 2;
    case WeightFormat::Int8:
      return kp * kPanelRows;
    case WeightFormat::Int4:
      return kp * kPanelRows / 2;
  }
  return 0;
}
// Bytes of one panel's scales (region B): 16 x f16 per group.
inline int64_t panel_scale_bytes(WeightFormat f, int64_t k) {
  const int64_t g = group_size(f);
  return g == 0 ? 0 : padded_k(f, k) / g * kPanelRows * 2;
}
// Offset of region B (scales) from the start of the packed buffer.
inline int64_t scales_offset(WeightFormat f, int64_t n, int64_t k) {
  return num_panels(n) * panel_data_bytes(f, k);
}

// ---- exact conversions -------------------------------------------------------------------
inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even; NaN stays a (quiet) NaN, overflow rounds to infinity as IEEE does.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t lsb = (bits >> 16) & 1u;
  bits += 0x7fffu + lsb;
  return static_cast<uint16_t>(bits >> 16);
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise (exact in f32)
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even f32 -> f16 (used for quantization scales only).
inline uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t absb = bits & 0x7fffffffu;
  if (absb >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absb > 0x7f800000u ? 0x200u : 0u));
  if (absb >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504 -> inf
  if (absb < 0x33000001u) return static_cast<uint16_t>(sign);             // below half the min subnormal
  int32_t exp = static_cast<int32_t>(absb >> 23) - 127 + 15;
  uint32_t mant = (absb & 0x7fffffu) | 0x800000u;
  uint32_t shift = 13;
  if (exp <= 0) {  // subnormal result
    shift = static_cast<uint32_t>(14 - exp);
    exp = 0;
  }
  const uint32_t rounded_off = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  uint32_t m = mant >> shift;
  if (rounded_off > half || (rounded_off == half && (m & 1u))) ++m;
  // m may carry into the exponent: adding works because the fields are adjacent.
  uint32_t out = exp == 0 ? m : ((static_cast<uint32_t>(exp) << 10) + (m - 0x400u));
  return static_cast<uint16_t>(sign | out);
}

// `src` may be unaligned: safetensors places tensors at arbitrary byte offsets after the
// header, so elements are read with memcpy (one plain load on x86).
inline float src_to_f32(const void* src, SrcType t, int64_t i) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (t) {
    case SrcType::F32: {
      float v;
      std::memcpy(&v, bytes + i * 4, 4);
      return v;
    }
    case SrcType::F16: {
      uint16_t v;
      std::memcpy(&v, bytes + i * 2, 2);
      return f16_to_f32(v);
    }
    case SrcType::BF16: {
      uint16_t v;
      std::memcpy(&v, bytes + i * 2, 2);
      return bf16_to_f32(v);
    }
  }
  return 0.f;
}

// ---- activation quantization contract (identical on every ISA) ---------------------------
// A row x[0..k) of activations becomes q[k] int8 and one f32 scale sx:
//   amax = max |x| (exact, order independent);  inv = 127 / amax;  q = rne(x * inv) in [-127,127]
//   sx = amax / 127.  A row with a NaN/Inf gets q = 0 and sx = NaN (so its outputs are NaN);
//   an all-zero row gets q = 0, sx = 0.
// Per group of the weight format, also  corr[g] = -zero_point * sum(q over the group), the
// int32 that turns the u8 (offset) weight dot products back into signed ones.

}  // namespace recap::kernels::wf
