// The dispatched gemm() under EVERY kernel variant this CPU/OS can run (whatever
// RECAP_FORCE_ISA says: each test sets the variants itself), against the scalar reference
// ref::gemm(), on odd shapes with junk-filled padding. Variants: ref, avx2, avx512 without
// extensions (the AVX2 fallbacks for bf16/int8/int4), avx512+vnni, avx512+bf16. The ones this
// machine cannot run are logged with the missing features (Gemm.VariantCoverage), never skipped
// silently.
//   int8 / int4: bit-identical (exact int32 group sums, same float steps; docs/NUMERICS.md).
//   f32 / bf16:  |y - y_ref| <= 2 (K + 2) eps (sum_k |x_k w_k| + |bias|)  (both are within
//                gamma_K of the exact product; bf16 uses the bf16-rounded x).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/isa.h"
#include "kernels/weight_formats.h"

using namespace recap::kernels;

namespace {

constexpr WeightFormat kFormats[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8,
                                     WeightFormat::Int4};
const float kJunk = std::numeric_limits<float>::quiet_NaN();
constexpr uint32_t kSentinel = 0x7fc0beefu;  // a NaN bit pattern the kernels never produce

struct Case {
  int64_t m, n, k;
  bool bias;
};

std::vector<float> gaussian(size_t count, uint32_t seed, float sd = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(count);
  for (auto& x : v) x = nd(rng);
  return v;
}

float sentinel() {
  float f;
  std::memcpy(&f, &kSentinel, 4);
  return f;
}
bool is_sentinel(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b == kSentinel;
}

// Runs gemm and ref::gemm on X [m, k] padded to ldx with NaN junk, Y padded to ldy with a
// sentinel, and checks: padding untouched, results within the format's contract.
void check_case(WeightFormat fmt, const Case& c, uint32_t seed) {
  const int64_t ldx = c.k + 3, ldy = c.n + 5;
  std::vector<float> x(c.m * ldx, kJunk);
  const std::vector<float> xv = gaussian(c.m * c.k, seed);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.k; ++j) x[i * ldx + j] = xv[i * c.k + j];
  const std::vector<float> w = gaussian(c.n * c.k, seed + 1, 0.05f);
  const std::vector<float> bias = gaussian(c.n, seed + 2);
  const PackedWeight p = pack_weight(w.data(), SrcType::F32, c.n, c.k, fmt);
  std::vector<float> y(c.m * ldy, sentinel()), yr(c.m * ldy, sentinel());
  const float* b = c.bias ? bias.data() : nullptr;
  gemm(x.data(), c.m, ldx, p, b, y.data(), ldy);
  ref::gemm(x.data(), c.m, ldx, p, b, yr.data(), ldy);

  std::vector<float> wrow(c.k);
  const float eps = std::numeric_limits<float>::epsilon();
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = c.n; j < ldy; ++j) ASSERT_TRUE(is_sentinel(y[i * ldy + j])) << "padding written";
    for (int64_t j = 0; j < c.n; ++j) {
      const float got = y[i * ldy + j], want = yr[i * ldy + j];
      ASSERT_FALSE(std::isnan(got)) << "NaN leaked at " << i << "," << j;
      if (fmt == WeightFormat::Int8 || fmt == WeightFormat::Int4) {
        uint32_t a, bb;
        std::memcpy(&a, &got, 4);
        std::memcpy(&bb, &want, 4);
        ASSERT_EQ(a, bb) << weight_format_name(fmt) << " m=" << c.m << " n=" << c.n << " k=" << c.k << " at ("
                         << i << "," << j << "): " << got << " vs " << want;
      } else {
        dequantize_row(p, j, wrow.data());
        double mag = c.bias ? std::fabs(bias[j]) : 0.0;
        for (int64_t t = 0; t < c.k; ++t) {
          float xt = xv[i * c.k + t];
          if (fmt == WeightFormat::BF16) xt = wf::bf16_to_f32(wf::f32_to_bf16(xt));
          mag += std::fabs(double(xt) * wrow[t]);
        }
        const double tol = 2.0 * (c.k + 2) * eps * mag;
        ASSERT_LE(std::fabs(double(got) - want), tol)
            << weight_format_name(fmt) << " m=" << c.m << " n=" << c.n << " k=" << c.k << " at (" << i << ","
            << j << ")";
      }
    }
  }
}

