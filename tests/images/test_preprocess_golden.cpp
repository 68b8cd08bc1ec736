// Golden check of decode + LLaVA preprocessing against Pillow 9.4 / transformers 4.44 output
// (tests/data/tiny/golden.safetensors): image.{k}.rgb_u8, square_u8 and resized_u8 must be
// byte-identical, pixel_values within 1e-6, for every golden image.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/safetensors.h"
#include "models/preprocess.h"

using namespace recap;

namespace {

const std::string kTiny = std::string(RECAP_TEST_DATA) + "/tiny";

struct GoldenImage {
  int index;
  std::string file;
};

std::vector<GoldenImage> golden_images() {
  std::ifstream f(kTiny + "/golden_meta.json");
  const auto meta = nlohmann::json::parse(f);
  std::vector<GoldenImage> out;
  for (const auto& im : meta.at("images"))
    out.push_back({im.at("index").get<int>(), im.at("file").get<std::string>()});
  return out;
}

// The CLIP processor settings of the tiny tower, read from its preprocessor_config.json.
models::PreprocessConfig tiny_preprocess_config() {
  std::ifstream f(kTiny + "/clip_vision_fp32/preprocessor_config.json");
  const auto j = nlohmann::json::parse(f);
  models::VisionConfig vc;
  vc.image_size = j.at("crop_size").at("height").get<int>();
  vc.resize_shortest_edge = j.at("size").at("shortest_edge").get<int>();
  vc.crop_size = j.at("crop_size").at("height").get<int>();
  for (int c = 0; c < 3; ++c) {
    vc.image_mean[c] = j.at("image_mean")[c].get<float>();
    vc.image_std[c] = j.at("image_std")[c].get<float>();
    vc.pad_background[c] = static_cast<uint8_t>(static_cast<int>(j.at("image_mean")[c].get<double>() * 255));
  }
  return models::from_vision_config(vc);
}

const io::TensorInfo& golden(const io::SafetensorsFile& g, const std::string& name) {
  auto it = g.tensors().find(name);
  if (it == g.tensors().end()) throw std::runtime_error("golden tensor missing: " + name);
  return it->second;
}

// Exact comparison of an HWC uint8 image with a golden [H,W,3] U8 tensor; reports the first
// differing pixel and the number of differing bytes.
void expect_image_equals(const io::Image& img, const io::TensorInfo& t, const std::string& what) {
  ASSERT_EQ(t.dtype, io::DType::U8) << what;
  ASSERT_EQ(t.shape.size(), 3u) << what;
  ASSERT_EQ(t.shape[0], img.height) << what;
  ASSERT_EQ(t.shape[1], img.width) << what;
  ASSERT_EQ(t.shape[2], 3) << what;
  ASSERT_EQ(t.nbytes, img.rgb.size()) << what;
  size_t diffs = 0, first = 0;
  int max_diff = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) {
    const int d = std::abs(int(img.rgb[i]) - int(t.data[i]));
    if (d) {
      if (!diffs) first = i;
      ++diffs;
      max_diff = std::max(max_diff, d);
    }
  }
  EXPECT_EQ(diffs, 0u) << what << ": " << diffs << " bytes differ (max " << max_diff << "), first at pixel "
                       << (first / 3) % img.width << "," << (first / 3) / img.width << " channel "
                       << first % 3;
}

class GoldenPreprocess : public ::testing::Test {
 protected:
  void SetUp() override { golden_ = io::SafetensorsFile::open(kTiny + "/golden.safetensors"); }
  std::shared_ptr<io::SafetensorsFile> golden_;
};

