// GEMM front end: packing/quantization (scalar, shared by all ISAs), dequantization,
// embedding gather, the scalar reference GEMM and the dispatch point.
#include "kernels/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm_internal.h"
#include "kernels/isa.h"
#include "kernels/weight_formats.h"

namespace recap::kernels {

using wf::kPanelRows;

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return "f32";
    case WeightFormat::BF16:
      return "bf16";
    case WeightFormat::Int8:
      return "int8";
    case WeightFormat::Int4:
      return "int4";
  }
  return "unknown";
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32") return WeightFormat::F32;
  if (name == "bf16") return WeightFormat::BF16;
  if (name == "int8") return WeightFormat::Int8;
  if (name == "int4") return WeightFormat::Int4;
  throw std::invalid_argument("unknown weight format '" + name + "' (expected f32, bf16, int8 or int4)");
}

size_t PackedWeight::packed_bytes(WeightFormat format, int64_t n, int64_t k) {
  if (n < 0 || k < 0) throw std::invalid_argument("packed_bytes: negative shape");
  return static_cast<size_t>(wf::num_panels(n) *
                             (wf::panel_data_bytes(format, k) + wf::panel_scale_bytes(format, k)));
}

PackedWeight PackedWeight::view(WeightFormat format, int64_t n, int64_t k, const void* bytes, size_t size) {
  const size_t need = packed_bytes(format, n, k);
  if (size != need)
    throw std::invalid_argument(std::string("PackedWeight::view: ") + weight_format_name(format) + " [" +
                                std::to_string(n) + "," + std::to_string(k) + "] needs " +
                                std::to_string(need) + " bytes, got " + std::to_string(size));
  if (reinterpret_cast<uintptr_t>(bytes) % 4 != 0)
    throw std::invalid_argument("PackedWeight::view: bytes must be at least 4-byte aligned");
  PackedWeight w;
  w.format = format;
  w.n = n;
  w.k = k;
  w.data = AlignedBuffer::view(bytes, size);
  return w;
}

