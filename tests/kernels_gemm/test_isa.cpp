// ISA detection, RECAP_FORCE_ISA parsing and set_active_isa validation.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/isa.h"

using namespace recap::kernels;

TEST(Isa, ParseNames) {
  EXPECT_EQ(parse_isa("ref"), Isa::Ref);
  EXPECT_EQ(parse_isa("avx2"), Isa::Avx2);
  EXPECT_EQ(parse_isa("avx512"), Isa::Avx512);
  EXPECT_THROW(parse_isa("AVX2"), std::invalid_argument);
  EXPECT_THROW(parse_isa(""), std::invalid_argument);
  EXPECT_THROW(parse_isa("avx512f"), std::invalid_argument);
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512}) EXPECT_EQ(parse_isa(isa_name(i)), i);
}

TEST(Isa, FeaturesAreConsistent) {
  const CpuFeatures& f = cpu_features();
  // Features the OS does not save state for must be reported as absent.
  if (!f.os_ymm) {
    EXPECT_FALSE(f.avx2 || f.fma);
  }
  if (!f.os_zmm) {
    EXPECT_FALSE(f.avx512f || f.avx512vnni || f.avx512bf16);
  }
  EXPECT_TRUE(isa_supported(Isa::Ref));
  EXPECT_TRUE(isa_supported(best_isa()));
  if (best_isa() == Isa::Avx512) {
    EXPECT_TRUE(isa_supported(Isa::Avx2));
  }
  std::printf("best ISA: %s (avx512vnni=%d avx512bf16=%d)\n", isa_name(best_isa()), f.avx512vnni,
              f.avx512bf16);
}

TEST(Isa, ForceValueParsing) {
  EXPECT_EQ(isa_from_force_value(nullptr), best_isa());
  EXPECT_EQ(isa_from_force_value(""), best_isa());
  EXPECT_EQ(isa_from_force_value("ref"), Isa::Ref);
  try {
    isa_from_force_value("sse9");
    FAIL() << "accepted an unknown ISA";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("RECAP_FORCE_ISA='sse9'"), std::string::npos) << e.what();
  }
  for (Isa i : {Isa::Avx2, Isa::Avx512}) {
    if (isa_supported(i))
      EXPECT_EQ(isa_from_force_value(isa_name(i)), i);
    else
      EXPECT_THROW(isa_from_force_value(isa_name(i)), std::runtime_error);
  }
}

TEST(Isa, ActiveIsaHonoursEnvironment) {
  const char* env = std::getenv("RECAP_FORCE_ISA");
  if (env && *env)
    EXPECT_EQ(active_isa(), parse_isa(env));
  else
    EXPECT_EQ(active_isa(), best_isa());
}

TEST(Isa, SetActiveRejectsUnsupported) {
  const Isa before = active_isa();
  EXPECT_THROW(set_active_isa(static_cast<Isa>(7)), std::runtime_error);
  for (Isa i : {Isa::Ref, Isa::Avx2, Isa::Avx512}) {
    if (isa_supported(i)) {
      set_active_isa(i);
      EXPECT_EQ(active_isa(), i);
    } else {
      EXPECT_THROW(set_active_isa(i), std::runtime_error);
    }
  }
  set_active_isa(before);
  EXPECT_EQ(active_isa(), before);
}
