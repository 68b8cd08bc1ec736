// ISA selection over synthetic CPUs (select_isa is pure), the requirements the variants' ISA
// flags imply, detection on this machine, RECAP_FORCE_ISA parsing and set_active_* validation.
#include <gtest/gtest.h>

#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/isa.h"

using namespace recap::kernels;

namespace {

FeatureSet set_of(std::initializer_list<Feature> fs) {
  FeatureSet s = 0;
  for (Feature f : fs) s |= feature_bit(f);
  return s;
}

CpuFeatures cpu(FeatureSet cpuid, uint64_t xcr0) {
  CpuFeatures c;
  c.cpuid = cpuid;
  c.xcr0 = xcr0;
  return c;
}

// CPUID feature sets of real CPUs (only the features recap models).
const FeatureSet kNehalem =
    set_of({Feature::Sse3, Feature::Ssse3, Feature::Sse41, Feature::Sse42, Feature::Popcnt});
const FeatureSet kHaswell =
    kNehalem | set_of({Feature::Xsave, Feature::Avx, Feature::Avx2, Feature::Fma, Feature::F16c,
                       Feature::Bmi1, Feature::Bmi2, Feature::Lzcnt, Feature::Movbe});
const FeatureSet kZen3 = kHaswell;  // AVX2/FMA/F16C/BMI2, no AVX-512
const FeatureSet kSkylakeX = kHaswell | set_of({Feature::Avx512F, Feature::Avx512Cd, Feature::Avx512Bw,
                                                Feature::Avx512Dq, Feature::Avx512Vl});
const FeatureSet kCascadeLake = kSkylakeX | set_of({Feature::Avx512Vnni});
const FeatureSet kIceLake =
    kCascadeLake | set_of({Feature::Avx512Vbmi, Feature::Avx512Vbmi2, Feature::Avx512Ifma,
                           Feature::Avx512Bitalg, Feature::Avx512Vpopcntdq});
const FeatureSet kZen4 = kIceLake | set_of({Feature::Avx512Bf16});

constexpr uint64_t kOsAvx = 0x7;      // XCR0 x87 | SSE | AVX
constexpr uint64_t kOsAvx512 = 0xe7;  // + opmask | ZMM_Hi256 | Hi16_ZMM

IsaChoice choice(Isa isa, bool vnni = false, bool bf16 = false) {
  return IsaChoice{isa, vnni, bf16};
}

}  // namespace

