// Run under `qemu-x86_64 -cpu <model>` by the `portability` CTest label: the engine must select
// exactly RECAP_EXPECT_ISA on that CPU model (avx2 on Haswell, ref on Nehalem), refuse to be
// forced onto a variant the model lacks (a typed error, not SIGILL), and the kernels it
// selected must run and agree with the scalar reference under emulation.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/isa.h"

using namespace recap::kernels;

namespace {

std::string expected_isa() {
  const char* e = std::getenv("RECAP_EXPECT_ISA");
  return e ? e : "";
}

}  // namespace

TEST(Portability, SelectsTheExpectedVariant) {
  const std::string want = expected_isa();
  ASSERT_FALSE(want.empty()) << "set RECAP_EXPECT_ISA to the variant this CPU model must select";
  const CpuFeatures& cpu = cpu_features();
  std::printf("CPU model usable features: %s; xcr0=0x%llx; selected %s\n",
              feature_names(cpu.usable_set()).c_str(), static_cast<unsigned long long>(cpu.xcr0),
              describe(select_isa(cpu)).c_str());
  EXPECT_EQ(describe(select_isa(cpu)), want);
  ASSERT_EQ(std::getenv("RECAP_FORCE_ISA"), nullptr) << "the default selection is under test";
  EXPECT_EQ(describe(active_choice()), want);
}

TEST(Portability, ForcingAMissingVariantIsATypedError) {
  const Isa best = select_isa(cpu_features()).isa;
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (isa <= best) continue;
    try {
      isa_from_force_value(isa_name(isa));
      ADD_FAILURE() << "RECAP_FORCE_ISA=" << isa_name(isa) << " accepted on a CPU without it";
    } catch (const IsaUnavailableError& e) {
      const std::string prefix = std::string("RECAP_FORCE_ISA=") + isa_name(isa) +
                                 ": this CPU/OS cannot run " + isa_name(isa) + ", missing ";
      EXPECT_EQ(std::string(e.what()).substr(0, prefix.size()), prefix) << e.what();
    }
    EXPECT_THROW(set_active_isa(isa), IsaUnavailableError);
  }
}

TEST(Portability, SelectedGemmMatchesReference) {
  // int8/int4 are bit-identical on every variant; f32/bf16 within rounding of the reference.
  const int64_t m = 11, n = 53, k = 300;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(m * k), w(n * k), bias(n);
  for (float& v : x) v = nd(rng);
  for (float& v : w) v = 0.05f * nd(rng);
  for (float& v : bias) v = nd(rng);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    SCOPED_TRACE(weight_format_name(f));
    const PackedWeight p = pack_weight(w.data(), SrcType::F32, n, k, f);
    std::vector<float> y(m * n), yr(m * n);
    gemm(x.data(), m, k, p, bias.data(), y.data(), n);
    ref::gemm(x.data(), m, k, p, bias.data(), yr.data(), n);
    if (f == WeightFormat::Int8 || f == WeightFormat::Int4) {
      EXPECT_EQ(0, std::memcmp(y.data(), yr.data(), y.size() * 4));
    } else {
      for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(y[i], yr[i], 1e-3f * (1.f + std::fabs(yr[i]))) << i;
    }
  }
}