namespace {

[[noreturn]] void bad_weight(int64_t r, int64_t c, float v) {
  throw std::invalid_argument("pack_weight: non-finite or out-of-range weight " + std::to_string(v) +
                              " at row " + std::to_string(r) + ", column " + std::to_string(c));
}

// Quantizes w(r, k0 .. k0+len) symmetric int8: scale = f16(amax / 127), q = rne(w / scale).
uint16_t quantize_group_int8(const void* src, SrcType t, int64_t k, int64_t r, int64_t k0, int64_t len,
                             int8_t* q) {
  float amax = 0.f;
  for (int64_t i = 0; i < len; ++i) {
    const float v = wf::src_to_f32(src, t, r * k + k0 + i);
    if (!std::isfinite(v)) bad_weight(r, k0 + i, v);
    amax = std::max(amax, std::fabs(v));
  }
  const uint16_t s16 = wf::f32_to_f16(amax / 127.f);
  const float s = wf::f16_to_f32(s16);
  if (!std::isfinite(s)) bad_weight(r, k0, amax);
  for (int64_t i = 0; i < len; ++i) {
    const float v = wf::src_to_f32(src, t, r * k + k0 + i);
    const float qf = s == 0.f ? 0.f : std::nearbyint(v / s);
    q[i] = static_cast<int8_t>(std::clamp(qf, -127.f, 127.f));
  }
  return s16;
}

// Quantizes w(r, k0 .. k0+len) to int4 in [-8, 7]: the element of largest magnitude m maps
// to -8 (scale = f16(m / -8), possibly negative), so the full 16-level range is used.
uint16_t quantize_group_int4(const void* src, SrcType t, int64_t k, int64_t r, int64_t k0, int64_t len,
                             int8_t* q) {
  float amax = 0.f, extreme = 0.f;
  for (int64_t i = 0; i < len; ++i) {
    const float v = wf::src_to_f32(src, t, r * k + k0 + i);
    if (!std::isfinite(v)) bad_weight(r, k0 + i, v);
    if (std::fabs(v) > amax) {
      amax = std::fabs(v);
      extreme = v;
    }
  }
  const uint16_t s16 = wf::f32_to_f16(extreme / -8.f);
  const float s = wf::f16_to_f32(s16);
  if (!std::isfinite(s)) bad_weight(r, k0, extreme);
  for (int64_t i = 0; i < len; ++i) {
    const float v = wf::src_to_f32(src, t, r * k + k0 + i);
    const float qf = s == 0.f ? 0.f : std::nearbyint(v / s);
    q[i] = static_cast<int8_t>(std::clamp(qf, -8.f, 7.f));
  }
  return s16;
}

// Packs panel p (rows 16p .. 16p+15) of a source matrix.
void pack_panel(const void* src, SrcType t, int64_t n, int64_t k, WeightFormat f, int64_t p, uint8_t* base) {
  const int64_t kp = wf::padded_k(f, k);
  uint8_t* data = base + p * wf::panel_data_bytes(f, k);
  switch (f) {
    case WeightFormat::F32: {
      float* d = reinterpret_cast<float*>(data);
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t l = 0; l < kPanelRows; ++l) {
          const int64_t r = p * kPanelRows + l;
          d[kk * kPanelRows + l] = r < n ? wf::src_to_f32(src, t, r * k + kk) : 0.f;
        }
      return;
    }
    case WeightFormat::BF16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(data);
      for (int64_t j = 0; j < kp / 2; ++j)
        for (int64_t l = 0; l < kPanelRows; ++l)
          for (int64_t i = 0; i < 2; ++i) {
            const int64_t r = p * kPanelRows + l, kk = 2 * j + i;
            const float v = (r < n && kk < k) ? wf::src_to_f32(src, t, r * k + kk) : 0.f;
            d[(j * kPanelRows + l) * 2 + i] = wf::f32_to_bf16(v);
          }
      return;
    }
    case WeightFormat::Int8:
    case WeightFormat::Int4: {
      const bool is8 = f == WeightFormat::Int8;
      const int64_t g = wf::group_size(f);
      uint16_t* scales =
          reinterpret_cast<uint16_t*>(base + wf::scales_offset(f, n, k) + p * wf::panel_scale_bytes(f, k));
      std::vector<int8_t> q(static_cast<size_t>(kPanelRows * kp), 0);  // [lane][kp]
      for (int64_t l = 0; l < kPanelRows; ++l) {
        const int64_t r = p * kPanelRows + l;
        for (int64_t gi = 0; gi < kp / g; ++gi) {
          const int64_t k0 = gi * g, len = r < n ? std::clamp<int64_t>(k - k0, 0, g) : 0;
          uint16_t s16 = 0;
          if (len > 0)
            s16 = is8 ? quantize_group_int8(src, t, k, r, k0, len, &q[l * kp + k0])
                      : quantize_group_int4(src, t, k, r, k0, len, &q[l * kp + k0]);
          scales[gi * kPanelRows + l] = s16;
        }
      }
      if (is8) {
        for (int64_t j = 0; j < kp / 4; ++j)
          for (int64_t l = 0; l < kPanelRows; ++l)
            for (int64_t i = 0; i < 4; ++i)
              data[(j * kPanelRows + l) * 4 + i] =
                  static_cast<uint8_t>(q[l * kp + 4 * j + i] + wf::kInt8ZeroPoint);
      } else {
        for (int64_t j = 0; j < kp / 8; ++j)
          for (int64_t l = 0; l < kPanelRows; ++l)
            for (int64_t i = 0; i < 4; ++i) {
              const int lo = q[l * kp + 8 * j + i] + wf::kInt4ZeroPoint;
              const int hi = q[l * kp + 8 * j + 4 + i] + wf::kInt4ZeroPoint;
              data[j * 64 + l * 4 + i] = static_cast<uint8_t>(lo | (hi << 4));
            }
      }
      return;
    }
  }
}

// Reads the (dequantized) weight w(r, kk) from any packed layout. Scalar reference accessor.
inline float packed_at(const PackedWeight& w, int64_t r, int64_t kk) {
  const int64_t p = r / kPanelRows, l = r % kPanelRows;
  const uint8_t* data = w.data.data() + p * wf::panel_data_bytes(w.format, w.k);
  switch (w.format) {
    case WeightFormat::F32:
      return reinterpret_cast<const float*>(data)[kk * kPanelRows + l];
    case WeightFormat::BF16:
      return wf::bf16_to_f32(
          reinterpret_cast<const uint16_t*>(data)[((kk / 2) * kPanelRows + l) * 2 + kk % 2]);
    case WeightFormat::Int8:
    case WeightFormat::Int4:
      break;
  }
  return 0.f;
}

