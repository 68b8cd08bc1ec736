// Weight formats: exact conversions, quantization error on Gaussian weights, packing errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/weight_formats.h"

using namespace recap::kernels;

namespace {
uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

double weight_nmse(WeightFormat fmt, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (auto& v : w) v = nd(rng);
  const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
  std::vector<float> row(static_cast<size_t>(k));
  double err = 0, ref = 0;
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row(p, r, row.data());
    for (int64_t c = 0; c < k; ++c) {
      const double d = row[c] - w[r * k + c];
      err += d * d;
      ref += double(w[r * k + c]) * w[r * k + c];
    }
  }
  return err / ref;
}
}  // namespace

TEST(WeightFormats, F16RoundTripIsExhaustivelyExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = wf::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(wf::f16_to_f32(wf::f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(wf::f32_to_f16(f), h) << "f16 bits " << h;
  }
  EXPECT_EQ(wf::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(wf::f16_to_f32(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(wf::f32_to_f16(65520.f), 0x7c00);                       // ties away from 65504 -> inf
  EXPECT_EQ(wf::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
}

TEST(WeightFormats, Bf16RoundsToNearestEven) {
  EXPECT_EQ(wf::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(wf::f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(wf::f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(wf::f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);  // above tie
  EXPECT_TRUE(std::isnan(wf::bf16_to_f32(wf::f32_to_bf16(std::nanf("")))));
  EXPECT_EQ(wf::f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  for (uint32_t h = 0; h < 65536; h += 7) {
    const float f = wf::bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(wf::f32_to_bf16(f), h);
    }
  }
}

TEST(WeightFormats, SourcesConvertExactly) {
  // f16 and bf16 sources are widened exactly; the f32 format then holds them bit for bit.
  const int64_t n = 5, k = 9;
  std::vector<uint16_t> h16(n * k), b16(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    h16[i] = static_cast<uint16_t>(0x0001 + 1543 * i);  // includes subnormals
    b16[i] = static_cast<uint16_t>(0x3f00 + 977 * i % 0x7f00);
  }
  const PackedWeight pf = pack_weight(h16.data(), SrcType::F16, n, k, WeightFormat::F32);
  const PackedWeight pb = pack_weight(b16.data(), SrcType::BF16, n, k, WeightFormat::F32);
  const PackedWeight pbb = pack_weight(b16.data(), SrcType::BF16, n, k, WeightFormat::BF16);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row(pf, r, row.data());
    for (int64_t c = 0; c < k; ++c) EXPECT_EQ(bits(row[c]), bits(wf::f16_to_f32(h16[r * k + c])));
    dequantize_row(pb, r, row.data());
    for (int64_t c = 0; c < k; ++c) EXPECT_EQ(bits(row[c]), bits(wf::bf16_to_f32(b16[r * k + c])));
    dequantize_row(pbb, r, row.data());
    for (int64_t c = 0; c < k; ++c) EXPECT_EQ(bits(row[c]), bits(wf::bf16_to_f32(b16[r * k + c])));
  }
}

TEST(WeightFormats, QuantizationNmseOnGaussianWeights) {
  const double bf16 = weight_nmse(WeightFormat::BF16, 256, 4096, 1);
  const double int8 = weight_nmse(WeightFormat::Int8, 256, 4096, 2);
  const double int4 = weight_nmse(WeightFormat::Int4, 256, 4096, 3);
  std::printf("weight NMSE on N(0, 0.02^2), 256x4096: bf16 %.3e  int8 %.3e  int4 %.3e\n", bf16, int8, int4);
  EXPECT_LE(bf16, 1e-5);
  EXPECT_LE(int8, 5e-5);
  EXPECT_LE(int4, 1e-2);
  // k not a multiple of the group: the partial last group is quantized on its own.
  EXPECT_LE(weight_nmse(WeightFormat::Int8, 33, 100, 4), 5e-5 * 1.5);
  EXPECT_LE(weight_nmse(WeightFormat::Int4, 33, 100, 5), 1e-2 * 1.5);
}

TEST(WeightFormats, QuantizedValuesRespectTheirGrid) {
  // Every dequantized int8/int4 value is an integer multiple of its group scale, within range.
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  const int64_t n = 17, k = 96;
  std::vector<float> w(n * k);
  for (auto& v : w) v = nd(rng);
  w[3 * k + 5] = 0;  // zeros stay zero
  for (WeightFormat f : {WeightFormat::Int8, WeightFormat::Int4}) {
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, f);
    const int64_t g = wf::group_size(f);
    const float qmax = f == WeightFormat::Int8 ? 127.f : 8.f;
    std::vector<float> row(k);
    for (int64_t r = 0; r < n; ++r) {
      dequantize_row(p, r, row.data());
      for (int64_t g0 = 0; g0 < k; g0 += g) {
        float amax = 0, dmax = 0;
        for (int64_t c = g0; c < std::min(k, g0 + g); ++c) {
          amax = std::max(amax, std::fabs(w[r * k + c]));
          dmax = std::max(dmax, std::fabs(row[c]));
        }
        const float step = amax / qmax;
        for (int64_t c = g0; c < std::min(k, g0 + g); ++c) {
          // int4 maps the extreme to -8: values beyond 7.5 steps on the other side clip to 7.
          const bool clipped = f == WeightFormat::Int4 && std::fabs(w[r * k + c]) > 7.5f * step;
          EXPECT_LE(std::fabs(row[c] - w[r * k + c]), (clipped ? 1.0f : 0.5f) * step * 1.01f)
              << "row " << r << " col " << c;
        }
        EXPECT_NEAR(dmax, amax, 0.5f * step * 1.01f);
      }
    }
    dequantize_row(p, 3, row.data());
    EXPECT_EQ(row[5], 0.f);
  }
}

TEST(WeightFormats, PackRejectsBadInput) {
  std::vector<float> w(4 * 8, 1.f);
  w[2 * 8 + 3] = std::nanf("");
  for (WeightFormat f : {WeightFormat::Int8, WeightFormat::Int4}) {
    try {
      pack_weight(w.data(), SrcType::F32, 4, 8, f);
      FAIL() << "NaN weight accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("row 2, column 3"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(pack_weight(w.data(), SrcType::F32, 0, 8, WeightFormat::F32), std::invalid_argument);
  EXPECT_THROW(pack_weight(nullptr, SrcType::F32, 4, 8, WeightFormat::F32), std::invalid_argument);
  EXPECT_THROW(parse_weight_format("q4_0"), std::invalid_argument);
  EXPECT_EQ(parse_weight_format("int4"), WeightFormat::Int4);
}

TEST(WeightFormats, ViewChecksSizeAndMatchesOwnedPack) {
  std::vector<float> w(20 * 70);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (auto& v : w) v = nd(rng);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, 20, 70, f);
    EXPECT_EQ(p.data.size(), PackedWeight::packed_bytes(f, 20, 70));
    EXPECT_THROW(PackedWeight::view(f, 20, 70, p.data.data(), p.data.size() - 1), std::invalid_argument);
    const PackedWeight v = PackedWeight::view(f, 20, 70, p.data.data(), p.data.size());
    std::vector<float> a(70), b(70);
    dequantize_row(p, 19, a.data());
    dequantize_row(v, 19, b.data());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), 70 * 4));
  }
}

TEST(WeightFormats, EmbeddingGather) {
  const int64_t n = 40, k = 33;
  std::vector<float> w(n * k);
  for (int64_t i = 0; i < n * k; ++i) w[i] = std::sin(0.37f * i);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, f);
    const int32_t ids[4] = {39, 0, 17, 17};
    std::vector<float> out(4 * (k + 3), -7.f), row(k);
    embedding_gather(p, ids, 4, out.data(), k + 3);
    for (int i = 0; i < 4; ++i) {
      dequantize_row(p, ids[i], row.data());
      for (int64_t c = 0; c < k; ++c) EXPECT_EQ(out[i * (k + 3) + c], row[c]);
      for (int64_t c = k; c < k + 3; ++c) EXPECT_EQ(out[i * (k + 3) + c], -7.f);  // padding untouched
      if (f == WeightFormat::F32) {
        for (int64_t c = 0; c < k; ++c) EXPECT_EQ(row[c], w[ids[i] * k + c]);
      }
    }
    const int32_t bad[2] = {3, 40};
    try {
      embedding_gather(p, bad, 2, out.data(), k);
      FAIL() << "out-of-range id accepted";
    } catch (const std::out_of_range& e) {
      EXPECT_NE(std::string(e.what()).find("token id 40 at position 1"), std::string::npos) << e.what();
    }
    const int32_t neg[1] = {-1};
    EXPECT_THROW(embedding_gather(p, neg, 1, out.data(), k), std::out_of_range);
  }
}
