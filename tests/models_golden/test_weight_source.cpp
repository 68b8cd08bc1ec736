// WeightSource: packing from a checkpoint (fused rows, conv kernels, mixed dtypes), shape and
// dtype errors that name the tensor and file, and deterministic synthetic weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "models/weight_source.h"

namespace recap::models {
namespace {

using kernels::WeightFormat;

class WeightSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("recap_ws_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    io::SafetensorsWriter w;
    a_ = {1, 2, 3, 4, 5, 6};  // [2,3]
    b_ = {7, 8, 9};           // [1,3]
    w.add("a", io::DType::F32, {2, 3}, a_.data(), a_.size() * 4);
    w.add("b", io::DType::F32, {1, 3}, b_.data(), b_.size() * 4);
    // bf16 of 10, 11, 12 (exact): high halves of the f32 bit patterns.
    const uint16_t c_bf16[3] = {0x4120, 0x4130, 0x4140};
    w.add("c_bf16", io::DType::BF16, {1, 3}, c_bf16, sizeof c_bf16);
    w.add("conv", io::DType::F32, {1, 3, 1, 1}, b_.data(), b_.size() * 4);
    const int64_t ids[2] = {1, 2};
    w.add("ids", io::DType::I64, {2}, ids, sizeof ids);
    w.write((dir_ / "model.safetensors").string());
    store_ = std::make_unique<io::WeightStore>(io::WeightStore::open(dir_.string()));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<float> rows_of(const kernels::PackedWeight& w) {
    std::vector<float> out(static_cast<size_t>(w.n * w.k));
    for (int64_t r = 0; r < w.n; ++r) kernels::dequantize_row(w, r, out.data() + r * w.k);
    return out;
  }

  std::filesystem::path dir_;
  std::vector<float> a_, b_;
  std::unique_ptr<io::WeightStore> store_;
};

TEST_F(WeightSourceTest, FusedRowsConvAndMixedDtypes) {
  StoreWeightSource src(*store_);
  EXPECT_EQ(rows_of(src.matrix({"a", "b"}, {2, 1}, 3, WeightFormat::F32)),
            (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Mixed F32 + BF16 parts are converted to f32 before packing.
  EXPECT_EQ(rows_of(src.matrix({"b", "c_bf16"}, {1, 1}, 3, WeightFormat::F32)),
            (std::vector<float>{7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(rows_of(src.matrix("conv", 1, 3, WeightFormat::BF16, /*flatten_trailing=*/true)), b_);
  EXPECT_EQ(src.vector("b", {1, 3}), b_);
  EXPECT_THROW(src.vectors_concat({"b"}, {3}), std::runtime_error);  // b is [1,3], not [3]
}

TEST_F(WeightSourceTest, ErrorsNameTheTensorAndFile) {
  StoreWeightSource src(*store_);
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  std::string m = message([&] { src.matrix("a", 3, 2, WeightFormat::F32); });
  EXPECT_NE(m.find("'a'"), std::string::npos) << m;
  EXPECT_NE(m.find("[2,3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[3,2]"), std::string::npos) << m;
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
  m = message([&] { src.matrix("conv", 1, 3, WeightFormat::F32); });  // 4-D without flatten
  EXPECT_NE(m.find("'conv'"), std::string::npos) << m;
  m = message([&] { src.vector("ids", {2}); });
  EXPECT_NE(m.find("I64"), std::string::npos) << m;
  m = message([&] { src.vector("missing", {2}); });
  EXPECT_NE(m.find("missing"), std::string::npos) << m;
  m = message([&] { src.vector("b", {3}); });  // [1,3] is not [3]
  EXPECT_NE(m.find("'b'"), std::string::npos) << m;
}

TEST(SyntheticWeightSource, DeterministicPerNameAndScaled) {
  SyntheticWeightSource s1(5, 0.5f), s2(5, 0.5f), s3(6, 0.5f);
  const std::vector<float> a = s1.vector("x.weight", {4096});
  EXPECT_EQ(a, s2.vector("x.weight", {4096}));
  EXPECT_NE(a, s3.vector("x.weight", {4096}));
  EXPECT_NE(a, s1.vector("y.weight", {4096}));
  double sum2 = 0;
  for (float v : a) sum2 += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(sum2 / a.size()), 0.5, 0.03);
  // Norm weights are centred on 1.
  double mean = 0;
  for (float v : s1.vector("model.norm.weight", {4096})) mean += v;
  EXPECT_NEAR(mean / 4096, 1.0, 0.05);
  const kernels::PackedWeight w = s1.matrix({"q", "k"}, {3, 2}, 64, WeightFormat::Int8);
  EXPECT_EQ(w.n, 5);
  EXPECT_EQ(w.k, 64);
}

}  // namespace
}  // namespace recap::models