TEST(IsaSelect, RealCpus) {
  struct Case {
    const char* name;
    CpuFeatures cpu;
    IsaChoice want;
    const char* described;
  };
  const Case cases[] = {
      {"Nehalem (SSE4.2 only)", cpu(kNehalem, 0), choice(Isa::Ref), "ref"},
      {"Haswell", cpu(kHaswell, kOsAvx), choice(Isa::Avx2), "avx2"},
      {"Zen 3", cpu(kZen3, kOsAvx), choice(Isa::Avx2), "avx2"},
      {"Skylake-X", cpu(kSkylakeX, kOsAvx512), choice(Isa::Avx512), "avx512"},
      {"Cascade Lake", cpu(kCascadeLake, kOsAvx512), choice(Isa::Avx512, true), "avx512+vnni"},
      {"Ice Lake", cpu(kIceLake, kOsAvx512), choice(Isa::Avx512, true), "avx512+vnni"},
      {"Zen 4", cpu(kZen4, kOsAvx512), choice(Isa::Avx512, true, true), "avx512+vnni+bf16"},
      // The OS saves YMM but not opmask/ZMM state: AVX-512 would fault, never select it.
      {"Zen 4, OS without ZMM state", cpu(kZen4, kOsAvx), choice(Isa::Avx2), "avx2"},
      {"Skylake-X, OS without Hi16_ZMM", cpu(kSkylakeX, 0x67), choice(Isa::Avx2), "avx2"},
      // CR4.OSXSAVE clear (XGETBV unavailable, xcr0 reads as 0): no AVX at all.
      {"Zen 4, OS without XSAVE", cpu(kZen4, 0), choice(Isa::Ref), "ref"},
      // A hypervisor masking BMI2 (the avx2 files are compiled with -mbmi2).
      {"Haswell without BMI2", cpu(kHaswell & ~feature_bit(Feature::Bmi2), kOsAvx), choice(Isa::Ref), "ref"},
      {"Skylake-X without F16C", cpu(kSkylakeX & ~feature_bit(Feature::F16c), kOsAvx512), choice(Isa::Ref),
       "ref"},
      // BF16 without VNNI does not exist in silicon, but the two extensions are independent.
      {"AVX-512 + BF16 only", cpu(kSkylakeX | feature_bit(Feature::Avx512Bf16), kOsAvx512),
       choice(Isa::Avx512, false, true), "avx512+bf16"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const IsaChoice got = select_isa(c.cpu);
    EXPECT_EQ(got.isa, c.want.isa);
    EXPECT_EQ(got.avx512vnni, c.want.avx512vnni);
    EXPECT_EQ(got.avx512bf16, c.want.avx512bf16);
    EXPECT_EQ(describe(got), c.described);
    // Whatever is selected is runnable, everything above it is not.
    EXPECT_EQ(missing_features(c.cpu, got.isa), 0u) << feature_names(missing_features(c.cpu, got.isa));
    if (got.isa != Isa::Avx512) {
      EXPECT_NE(missing_features(c.cpu, Isa::Avx512), 0u);
      EXPECT_THROW(choice_for(c.cpu, Isa::Avx512), IsaUnavailableError);
    }
  }
}

TEST(IsaSelect, RequirementsAreWhatTheFlagsEnable) {
  // cmake/RecapLayer.cmake: avx2 = -mavx2 -mfma -mf16c -mbmi2 (implying SSE3..4.2, POPCNT,
  // AVX, XSAVE); avx512 adds F/BW/VL/DQ only; each extension adds exactly its own feature.
  const std::string avx2 = "sse3 ssse3 sse4.1 sse4.2 popcnt xsave avx avx2 fma f16c bmi2";
  EXPECT_EQ(feature_names(required_features(Isa::Ref)), "");
  EXPECT_EQ(feature_names(required_features(Isa::Avx2)), avx2);
  EXPECT_EQ(feature_names(required_features(Isa::Avx512)), avx2 + " avx512f avx512bw avx512vl avx512dq");
  EXPECT_EQ(required_features(IsaExtension::Avx512Vnni),
            required_features(Isa::Avx512) | feature_bit(Feature::Avx512Vnni));
  EXPECT_EQ(required_features(IsaExtension::Avx512Bf16),
            required_features(Isa::Avx512) | feature_bit(Feature::Avx512Bf16));
}

TEST(IsaSelect, UnavailableVariantErrorsNameTheMissingFeatures) {
  try {
    choice_for(cpu(kHaswell, kOsAvx), Isa::Avx512);
    FAIL() << "Haswell accepted avx512";
  } catch (const IsaUnavailableError& e) {
    EXPECT_STREQ(e.what(),
                 "this CPU/OS cannot run the avx512 kernels: missing avx512f avx512bw avx512vl avx512dq");
  }
  try {
    choice_for(cpu(kZen4, kOsAvx), Isa::Avx512);
    FAIL() << "accepted avx512 without OS ZMM state";
  } catch (const IsaUnavailableError& e) {
    EXPECT_STREQ(
        e.what(),
        "this CPU/OS cannot run the avx512 kernels: missing avx512f avx512bw avx512vl avx512dq (the CPU "
        "has them but the OS has not enabled their registers in XCR0)");
  }
  try {
    choice_for(cpu(kNehalem, 0), Isa::Avx2);
    FAIL() << "Nehalem accepted avx2";
  } catch (const IsaUnavailableError& e) {
    EXPECT_STREQ(e.what(), "this CPU/OS cannot run the avx2 kernels: missing xsave avx avx2 fma f16c bmi2");
  }
  EXPECT_EQ(choice_for(cpu(kCascadeLake, kOsAvx512), Isa::Avx2), choice(Isa::Avx2));
  EXPECT_EQ(choice_for(cpu(kNehalem, 0), Isa::Ref), choice(Isa::Ref));
}

TEST(IsaSelect, UsableNeedsOsState) {
  const CpuFeatures no_zmm = cpu(kZen4, kOsAvx);
  EXPECT_TRUE(no_zmm.advertises(Feature::Avx512F));
  EXPECT_FALSE(no_zmm.usable(Feature::Avx512F));
  EXPECT_TRUE(no_zmm.usable(Feature::Avx2));
  EXPECT_TRUE(no_zmm.usable(Feature::Bmi2));  // scalar: no register state needed
  const CpuFeatures no_xsave = cpu(kHaswell, 0);
  EXPECT_FALSE(no_xsave.usable(Feature::Avx));
  EXPECT_TRUE(no_xsave.usable(Feature::Sse42));
}

TEST(Isa, ParseNames) {
  EXPECT_EQ(parse_isa("ref"), Isa::Ref);
  EXPECT_EQ(parse_isa("avx2"), Isa::Avx2);
  EXPECT_EQ(parse_isa("avx512"), Isa::Avx512);
  EXPECT_THROW(parse_isa("AVX2"), std::invalid_argument);
  EXPECT_THROW(parse_isa(""), std::invalid_argument);
  EXPECT_THROW(parse_isa("avx512f"), std::invalid_argument);
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512}) EXPECT_EQ(parse_isa(isa_name(i)), i);
}

