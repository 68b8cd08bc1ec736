// Where a model's weights come from. The forward-pass classes (VisionTower, Projector,
// LlamaModel) ask a WeightSource for each packed matrix and f32 vector by its checkpoint
// tensor name; they never touch files. Implementations:
//   StoreWeightSource      a checkpoint (io::WeightStore, mmap'ed F32/F16/BF16): converts/packs
//   SyntheticWeightSource  random values of the requested shapes (benchmarks of the real
//                          shapes with no checkpoint)
// and, outside models/, e.g. a source that maps an already packed (quantized) cache, or one
// that wraps StoreWeightSource and streams each packed matrix to disk as it is produced.
//
// Matrix requests name one tensor, or several whose rows are concatenated (fused q|k|v and
// gate|up): join the names with '+' to get a stable key for such a fused matrix.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/gemm.h"

namespace recap::models {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The row-wise concatenation of the named [rows[i], k] tensors as one packed
  // [sum rows, k] matrix in `format`. With flatten_trailing, a tensor [rows, a, b, ...] with
  // a*b*... == k is accepted (a conv kernel used as a GEMM). Throws naming the tensor when a
  // tensor is missing or has another shape.
  virtual kernels::PackedWeight matrix(const std::vector<std::string>& names,
                                       const std::vector<int64_t>& rows, int64_t k,
                                       kernels::WeightFormat format, bool flatten_trailing = false) = 0;
  // The named tensor as f32; its shape must be `shape`.
  virtual std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) = 0;

  // Conveniences over the two calls above.
  kernels::PackedWeight matrix(const std::string& name, int64_t n, int64_t k, kernels::WeightFormat format,
                               bool flatten_trailing = false) {
    return matrix(std::vector<std::string>{name}, std::vector<int64_t>{n}, k, format, flatten_trailing);
  }
  std::vector<float> vectors_concat(const std::vector<std::string>& names,
                                    const std::vector<int64_t>& lengths);
};

// Tensors of a checkpoint. The store must outlive the source.
class StoreWeightSource : public WeightSource {
 public:
  explicit StoreWeightSource(const io::WeightStore& store) : store_(store) {}
  kernels::PackedWeight matrix(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                               int64_t k, kernels::WeightFormat format,
                               bool flatten_trailing = false) override;
  std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) override;
  using WeightSource::matrix;

 private:
  const io::WeightStore& store_;
};

// Deterministic pseudo-random weights (uniform with the given standard deviation; a function of
// the seed and the tensor name only), for benchmarks at the real shapes without a checkpoint.
// Vectors whose name ends in "norm.weight", "norm1.weight", "norm2.weight" or
// "layrnorm.weight" are 1 + noise, so the activations stay in a realistic range.
class SyntheticWeightSource : public WeightSource {
 public:
  explicit SyntheticWeightSource(uint64_t seed = 1, float stddev = 0.02f) : seed_(seed), stddev_(stddev) {}
  kernels::PackedWeight matrix(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                               int64_t k, kernels::WeightFormat format,
                               bool flatten_trailing = false) override;
  std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) override;
  using WeightSource::matrix;

 private:
  uint64_t seed_;
  float stddev_;
};

// Throws std::runtime_error naming the directory, the files and the one-time conversion
// (docs/REAL_MODEL.md) when `dir` holds PyTorch pickle weights (pytorch_model*.bin,
// *.pt, *.pth) and no *.safetensors file: the engine reads safetensors only and never unpickles.
// Does nothing for a file, or a directory with any safetensors file.
void reject_pickle_only_checkpoint(const std::string& dir);

// The element type pack_weight() reads for a float tensor; throws std::runtime_error
// naming the tensor for any other dtype.
kernels::SrcType weight_src_type(const io::TensorInfo& t);
// Throws std::runtime_error("<file>: tensor '<name>' has shape [..], expected [..]") unless
// the tensor has exactly `shape`.
void expect_shape(const io::TensorInfo& t, const std::vector<int64_t>& shape);

}  // namespace recap::models
