// LLaVA mlp2x_gelu projector: out = linear_2(gelu_erf(linear_1(x))), x [rows, Dv] -> [rows, Dt].
// nn.GELU() defaults to the exact erf form (SPEC section 4), not the tanh approximation.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "models/config.h"
#include "models/scratch.h"
#include "models/weight_source.h"

namespace recap::models {

class Projector {
 public:
  // Reads linear 1 {weight [hidden, in], bias} and linear 2 {weight [out, hidden], bias}, named
  // by the tensor-name table (models/weight_names.h) under `names`.
  Projector(const ProjectorConfig& cfg, WeightSource& weights, const WeightNames& names,
            kernels::WeightFormat format);

  const ProjectorConfig& config() const { return cfg_; }

  // x [rows, in] -> out [rows, out]. linear_1_out (optional) receives [rows, hidden] before
  // the GELU. Thread-safe: concurrent calls are serialised.
  void forward(const float* x, int64_t rows, float* out, std::vector<float>* linear_1_out = nullptr) const;

  size_t weight_bytes() const;

 private:
  ProjectorConfig cfg_;
  kernels::PackedWeight w1_, w2_;
  std::vector<float> b1_, b2_;
  mutable std::mutex mu_;
  mutable FloatScratch s_hidden_;
};

}  // namespace recap::models