// Signed quantized weight q(r, kk) and the f32 scale of its group, for int8 / int4.
inline int32_t packed_q(const PackedWeight& w, int64_t r, int64_t kk) {
  const int64_t p = r / kPanelRows, l = r % kPanelRows;
  const uint8_t* data = w.data.data() + p * wf::panel_data_bytes(w.format, w.k);
  if (w.format == WeightFormat::Int8)
    return static_cast<int32_t>(data[((kk / 4) * kPanelRows + l) * 4 + kk % 4]) - 128;
  const uint8_t b = data[(kk / 8) * 64 + l * 4 + kk % 4];
  const int32_t nib = (kk % 8) < 4 ? (b & 15) : (b >> 4);
  return nib - wf::kInt4ZeroPoint;
}
inline float packed_scale(const PackedWeight& w, int64_t r, int64_t group_index) {
  const int64_t p = r / kPanelRows, l = r % kPanelRows;
  const uint16_t* s = reinterpret_cast<const uint16_t*>(
      w.data.data() + wf::scales_offset(w.format, w.n, w.k) + p * wf::panel_scale_bytes(w.format, w.k));
  return wf::f16_to_f32(s[group_index * kPanelRows + l]);
}

void check_packed(const PackedWeight& w, const char* who) {
  if (w.n <= 0 || w.k <= 0)
    throw std::invalid_argument(std::string(who) + ": empty weight [" + std::to_string(w.n) + "," +
                                std::to_string(w.k) + "]");
  if (w.data.size() < PackedWeight::packed_bytes(w.format, w.n, w.k))
    throw std::invalid_argument(std::string(who) + ": packed " + weight_format_name(w.format) +
                                " buffer of " + std::to_string(w.data.size()) + " bytes is too small for [" +
                                std::to_string(w.n) + "," + std::to_string(w.k) + "]");
}

}  // namespace

PackedWeight pack_weight(const void* src, SrcType src_type, int64_t n, int64_t k, WeightFormat format) {
  if (n <= 0 || k <= 0)
    throw std::invalid_argument("pack_weight: shape [" + std::to_string(n) + "," + std::to_string(k) +
                                "] must be positive");
  if (src == nullptr) throw std::invalid_argument("pack_weight: null source");
  PackedWeight w;
  w.format = format;
  w.n = n;
  w.k = k;
  w.data.allocate(PackedWeight::packed_bytes(format, n, k));
  std::memset(w.data.data(), 0, w.data.size());
  const int64_t panels = wf::num_panels(n);
  std::string error;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t p = 0; p < panels; ++p) {
    try {
      pack_panel(src, src_type, n, k, format, p, w.data.data());
    } catch (const std::exception& e) {
#pragma omp critical(recap_pack_error)
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) throw std::invalid_argument(error);
  return w;
}

void dequantize_row(const PackedWeight& w, int64_t row, float* out) {
  check_packed(w, "dequantize_row");
  if (row < 0 || row >= w.n)
    throw std::out_of_range("dequantize_row: row " + std::to_string(row) + " outside [0," +
                            std::to_string(w.n) + ")");
  if (w.format == WeightFormat::F32 || w.format == WeightFormat::BF16) {
    for (int64_t kk = 0; kk < w.k; ++kk) out[kk] = packed_at(w, row, kk);
    return;
  }
  const int64_t g = wf::group_size(w.format);
  for (int64_t kk = 0; kk < w.k; ++kk)
    out[kk] = packed_scale(w, row, kk / g) * static_cast<float>(packed_q(w, row, kk));
}

void embedding_gather(const PackedWeight& w, const int32_t* ids, int64_t n, float* out, int64_t ldo) {
  check_packed(w, "embedding_gather");
  if (ldo < w.k)
    throw std::invalid_argument("embedding_gather: ldo " + std::to_string(ldo) + " < k " +
                                std::to_string(w.k));
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= w.n)
      throw std::out_of_range("embedding_gather: token id " + std::to_string(ids[i]) + " at position " +
                              std::to_string(i) + " outside the vocabulary [0," + std::to_string(w.n) + ")");
#pragma omp parallel for if (n >= 8)
  for (int64_t i = 0; i < n; ++i) dequantize_row(w, ids[i], out + i * ldo);
}

