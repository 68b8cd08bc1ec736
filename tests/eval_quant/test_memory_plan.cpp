// engine/memory_plan: the estimate's parts and the precision choice, on the tiny model's
// config and on the real model's shapes (the synthetic preset).
#include <gtest/gtest.h>
#include <stdlib.h>

#include "engine/bench.h"
#include "engine/errors.h"
#include "engine/memory_plan.h"
#include "kernels/gemm.h"
#include "models/config.h"

using namespace recap;
using kernels::WeightFormat;

namespace {
const std::string kTiny = std::string(RECAP_TEST_DATA) + "/tiny/llava_orig_with_vt_fp32";

engine::RunShape real_shape() {
  engine::RunShape s;
  s.prompt_positions = 616;
  s.max_new_tokens = 128;
  s.max_batch = 8;
  return s;
}
}  // namespace

TEST(MemoryPlan, WeightBytesOrderAndRealModelSizes) {
  const models::ModelConfig c = engine::synthetic_preset_config("llava-llama3-8b");
  const uint64_t f32 = engine::weight_memory_bytes(c, WeightFormat::F32),
                 bf16 = engine::weight_memory_bytes(c, WeightFormat::BF16),
                 int8 = engine::weight_memory_bytes(c, WeightFormat::Int8),
                 int4 = engine::weight_memory_bytes(c, WeightFormat::Int4);
  EXPECT_GT(f32, bf16);
  EXPECT_GT(bf16, int8);
  EXPECT_GT(int8, int4);
  // LLaVA-LLaMA3-8B: 8.03e9 decoder + 0.3e9 tower (23 of 24 layers) + 21e6 projector parameters.
  EXPECT_NEAR(static_cast<double>(f32) / 4, 8.33e9, 0.1e9);
  EXPECT_NEAR(static_cast<double>(bf16) / 2, 8.33e9, 0.1e9);
}

TEST(MemoryPlan, KvCacheIsWhatCaptionAllocates) {
  const models::ModelConfig c = engine::synthetic_preset_config("llava-llama3-8b");
  engine::RunShape s = real_shape();
  // (616 + 154 + 128) positions -> 57 blocks of 16 per sequence, 8 sequences; 32 layers x 8
  // kv heads x 128 x 2 (K and V) x 4 bytes per position.
  EXPECT_EQ(engine::kv_cache_blocks(c, s), 57 * 8);
  EXPECT_EQ(engine::estimate_memory(c, WeightFormat::Int8, s).kv_cache,
            57ull * 8 * 16 * 32 * 8 * 128 * 2 * 4);
  s.kv_cache_mb = 1024;
  EXPECT_EQ(engine::estimate_memory(c, WeightFormat::Int8, s).kv_cache, 1024ull << 20);
}

TEST(MemoryPlan, AutoPicksCacheThenInt8ThenInt4) {
  const models::ModelConfig c = engine::synthetic_preset_config("llava-llama3-8b");
  const engine::RunShape s = real_shape();
  const uint64_t int8 = engine::estimate_memory(c, WeightFormat::Int8, s).total();
  const uint64_t int4 = engine::estimate_memory(c, WeightFormat::Int4, s).total();
  engine::AvailableMemory plenty{64ull << 30, "test"}, between{(int8 + int4) / 2, "test"},
      none{1 << 20, "test"};
  auto ch = engine::choose_precision("auto", std::nullopt, c, s, plenty);
  EXPECT_EQ(ch.precision, WeightFormat::Int8);
  EXPECT_TRUE(ch.fits);
  EXPECT_EQ(ch.reason.rfind("auto: float checkpoint, ", 0), 0u) << ch.reason;
  ch = engine::choose_precision("auto", std::nullopt, c, s, between);
  EXPECT_EQ(ch.precision, WeightFormat::Int4);
  EXPECT_TRUE(ch.fits);
  EXPECT_EQ(ch.reason.rfind("auto: float checkpoint too large for int8 (", 0), 0u) << ch.reason;
  ch = engine::choose_precision("auto", WeightFormat::BF16, c, s, plenty);
  EXPECT_EQ(ch.precision, WeightFormat::BF16);
  EXPECT_EQ(ch.reason.rfind("auto: quantized cache, ", 0), 0u) << ch.reason;
  ch = engine::choose_precision("f32", std::nullopt, c, s, plenty);
  EXPECT_EQ(ch.precision, WeightFormat::F32);
  ch = engine::choose_precision("f32", std::nullopt, c, s, between);
  EXPECT_FALSE(ch.fits);
  EXPECT_NE(ch.error.find("would fit: int4 ("), std::string::npos) << ch.error;
  ch = engine::choose_precision("auto", std::nullopt, c, s, none);
  EXPECT_FALSE(ch.fits);
  EXPECT_NE(ch.error.find("no precision fits (int4 needs "), std::string::npos) << ch.error;
  EXPECT_THROW(engine::choose_precision("int3", std::nullopt, c, s, plenty), engine::UsageError);
}

TEST(MemoryPlan, AvailableMemoryOverrideAndMachine) {
  ::setenv("RECAP_MEMORY_AVAILABLE_MB", "1234", 1);
  auto a = engine::available_memory();
  EXPECT_EQ(a.bytes, 1234ull << 20);
  EXPECT_EQ(a.source, "RECAP_MEMORY_AVAILABLE_MB");
  ::setenv("RECAP_MEMORY_AVAILABLE_MB", "12x", 1);
  EXPECT_THROW(engine::available_memory(), engine::UsageError);
  ::unsetenv("RECAP_MEMORY_AVAILABLE_MB");
  a = engine::available_memory();
  EXPECT_GT(a.bytes, 0u);
  EXPECT_FALSE(a.source.empty());
}

TEST(MemoryPlan, PromptPositionsCountImageRows) {
  const models::ModelConfig c = models::load_model_config(kTiny);
  EXPECT_EQ(engine::prompt_positions(c, {1, 2, -200, 3}), 3 + c.vision.num_patches());
}