// Every variant choice worth testing, in order; *skipped gets "<variant>: missing <features>"
// for those this CPU/OS cannot run.
std::vector<IsaChoice> gemm_variants(std::vector<std::string>* skipped = nullptr) {
  const CpuFeatures& cpu = cpu_features();
  const IsaChoice candidates[] = {{Isa::Ref, false, false},
                                  {Isa::Avx2, false, false},
                                  {Isa::Avx512, false, false},
                                  {Isa::Avx512, true, false},
                                  {Isa::Avx512, false, true}};
  std::vector<IsaChoice> out;
  for (const IsaChoice& c : candidates) {
    FeatureSet missing = missing_features(cpu, c.isa);
    if (c.avx512vnni) missing |= missing_features(cpu, IsaExtension::Avx512Vnni);
    if (c.avx512bf16) missing |= missing_features(cpu, IsaExtension::Avx512Bf16);
    if (missing == 0)
      out.push_back(c);
    else if (skipped)
      skipped->push_back(describe(c) + ": missing " + feature_names(missing));
  }
  return out;
}

// Runs body() once per runnable variant with that variant active; restores the active choice.
template <class Body>
void for_each_variant(Body body) {
  const IsaChoice saved = active_choice();
  for (const IsaChoice& v : gemm_variants()) {
    set_active_choice(v);
    SCOPED_TRACE("variant " + describe(v));
    body();
    if (::testing::Test::HasFatalFailure()) break;
  }
  set_active_choice(saved);
}

}  // namespace

TEST(Gemm, VariantCoverage) {
  std::vector<std::string> skipped;
  const std::vector<IsaChoice> run = gemm_variants(&skipped);
  std::string ran;
  for (const IsaChoice& v : run) ran += (ran.empty() ? "" : ", ") + describe(v);
  std::printf("gemm variants tested against ref: %s\n", ran.c_str());
  for (const std::string& s : skipped) std::printf("gemm variant NOT tested on this CPU/OS: %s\n", s.c_str());
  // Always at least ref, plus whatever this machine selects by default.
  ASSERT_FALSE(run.empty());
  EXPECT_EQ(run.front(), IsaChoice{});
  EXPECT_EQ(run.size() + skipped.size(), 5u);
  if (select_isa(cpu_features()).isa != Isa::Ref) {
    EXPECT_GE(run.size(), 2u);
  }
  if (!skipped.empty()) {
    RecordProperty("skipped_variants", static_cast<int>(skipped.size()));
  }
}

TEST(Gemm, OddShapesMatchReference) {
  for_each_variant([] {
    uint32_t seed = 1;
    for (WeightFormat fmt : kFormats)
      for (int64_t m = 1; m <= 17; ++m)
        for (int64_t n : {1, 7, 16, 33, 67})
          for (int64_t k : {1, 31, 64, 100, 130}) {
            SCOPED_TRACE(std::string(weight_format_name(fmt)) + " m=" + std::to_string(m) +
                         " n=" + std::to_string(n) + " k=" + std::to_string(k));
            check_case(fmt, {m, n, k, (m + n + k) % 2 == 0}, seed++);
            if (HasFatalFailure()) return;
          }
  });
}

TEST(Gemm, LargeShapesCrossKBlocksChunksAndThreads) {
  // k = 2100 crosses the K-blocks of every format; n = 1100 spans several N-chunks with a
  // partial last panel; m = 37 and m = 150 with n = 40 exercise M-tiles and M-chunking.
  for_each_variant([] {
    for (WeightFormat fmt : kFormats) {
      SCOPED_TRACE(weight_format_name(fmt));
      check_case(fmt, {37, 1100, 2100, true}, 100);
      check_case(fmt, {150, 40, 300, false}, 200);
      if (HasFatalFailure()) return;
    }
  });
}