namespace detail {

void quantize_row_ref(const float* x, int64_t k, int64_t kp, int64_t group, int32_t zero_point, int8_t* q,
                      float* sx, int32_t* corr) {
  // max |x| on the bit patterns: exact, order independent, and NaN/Inf (>= 0x7f800000) detected.
  uint32_t amax_bits = 0;
  for (int64_t i = 0; i < k; ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    amax_bits = std::max(amax_bits, b & 0x7fffffffu);
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  if (amax_bits >= 0x7f800000u || amax_bits == 0) {
    std::memset(q, 0, static_cast<size_t>(kp));
    *sx = amax_bits == 0 ? 0.f : std::numeric_limits<float>::quiet_NaN();
  } else {
    const float inv = 127.f / amax;
    for (int64_t i = 0; i < k; ++i) {
      const float v = std::clamp(std::nearbyint(x[i] * inv), -127.f, 127.f);
      q[i] = static_cast<int8_t>(v);
    }
    for (int64_t i = k; i < kp; ++i) q[i] = 0;
    *sx = amax / 127.f;
  }
  for (int64_t g = 0; g < kp / group; ++g) {
    int32_t s = 0;
    for (int64_t i = 0; i < group; ++i) s += q[g * group + i];
    corr[g] = -zero_point * s;
  }
}

void check_gemm_args(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* y,
                     int64_t ldy) {
  check_packed(w, "gemm");
  if (m < 0) throw std::invalid_argument("gemm: negative m " + std::to_string(m));
  if (m > 0 && (x == nullptr || y == nullptr)) throw std::invalid_argument("gemm: null x or y");
  if (ldx < w.k)
    throw std::invalid_argument("gemm: ldx " + std::to_string(ldx) + " < k " + std::to_string(w.k));
  if (ldy < w.n)
    throw std::invalid_argument("gemm: ldy " + std::to_string(ldy) + " < n " + std::to_string(w.n));
}

void* scratch(int slot, size_t bytes) {
  constexpr int kSlots = 4;
  thread_local AlignedBuffer buffers[kSlots];
  if (slot < 0 || slot >= kSlots) throw std::logic_error("scratch: bad slot");
  AlignedBuffer& b = buffers[slot];
  if (b.size() < bytes) b.allocate(std::max(bytes, b.size() * 3 / 2));
  return b.data();
}

void pack_units_f32(const float* x, int64_t m, int64_t ldx, int64_t k, int tile_rows, uint32_t* out,
                    bool to_bf16) {
  const int64_t kunits = to_bf16 ? (k + 1) / 2 : k;
  const int64_t tiles = (m + tile_rows - 1) / tile_rows;
#pragma omp parallel for schedule(static) if (m * k >= 65536)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * tile_rows, mr = std::min<int64_t>(tile_rows, m - r0);
    uint32_t* tile = out + t * tile_rows * kunits;
    for (int64_t i = 0; i < mr; ++i) {
      const float* xr = x + (r0 + i) * ldx;
      if (!to_bf16) {
        for (int64_t u = 0; u < k; ++u) std::memcpy(&tile[u * mr + i], &xr[u], 4);
      } else {
        for (int64_t u = 0; u < kunits; ++u) {
          const uint32_t lo = wf::f32_to_bf16(xr[2 * u]);
          const uint32_t hi = 2 * u + 1 < k ? wf::f32_to_bf16(xr[2 * u + 1]) : 0u;
          tile[u * mr + i] = lo | (hi << 16);
        }
      }
    }
  }
}

void pack_units_quantized(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t kp, int64_t group,
                          int32_t zero_point, int tile_rows, QuantizeRowFn quantize_row, uint32_t* units,
                          int32_t* corr, float* sx) {
  const int64_t kunits = kp / 4, groups = kp / group;
  const int64_t tiles = (m + tile_rows - 1) / tile_rows;
#pragma omp parallel for schedule(static) if (m * k >= 65536)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * tile_rows, mr = std::min<int64_t>(tile_rows, m - r0);
    int8_t* qrow = static_cast<int8_t*>(scratch(3, static_cast<size_t>(kp + groups * 4)));
    int32_t* crow = reinterpret_cast<int32_t*>(qrow + kp);
    uint32_t* tile = units + t * tile_rows * kunits;
    int32_t* ctile = corr + t * tile_rows * groups;
    for (int64_t i = 0; i < mr; ++i) {
      quantize_row(x + (r0 + i) * ldx, k, kp, group, zero_point, qrow, &sx[r0 + i], crow);
      for (int64_t u = 0; u < kunits; ++u) std::memcpy(&tile[u * mr + i], qrow + 4 * u, 4);
      for (int64_t g = 0; g < groups; ++g) ctile[g * mr + i] = crow[g];
    }
  }
}

