// Turning checkpoint tensors (mmap'ed F32/F16/BF16 views) into what the forward passes use:
// packed GEMM weights in the chosen precision, and f32 vectors for norms, biases and
// embeddings. Every shape is checked against what the config implies, and a mismatch names
// the tensor and its file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/gemm.h"

namespace recap::models {

// The element type pack_weight() reads for a float tensor; throws std::runtime_error
// naming the tensor for any other dtype.
kernels::SrcType weight_src_type(const io::TensorInfo& t);

// Throws std::runtime_error("<file>: tensor '<name>' has shape [..], expected [..]") unless
// the tensor has exactly `shape`.
void expect_shape(const io::TensorInfo& t, const std::vector<int64_t>& shape);

// Packs store[name] (shape must equal [n, k], or [n, k...] whose trailing dims multiply to k
// when `flatten_trailing` is set, e.g. a conv kernel [Dv,3,p,p]).
kernels::PackedWeight pack_tensor(const io::WeightStore& store, const std::string& name, int64_t n, int64_t k,
                                  kernels::WeightFormat format, bool flatten_trailing = false);

// Packs the row-wise concatenation of several [n_i, k] tensors as one [sum n_i, k] matrix
// (fused q/k/v or gate/up). Rows are quantized independently in every format, so fusing
// changes no value compared with packing each part alone.
kernels::PackedWeight pack_rows_concat(const io::WeightStore& store, const std::vector<std::string>& names,
                                       const std::vector<int64_t>& rows, int64_t k,
                                       kernels::WeightFormat format);

// store[name] converted to f32; its shape must equal `shape`.
std::vector<float> load_f32(const io::WeightStore& store, const std::string& name,
                            const std::vector<int64_t>& shape);

// Concatenation of several 1-D tensors (fused biases), each of the given length.
std::vector<float> load_f32_concat(const io::WeightStore& store, const std::vector<std::string>& names,
                                   const std::vector<int64_t>& lengths);

}  // namespace recap::models