TEST_F(GoldenPreprocess, EveryGoldenImageMatchesExactly) {
  const auto images = golden_images();
  ASSERT_EQ(images.size(), 4u);
  const models::PreprocessConfig cfg = tiny_preprocess_config();
  ASSERT_EQ(cfg.crop_size, 56);
  for (const GoldenImage& gi : images) {
    SCOPED_TRACE(gi.file);
    const std::string prefix = "image." + std::to_string(gi.index) + ".";
    const io::Image img = io::decode_image_file(kTiny + "/" + gi.file);
    expect_image_equals(img, golden(*golden_, prefix + "rgb_u8"), prefix + "rgb_u8");

    models::PreprocessStages stages;
    const std::vector<float> pv = models::preprocess_llava(img, cfg, &stages);
    expect_image_equals(stages.square, golden(*golden_, prefix + "square_u8"), prefix + "square_u8");
    expect_image_equals(stages.resized, golden(*golden_, prefix + "resized_u8"), prefix + "resized_u8");

    const io::TensorInfo& t = golden(*golden_, prefix + "pixel_values");
    ASSERT_EQ(t.dtype, io::DType::F32);
    ASSERT_EQ(t.shape, (std::vector<int64_t>{3, cfg.crop_size, cfg.crop_size}));
    ASSERT_EQ(static_cast<size_t>(t.numel()), pv.size());
    std::vector<float> expected(pv.size());
    std::memcpy(expected.data(), t.data, t.nbytes);
    double max_err = 0;
    for (size_t i = 0; i < pv.size(); ++i)
      max_err = std::max(max_err, std::fabs(double(pv[i]) - expected[i]));
    EXPECT_LE(max_err, 1e-6) << prefix << "pixel_values";
    std::printf("%s: uint8 stages exact, max |pixel_values - golden| = %.3g\n", gi.file.c_str(), max_err);
  }
}

// The config loader's VisionConfig (preprocessor_config.json + LLaVA background) gives the same
// preprocessing for every tiny layout, and therefore the golden pixel values.
TEST_F(GoldenPreprocess, ConfigFromEveryLayoutGivesTheGoldenPixels) {
  const models::PreprocessConfig expected = tiny_preprocess_config();
  const io::Image img = io::decode_image_file(kTiny + "/images/wide_gradient.png");
  const io::TensorInfo& t = golden(*golden_, "image.0.pixel_values");
  for (const char* dir : {"llava_hf_fp32", "llava_orig_fp32", "llava_orig_with_vt_fp32", "clip_vision_fp32",
                          "clip_full_fp32"}) {
    SCOPED_TRACE(dir);
    const models::ModelConfig mc = models::load_model_config(kTiny + "/" + dir);
    const models::PreprocessConfig cfg = models::from_vision_config(mc.vision);
    EXPECT_EQ(cfg.resize_shortest_edge, expected.resize_shortest_edge);
    EXPECT_EQ(cfg.crop_size, expected.crop_size);
    EXPECT_EQ(cfg.image_mean, expected.image_mean);
    EXPECT_EQ(cfg.image_std, expected.image_std);
    EXPECT_EQ(cfg.pad_background, expected.pad_background);
    const std::vector<float> pv = models::preprocess_llava(img, cfg);
    ASSERT_EQ(pv.size() * sizeof(float), t.nbytes);
    EXPECT_EQ(std::memcmp(pv.data(), t.data, t.nbytes), 0);
  }
}

// The individual steps, chained by hand, give the same stages as the pipeline.
TEST_F(GoldenPreprocess, StepFunctionsReproduceTheStages) {
  const models::PreprocessConfig cfg = tiny_preprocess_config();
  for (const GoldenImage& gi : golden_images()) {
    SCOPED_TRACE(gi.file);
    const std::string prefix = "image." + std::to_string(gi.index) + ".";
    const io::Image img = io::decode_image_file(kTiny + "/" + gi.file);
    const io::Image square = models::expand2square(img, cfg.pad_background);
    expect_image_equals(square, golden(*golden_, prefix + "square_u8"), "expand2square");
    const auto [w, h] =
        models::shortest_edge_output_size(square.width, square.height, cfg.resize_shortest_edge);
    const io::Image resized = models::resize_bicubic_pillow(square, w, h);
    const io::Image cropped = models::center_crop(resized, cfg.crop_size, cfg.crop_size);
    expect_image_equals(cropped, golden(*golden_, prefix + "resized_u8"), "resize + crop");
  }
}

}  // namespace