GemmWorkPlan plan_gemm_work(int64_t panels, int64_t tiles, int threads, int64_t panel_step) {
  GemmWorkPlan p;
  p.panels = panels;
  p.tiles = tiles;
  threads = std::max(1, threads);
  p.panel_step = std::max<int64_t>(1, panel_step);
  // Chunks are cut at multiples of the panel step, so only the chunk holding the matrix's end
  // can run a narrower micro-kernel call (a remainder in every chunk costs ~6% of a prefill
  // GEMM with 3-panel steps), and sized evenly in steps, as many as a multiple of the threads.
  p.steps = (panels + p.panel_step - 1) / p.panel_step;
  int64_t nchunks = std::max<int64_t>(
      threads, (panels + GemmWorkPlan::kTargetChunkPanels - 1) / GemmWorkPlan::kTargetChunkPanels);
  nchunks = (nchunks + threads - 1) / threads * threads;
  p.nchunks = std::max<int64_t>(1, std::min(nchunks, p.steps));
  if (p.nchunks < 2 * threads && tiles >= 2 * threads) p.mchunks = std::min<int64_t>(tiles, threads);
  p.tiles_per_mchunk = (tiles + p.mchunks - 1) / p.mchunks;
  p.items = p.nchunks * p.mchunks;
  return p;
}

void GemmWorkPlan::item(int64_t it, int64_t* p0, int64_t* p1, int64_t* t0, int64_t* t1) const {
  const int64_t nc = it / mchunks, mc = it % mchunks;
  *p0 = std::min(panels, nc * steps / nchunks * panel_step);
  *p1 = std::min(panels, (nc + 1) * steps / nchunks * panel_step);
  *t0 = mc * tiles_per_mchunk;
  *t1 = std::min(tiles, *t0 + tiles_per_mchunk);
}

}  // namespace detail

namespace ref {

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  detail::check_gemm_args(x, m, ldx, w, y, ldy);
  const int64_t n = w.n, k = w.k;
  if (w.format == WeightFormat::F32 || w.format == WeightFormat::BF16) {
    const bool round_x = w.format == WeightFormat::BF16;  // bf16 contract: X is rounded to bf16 too
#pragma omp parallel for
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < m; ++i) {
        float acc = 0.f;
        for (int64_t kk = 0; kk < k; ++kk) {
          const float xv = round_x ? wf::bf16_to_f32(wf::f32_to_bf16(x[i * ldx + kk])) : x[i * ldx + kk];
          acc += xv * packed_at(w, j, kk);
        }
        y[i * ldy + j] = bias ? acc + bias[j] : acc;
      }
    return;
  }
  // int8 / int4: per-row int8 activations, exact int32 dot products per weight group, then
  // acc = fma(float(isum_g), scale_g, acc) over groups in order, y = fma(acc, sx, bias) or acc * sx.
  const int64_t g = wf::group_size(w.format), kp = wf::padded_k(w.format, k), groups = kp / g;
  std::vector<int8_t> q(static_cast<size_t>(m * kp));
  std::vector<float> sx(static_cast<size_t>(m));
  std::vector<int32_t> corr(static_cast<size_t>(m * groups));
  for (int64_t i = 0; i < m; ++i)
    detail::quantize_row_ref(x + i * ldx, k, kp, g, 0, &q[i * kp], &sx[i], &corr[i * groups]);
#pragma omp parallel for
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      float acc = 0.f;
      for (int64_t gi = 0; gi < groups; ++gi) {
        int32_t isum = 0;
        for (int64_t kk = gi * g; kk < (gi + 1) * g; ++kk)
          isum += static_cast<int32_t>(q[i * kp + kk]) * packed_q(w, j, kk);
        acc = std::fma(static_cast<float>(isum), packed_scale(w, j, gi), acc);
      }
      // One rounding with bias (fma) so every ISA computes the same value whatever the
      // compiler's contraction settings.
      y[i * ldy + j] = bias ? std::fma(acc, sx[i], bias[j]) : acc * sx[i];
    }
}

}  // namespace ref

void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy) {
  switch (active_isa()) {
    case Isa::Avx512:
      return avx512::gemm(x, m, ldx, w, bias, y, ldy);
    case Isa::Avx2:
      return avx2::gemm(x, m, ldx, w, bias, y, ldy);
    case Isa::Ref:
      break;
  }
  ref::gemm(x, m, ldx, w, bias, y, ldy);
}

}  // namespace recap::kernels
