#include "models/projector.h"

#include <stdexcept>

#include "kernels/ops.h"
#include "models/weight_names.h"

namespace recap::models {

Projector::Projector(const ProjectorConfig& cfg, WeightSource& weights, const WeightNames& names,
                     kernels::WeightFormat format)
    : cfg_(cfg) {
  if (cfg.type != "mlp2x_gelu")
    throw std::runtime_error("projector type '" + cfg.type + "' is not supported (mlp2x_gelu)");
  if (cfg.in <= 0 || cfg.hidden <= 0 || cfg.out <= 0)
    throw std::runtime_error("projector config: missing dims");
  w1_ = weights.matrix(tensor_name(names, ProjectorTensor::Linear1Weight), cfg.hidden, cfg.in, format);
  b1_ = weights.vector(tensor_name(names, ProjectorTensor::Linear1Bias), {cfg.hidden});
  w2_ = weights.matrix(tensor_name(names, ProjectorTensor::Linear2Weight), cfg.out, cfg.hidden, format);
  b2_ = weights.vector(tensor_name(names, ProjectorTensor::Linear2Bias), {cfg.out});
}

size_t Projector::weight_bytes() const {
  return w1_.data.size() + w2_.data.size() + (b1_.size() + b2_.size()) * sizeof(float);
}

void Projector::forward(const float* x, int64_t rows, float* out, std::vector<float>* linear_1_out) const {
  if (rows <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  float* hidden = s_hidden_.get(rows * cfg_.hidden);
  kernels::gemm(x, rows, cfg_.in, w1_, b1_.data(), hidden, cfg_.hidden);
  if (linear_1_out) linear_1_out->assign(hidden, hidden + rows * cfg_.hidden);
  kernels::gelu_erf(hidden, rows * cfg_.hidden);
  kernels::gemm(hidden, rows, cfg_.hidden, w2_, b2_.data(), out, cfg_.out);
}

}  // namespace recap::models
