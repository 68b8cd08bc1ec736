// Weight formats and the GEMM  Y[M,N] = X[M,K] * W[N,K]^T (+ bias[N]).
//
// X and Y are f32, row-major with leading dimensions ldx/ldy (in elements). W is a logical
// [N,K] matrix (PyTorch Linear layout: out x in) packed once at load time into one of the
// formats below; the packed byte layout of each format is drawn in kernels/weight_formats.h.
// M ranges from 1 (decode) to thousands (prefill); any N and K (tails handled).
#pragma once
#include <cstdint>
#include <string>

#include "kernels/aligned_buffer.h"

namespace recap::kernels {

// Element type of an unpacked source matrix handed to pack_weight().
enum class SrcType { F32, F16, BF16 };

enum class WeightFormat { F32, BF16, Int8, Int4 };
const char* weight_format_name(WeightFormat f);
WeightFormat parse_weight_format(const std::string& name);  // "f32"|"bf16"|"int8"|"int4"

// A packed weight matrix. Owns its bytes, or views external memory (a quantized cache that
// is mmap'ed: see PackedWeight::view). Layout of `data` is fixed by (format, n, k) alone.
struct PackedWeight {
  WeightFormat format = WeightFormat::F32;
  int64_t n = 0;  // output features (rows of W)
  int64_t k = 0;  // input features (columns of W)
  AlignedBuffer data;

  // Bytes a packed [n,k] matrix of this format occupies.
  static size_t packed_bytes(WeightFormat format, int64_t n, int64_t k);
  // Non-owning view of bytes already in packed layout (e.g. from the quantized cache).
  static PackedWeight view(WeightFormat format, int64_t n, int64_t k, const void* bytes, size_t size);
};

// Packs (and quantizes, for int8/int4) a row-major [n,k] source matrix.
// Runs multi-threaded (OpenMP) over rows.
PackedWeight pack_weight(const void* src, SrcType src_type, int64_t n, int64_t k, WeightFormat format);

// Y[M,N] = X[M,K] * W^T (+ bias). bias may be null. Dispatches on active_isa().
// Multi-threaded with OpenMP (uses the current omp_get_max_threads()).
// Numerics by format (docs/NUMERICS.md, "GEMM and weight formats"):
//   f32   f32 accumulation; ISAs differ only in summation order.
//   bf16  X is rounded to bf16 (RNE) too, products exact, f32 accumulation.
//   int8/int4  each row of X is quantized to int8 on the fly (scale max|x|/127); exact int32
//         dot products per weight group; results are bit-identical on every ISA and thread
//         count. A row of X holding NaN/Inf yields NaN outputs for that row.
// Only the first K values of each X row and the first N of each Y row are touched.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);

// Row r of W dequantized to f32 (out[k]). Used for embedding lookup from any format.
void dequantize_row(const PackedWeight& w, int64_t row, float* out);

// Embedding gather: out[i, :] = W[ids[i], :] for i < n. out is [n, w.k] row-major with ldo.
// Ids must be in [0, w.n); checked, throws std::out_of_range.
void embedding_gather(const PackedWeight& w, const int32_t* ids, int64_t n, float* out, int64_t ldo);

namespace ref {
// Scalar reference with the same contract as gemm(); always compiled, the fallback.
void gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const float* bias, float* y,
          int64_t ldy);
}  // namespace ref

}  // namespace recap::kernels