TEST(Isa, ThisMachine) {
  const CpuFeatures& f = cpu_features();
  const IsaChoice best = select_isa(f);
  EXPECT_EQ(best.isa, best_isa());
  EXPECT_TRUE(isa_supported(Isa::Ref));
  EXPECT_TRUE(isa_supported(best_isa()));
  if (best_isa() == Isa::Avx512) {
    EXPECT_TRUE(isa_supported(Isa::Avx2));
  }
  std::printf("this machine: selected %s; usable features: %s; xcr0=0x%llx\n", describe(best).c_str(),
              feature_names(f.usable_set()).c_str(), static_cast<unsigned long long>(f.xcr0));
}

TEST(Isa, ForceValueParsing) {
  const IsaChoice best = select_isa(cpu_features());
  EXPECT_EQ(isa_from_force_value(nullptr), best);
  EXPECT_EQ(isa_from_force_value(""), best);
  EXPECT_EQ(isa_from_force_value("ref"), choice(Isa::Ref));
  try {
    isa_from_force_value("sse9");
    FAIL() << "accepted an unknown ISA";
  } catch (const IsaUnavailableError& e) {
    EXPECT_STREQ(e.what(), "RECAP_FORCE_ISA='sse9' is not one of ref, avx2, avx512");
  }
  for (Isa i : {Isa::Avx2, Isa::Avx512}) {
    if (isa_supported(i)) {
      EXPECT_EQ(isa_from_force_value(isa_name(i)), choice_for(cpu_features(), i));
    } else {
      try {
        isa_from_force_value(isa_name(i));
        FAIL() << "accepted " << isa_name(i);
      } catch (const IsaUnavailableError& e) {
        const std::string want = std::string("RECAP_FORCE_ISA=") + isa_name(i) + ": this CPU/OS cannot run " +
                                 isa_name(i) + ", missing ";
        EXPECT_EQ(std::string(e.what()).substr(0, want.size()), want) << e.what();
        EXPECT_NE(std::string(e.what()).find("(best available: " + describe(best) + ")"), std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(Isa, ActiveIsaHonoursEnvironment) {
  const char* env = std::getenv("RECAP_FORCE_ISA");
  if (env && *env)
    EXPECT_EQ(active_choice(), choice_for(cpu_features(), parse_isa(env)));
  else
    EXPECT_EQ(active_choice(), select_isa(cpu_features()));
}

TEST(Isa, SetActiveRejectsUnsupported) {
  const IsaChoice before = active_choice();
  EXPECT_THROW(set_active_isa(static_cast<Isa>(7)), IsaUnavailableError);
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512}) {
    if (isa_supported(i)) {
      set_active_isa(i);
      EXPECT_EQ(active_choice(), choice_for(cpu_features(), i));
    } else {
      EXPECT_THROW(set_active_isa(i), IsaUnavailableError);
    }
  }
  // Extensions only with their variant, and only when runnable.
  EXPECT_THROW(set_active_choice(choice(Isa::Avx2, true, false)), IsaUnavailableError);
  EXPECT_THROW(set_active_choice(choice(Isa::Ref, false, true)), IsaUnavailableError);
  if (isa_supported(Isa::Avx512)) {
    set_active_choice(choice(Isa::Avx512));
    EXPECT_EQ(active_choice(), choice(Isa::Avx512));
    const IsaChoice full = choice_for(cpu_features(), Isa::Avx512);
    if (!full.avx512vnni) {
      EXPECT_THROW(set_active_choice(choice(Isa::Avx512, true, false)), IsaUnavailableError);
    }
    if (!full.avx512bf16) {
      EXPECT_THROW(set_active_choice(choice(Isa::Avx512, false, true)), IsaUnavailableError);
    }
  }
  set_active_choice(before);
  EXPECT_EQ(active_choice(), before);
}