TEST(Gemm, BatchedDecodeShapesStreamPanelsAcrossKBlocks) {
  // Batched decode (M <= 16 rows, issue 16) streams each panel group over all of K with the
  // next K-block prefetched by turns: k = 2100 crosses the int8 (512) and int4 (1024) K-blocks
  // and ends in a partial block and a partial group; n = 1000 gives 1 and 2 threads several
  // N-chunks of full 3-panel groups (the asm tiles) and a partial last panel (1000 = 62.5 x
  // 16). Every M from 1 to 17 (one, two and three M-tiles, full and partial), bit-identical to
  // ref::gemm with 1 and 2 threads, bias on odd M.
  const int64_t n = 1000, k = 2100;
  const std::vector<float> w = gaussian(n * k, 51, 0.05f);
  const std::vector<float> xall = gaussian(17 * k, 52);
  const std::vector<float> bias = gaussian(n, 53);
  const int saved = omp_get_max_threads();
  for (WeightFormat fmt : {WeightFormat::Int8, WeightFormat::Int4}) {
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
    for (int64_t m = 1; m <= 17; ++m) {
      const float* b = m % 2 ? bias.data() : nullptr;
      std::vector<float> yr(m * n);
      ref::gemm(xall.data(), m, k, p, b, yr.data(), n);
      for_each_variant([&] {
        for (int threads : {1, 2}) {
          omp_set_num_threads(threads);
          std::vector<float> y(m * n, sentinel());
          gemm(xall.data(), m, k, p, b, y.data(), n);
          ASSERT_EQ(0, std::memcmp(y.data(), yr.data(), y.size() * 4))
              << weight_format_name(fmt) << " m=" << m << " threads=" << threads;
        }
      });
      omp_set_num_threads(saved);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Gemm, ExtremeQuantizedValuesStayExact) {
  // The exactness margins of the int8/int4 kernels at their limits: weights of +-1 quantize to
  // the format's extreme levels (int8 +-127; int4 -8, nibble 0, for a group's first extreme
  // and +7, nibble 15, for the opposite sign) and activations of +-1 to +-127, so the AVX2 sign
  // trick meets its largest pair sums (2 * 127 * 127 = 32258) and the int4 int16 group sums
  // their largest lanes (8 units x 2 x 15 x 127 = 30480); a saturating or wrapping step
  // anywhere shows as a difference from ref::gemm's plain int32 sums. M 1-9 covers full 4- and
  // 8-row tiles and partial ones, n = 40 full panels and a partial one, k = 300 whole groups
  // and a partial last group.
  const int64_t n = 40, k = 300;
  std::mt19937 rng(61);
  // kind 0: all +1, 1: all -1, 2: random signs, 3: -1 except +1 at the start of every 32
  // values (int4 maps a group's first extreme to -8, nibble 0, so the 31 others become +7,
  // nibble 15: the largest int4 lanes).
  auto pattern = [&](int64_t count, int kind) {
    std::vector<float> v(count);
    for (int64_t i = 0; i < count; ++i)
      v[i] = kind == 0   ? 1.f
             : kind == 1 ? -1.f
             : kind == 2 ? (rng() & 1 ? 1.f : -1.f)
                         : (i % k % 32 == 0 ? 1.f : -1.f);
    return v;
  };
  for_each_variant([&] {
    for (WeightFormat fmt : {WeightFormat::Int8, WeightFormat::Int4})
      for (int wkind = 0; wkind < 4; ++wkind) {
        const std::vector<float> w = pattern(n * k, wkind);
        const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
        for (int xkind = 0; xkind < 3; ++xkind)
          for (int64_t m : {1, 2, 3, 4, 5, 8, 9}) {
            const std::vector<float> x = pattern(m * k, xkind);
            std::vector<float> y(m * n, sentinel()), yr(m * n);
            gemm(x.data(), m, k, p, nullptr, y.data(), n);
            ref::gemm(x.data(), m, k, p, nullptr, yr.data(), n);
            ASSERT_EQ(0, std::memcmp(y.data(), yr.data(), y.size() * 4))
                << weight_format_name(fmt) << " weights " << wkind << " activations " << xkind << " m=" << m;
          }
      }
  });
}

TEST(Gemm, ResultsIndependentOfThreadCount) {
  const int64_t m = 20, n = 700, k = 520;
  const std::vector<float> x = gaussian(m * k, 5), w = gaussian(n * k, 6, 0.05f);
  const int saved = omp_get_max_threads();
  for_each_variant([&] {
    for (WeightFormat fmt : kFormats) {
      const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
      std::vector<float> y1(m * n), y2(m * n);
      omp_set_num_threads(1);
      gemm(x.data(), m, k, p, nullptr, y1.data(), n);
      omp_set_num_threads(std::max(2, saved));
      gemm(x.data(), m, k, p, nullptr, y2.data(), n);
      EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << weight_format_name(fmt);
    }
    omp_set_num_threads(saved);
  });
}

TEST(Gemm, ReferenceAgreesWithDoublePrecisionProduct) {
  // Guards the reference itself: f32 within gamma_K, quantized formats within their
  // quantization error (output NMSE against the exact f32-weight product).
  const int64_t m = 9, n = 50, k = 777;
  const std::vector<float> x = gaussian(m * k, 11), w = gaussian(n * k, 12, 0.05f);
  std::vector<double> exact(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += double(x[i * k + t]) * w[j * k + t];
      exact[i * n + j] = s;
    }
  const double bound[] = {1e-12, 2e-5, 5e-4, 3e-2};
  int fi = 0;
  for (WeightFormat fmt : kFormats) {
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
    std::vector<float> y(m * n);
    ref::gemm(x.data(), m, k, p, nullptr, y.data(), n);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < m * n; ++i) {
      err += (y[i] - exact[i]) * (y[i] - exact[i]);
      ref += exact[i] * exact[i];
    }
    std::printf("%s GEMM output NMSE vs exact f32 product: %.3e\n", weight_format_name(fmt), err / ref);
    EXPECT_LE(err / ref, bound[fi++]) << weight_format_name(fmt);
  }
}

TEST(Gemm, NonFiniteActivationsPoisonOnlyTheirRow) {
  const int64_t m = 3, n = 20, k = 70;
  std::vector<float> x = gaussian(m * k, 21);
  const std::vector<float> w = gaussian(n * k, 22, 0.05f);
  x[1 * k + 13] = std::numeric_limits<float>::infinity();
  for_each_variant([&] {
    for (WeightFormat fmt : kFormats) {
      const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
      std::vector<float> y(m * n), yr(m * n);
      gemm(x.data(), m, k, p, nullptr, y.data(), n);
      ref::gemm(x.data(), m, k, p, nullptr, yr.data(), n);
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_FALSE(std::isfinite(y[n + j])) << weight_format_name(fmt);
        EXPECT_TRUE(std::isfinite(y[j]) && std::isfinite(y[2 * n + j])) << weight_format_name(fmt);
      }
    }
  });
}

