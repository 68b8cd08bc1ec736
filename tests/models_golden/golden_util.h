// Shared helpers of the model golden tests: reading golden tensors, loading a tiny model,
// comparing within atol + rtol*|golden|, NMSE, and greedy generation over an engine::KvCachePool.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/kv_cache.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/llava.h"

namespace recap::models::testing {

std::string tiny_dir(const std::string& name);  // tests/data/tiny/<name>

// The golden file, opened once.
const io::SafetensorsFile& golden();
std::vector<float> golden_f32(const std::string& name);
std::vector<int64_t> golden_i64(const std::string& name);
std::vector<int64_t> golden_shape(const std::string& name);

struct Loaded {
  Checkpoint ckpt;
  std::unique_ptr<LlavaModel> model;
};
Loaded load_tiny(const std::string& dir, kernels::WeightFormat precision = kernels::WeightFormat::F32,
                 const LoadOptions& opts = {});

// Asserts |a - g| <= atol + rtol*|g| element-wise (reports the count and the worst element).
::testing::AssertionResult all_close(const std::vector<float>& actual, const std::vector<float>& golden,
                                     double atol = 1e-4, double rtol = 1e-4);
// sum (a-g)^2 / sum g^2
double nmse(const std::vector<float>& actual, const std::vector<float>& golden);

// Result of a prefill + greedy decode of one prompt.
struct Generation {
  std::vector<float> inputs_embeds;  // [N, D]
  std::vector<float> hidden_states;  // [L+1, N, D]
  std::vector<float> logits;         // [N, V] (prefill)
  std::vector<int64_t> ids;          // greedy continuation
};
// ids may contain image tokens; image_features [n_images, P, Dt]. Block tables are taken
// from the pool in reverse order so the cache is non-contiguous. Greedy = lowest id on ties.
Generation generate(const LlavaModel& model, const std::vector<int64_t>& ids, const float* image_features,
                    int64_t n_images, int64_t n_new, kernels::KvDType kv = kernels::KvDType::F32,
                    int64_t block_size = 8);

int64_t argmax(const float* row, int64_t n);

// Golden pixel_values [4,3,S,S] and the size of one image.
std::vector<float> golden_pixels();

}  // namespace recap::models::testing
