// CLIP tower + projector against the transformers goldens, for every tiny layout and dtype.
#include <gtest/gtest.h>

#include "golden_util.h"

namespace recap::models::testing {
namespace {

constexpr int64_t kImages = 4;

std::vector<float> slice(const std::vector<float>& v, int64_t index, int64_t per) {
  return std::vector<float>(v.begin() + index * per, v.begin() + (index + 1) * per);
}

class LlavaVisionGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LlavaVisionGolden, Batch4MatchesTransformers) {
  Loaded l = load_tiny(GetParam());
  ASSERT_TRUE(l.model->has_vision());
  const ModelConfig& c = l.model->config();
  const int64_t P = c.vision.num_patches(), Dt = c.text.hidden;
  std::vector<float> pixels = golden_pixels();
  std::vector<float> out(static_cast<size_t>(kImages * P * Dt));
  VisionTrace trace;
  trace.enabled = true;
  l.model->encode_images(pixels.data(), kImages, out.data(), &trace);

  EXPECT_TRUE(all_close(trace.selected, golden_f32("vision.selected")));
  EXPECT_TRUE(all_close(trace.projector_linear_1_out, golden_f32("projector.linear_1_out")));
  EXPECT_TRUE(all_close(out, golden_f32("projector.out")));
  // hidden_states[0..layers_to_run] are the first slices of the golden [Lv+1, B, 1+P, Dv].
  std::vector<float> gold_hidden = golden_f32("vision.hidden_states");
  gold_hidden.resize(trace.hidden_states.size());
  EXPECT_TRUE(all_close(trace.hidden_states, gold_hidden));

  std::vector<float> features(static_cast<size_t>(kImages * P * c.vision.hidden));
  l.model->vision_features(pixels.data(), kImages, features.data());
  EXPECT_TRUE(all_close(features, golden_f32("vision.patch_features")));
}

TEST_P(LlavaVisionGolden, OneAtATimeMatchesBatch) {
  Loaded l = load_tiny(GetParam());
  const ModelConfig& c = l.model->config();
  const int64_t P = c.vision.num_patches(), Dt = c.text.hidden, S = c.vision.image_size;
  std::vector<float> pixels = golden_pixels();
  std::vector<float> batched(static_cast<size_t>(kImages * P * Dt));
  l.model->encode_images(pixels.data(), kImages, batched.data());
  const std::vector<float> gold = golden_f32("projector.out");
  for (int64_t b = 0; b < kImages; ++b) {
    std::vector<float> one(static_cast<size_t>(P * Dt));
    l.model->encode_images(pixels.data() + b * 3 * S * S, 1, one.data());
    EXPECT_TRUE(all_close(one, slice(gold, b, P * Dt))) << "image " << b;
    // Batching changes no arithmetic in our forward: the results are identical.
    EXPECT_EQ(one, slice(batched, b, P * Dt)) << "image " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, LlavaVisionGolden,
                         ::testing::Values("llava_orig_fp32", "llava_orig_bf16", "llava_orig_fp16",
                                           "llava_orig_with_vt_fp32", "llava_hf_fp32", "llava_hf_bf16",
                                           "llava_hf_fp16"));

class ClipVisionGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ClipVisionGolden, TowerOnly) {
  Loaded l = load_tiny(GetParam());
  const ModelConfig& c = l.model->config();
  EXPECT_FALSE(l.model->has_text());
  const int64_t P = c.vision.num_patches(), Dv = c.vision.hidden;
  std::vector<float> pixels = golden_pixels();
  std::vector<float> features(static_cast<size_t>(kImages * P * Dv));
  VisionTrace trace;
  trace.enabled = true;
  l.model->vision_features(pixels.data(), kImages, features.data(), &trace);
  EXPECT_TRUE(all_close(features, golden_f32("vision.patch_features")));
  EXPECT_TRUE(all_close(trace.selected, golden_f32("vision.selected")));
  // No projector in a bare CLIP dir.
  std::vector<float> out(static_cast<size_t>(kImages * P * Dv));
  EXPECT_THROW(l.model->encode_images(pixels.data(), kImages, out.data()), std::logic_error);
}

INSTANTIATE_TEST_SUITE_P(AllClipDirs, ClipVisionGolden,
                         ::testing::Values("clip_vision_fp32", "clip_vision_bf16", "clip_vision_fp16",
                                           "clip_full_fp32"));

// The LLaVA dir's projector with the tower taken from another dir (--vision-weights).
TEST(VisionGolden, VisionWeightsOverride) {
  for (const char* tower : {"clip_full_fp32", "clip_vision_bf16"}) {
    LoadOptions opts;
    opts.vision_weights_dir = tiny_dir(tower);
    Loaded l = load_tiny("llava_orig_fp16", kernels::WeightFormat::F32, opts);
    const ModelConfig& c = l.model->config();
    const int64_t P = c.vision.num_patches(), Dt = c.text.hidden;
    std::vector<float> pixels = golden_pixels();
    std::vector<float> out(static_cast<size_t>(kImages * P * Dt));
    l.model->encode_images(pixels.data(), kImages, out.data());
    EXPECT_TRUE(all_close(out, golden_f32("projector.out"))) << tower;
  }
}

}  // namespace
}  // namespace recap::models::testing