TEST(Gemm, ZeroRowsAndZeroActivations) {
  const int64_t n = 19, k = 40;
  const std::vector<float> w = gaussian(n * k, 31);
  std::vector<float> x(2 * k, 0.f), y(2 * n, 5.f);
  for_each_variant([&] {
    for (WeightFormat fmt : kFormats) {
      const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, fmt);
      std::fill(y.begin(), y.end(), 5.f);
      gemm(x.data(), 0, k, p, nullptr, y.data(), n);  // m = 0: nothing written
      EXPECT_EQ(y[0], 5.f);
      gemm(x.data(), 2, k, p, nullptr, y.data(), n);
      for (float v : y) EXPECT_EQ(v, 0.f) << weight_format_name(fmt);
    }
  });
}

TEST(Gemm, RejectsBadArguments) {
  const std::vector<float> w = gaussian(8 * 16, 41);
  const PackedWeight p = pack_weight(w.data(), SrcType::F32, 8, 16, WeightFormat::Int8);
  std::vector<float> x(4 * 16), y(4 * 8);
  try {
    gemm(x.data(), 4, 15, p, nullptr, y.data(), 8);
    FAIL() << "ldx < k accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ldx 15 < k 16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gemm(x.data(), 4, 16, p, nullptr, y.data(), 7), std::invalid_argument);
  EXPECT_THROW(gemm(x.data(), -1, 16, p, nullptr, y.data(), 8), std::invalid_argument);
  EXPECT_THROW(ref::gemm(x.data(), 4, 15, p, nullptr, y.data(), 8), std::invalid_argument);
  PackedWeight empty;
  EXPECT_THROW(gemm(x.data(), 4, 16, empty, nullptr, y.data(), 8), std::invalid_argument);
  const PackedWeight truncated = PackedWeight::view(WeightFormat::Int8, 8, 16, p.data.data(), p.data.size());
  PackedWeight lying = PackedWeight::view(WeightFormat::Int8, 8, 16, p.data.data(), p.data.size());
  lying.n = 100;  // claims more rows than its bytes hold
  EXPECT_THROW(gemm(x.data(), 4, 16, lying, nullptr, y.data(), 100), std::invalid_argument);
  EXPECT_NO_THROW(gemm(x.data(), 4, 16, truncated, nullptr, y.data(), 8));
}
