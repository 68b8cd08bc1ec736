// LLaMA decoder (+ image splice) against the transformers goldens, for every tiny layout/dtype.
#include <gtest/gtest.h>

#include <algorithm>

#include "golden_util.h"

namespace recap::models::testing {
namespace {

constexpr int64_t kNew = 16;

// Projector output of the golden's spliced image, from a batch-of-1 pass (as the golden does).
std::vector<float> image_features(const LlavaModel& m) {
  const ModelConfig& c = m.config();
  const int64_t S = c.vision.image_size, P = c.vision.num_patches();
  const int64_t index = golden_i64("llm.image_index").at(0);
  std::vector<float> pixels = golden_pixels();
  std::vector<float> f(static_cast<size_t>(P * c.text.hidden));
  m.encode_images(pixels.data() + index * 3 * S * S, 1, f.data());
  return f;
}

class LlmGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LlmGolden, ImagePromptPrefillAndGreedy) {
  Loaded l = load_tiny(GetParam());
  const std::vector<float> feats = image_features(*l.model);
  EXPECT_TRUE(all_close(feats, golden_f32("llm.image_features")));
  Generation g = generate(*l.model, golden_i64("llm.input_ids"), feats.data(), 1, kNew);
  EXPECT_TRUE(all_close(g.inputs_embeds, golden_f32("llm.inputs_embeds")));
  EXPECT_TRUE(all_close(g.hidden_states, golden_f32("llm.hidden_states")));
  EXPECT_TRUE(all_close(g.logits, golden_f32("llm.logits")));
  EXPECT_EQ(g.ids, golden_i64("gen.ids"));
}

TEST_P(LlmGolden, TextOnlyPrefillAndGreedy) {
  Loaded l = load_tiny(GetParam());
  Generation g = generate(*l.model, golden_i64("text_only.input_ids"), nullptr, 0, kNew);
  EXPECT_TRUE(all_close(g.hidden_states, golden_f32("text_only.hidden_states")));
  EXPECT_TRUE(all_close(g.logits, golden_f32("text_only.logits")));
  const int64_t V = l.model->config().text.vocab;
  std::vector<float> last(g.logits.end() - V, g.logits.end());
  EXPECT_TRUE(all_close(last, golden_f32("text_only.logits_last")));
  EXPECT_EQ(g.ids, golden_i64("text_only.gen_ids"));
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, LlmGolden,
                         ::testing::Values("llava_orig_fp32", "llava_orig_bf16", "llava_orig_fp16",
                                           "llava_orig_with_vt_fp32", "llava_hf_fp32", "llava_hf_bf16",
                                           "llava_hf_fp16"));

// llava-hf marks the image with image_token_index (1023 in the tiny config) instead of -200.
TEST(LlmGoldenHf, ImageTokenIndexIds) {
  Loaded l = load_tiny("llava_hf_fp32");
  ASSERT_EQ(l.model->config().image_token_index, 1023);
  const std::vector<float> feats = image_features(*l.model);
  Generation g = generate(*l.model, golden_i64("llm.input_ids_hf"), feats.data(), 1, kNew);
  EXPECT_TRUE(all_close(g.inputs_embeds, golden_f32("llm.inputs_embeds")));
  EXPECT_TRUE(all_close(g.logits, golden_f32("llm.logits")));
  EXPECT_EQ(g.ids, golden_i64("gen.ids"));
}

// Prefill split over several forward calls (chunked prefill) gives the same logits.
TEST(LlmGoldenChunks, ChunkedPrefill) {
  Loaded l = load_tiny("llava_orig_fp32");
  const TextConfig& t = l.model->config().text;
  const std::vector<float> feats = image_features(*l.model);
  const std::vector<int64_t> ids = golden_i64("llm.input_ids");
  const int64_t N = l.model->spliced_length(ids);
  std::vector<float> embeds(static_cast<size_t>(N * t.hidden));
  l.model->splice_embeddings(ids, feats.data(), 1, embeds.data());
  engine::KvCachePool pool(engine::KvCacheShape::for_text(t, kernels::KvDType::F32, 4), 16);
  std::vector<int32_t> table = pool.allocate(N);
  std::vector<float> logits(static_cast<size_t>(N * t.vocab));
  int64_t done = 0;
  for (int64_t n : {7, 1, 13, 10}) {
    SeqChunk c;
    c.embeds = embeds.data() + done * t.hidden;
    c.n_tokens = n;
    c.start_pos = done;
    c.block_table = table.data();
    c.all_logits = true;
    ASSERT_EQ(l.model->forward({c}, pool.views(), logits.data() + done * t.vocab), n);
    done += n;
  }
  ASSERT_EQ(done, N);
  EXPECT_TRUE(all_close(logits, golden_f32("llm.logits")));
}

// Two sequences prefilled in one call and decoded together (one token each per step) give
// each sequence's own greedy ids: batching does not change results.
TEST(LlmGoldenChunks, BatchedPrefillAndDecode) {
  Loaded l = load_tiny("llava_hf_bf16");
  const TextConfig& t = l.model->config().text;
  const int64_t V = t.vocab;
  const std::vector<float> feats = image_features(*l.model);
  const std::vector<int64_t> ids_a = golden_i64("llm.input_ids");
  const std::vector<int64_t> ids_b = golden_i64("text_only.input_ids");
  const int64_t Na = l.model->spliced_length(ids_a), Nb = l.model->spliced_length(ids_b);
  std::vector<float> ea(static_cast<size_t>(Na * t.hidden)), eb(static_cast<size_t>(Nb * t.hidden));
  l.model->splice_embeddings(ids_a, feats.data(), 1, ea.data());
  l.model->splice_embeddings(ids_b, nullptr, 0, eb.data());

  engine::KvCachePool pool(engine::KvCacheShape::for_text(t, kernels::KvDType::F32, 8), 32);
  std::vector<int32_t> ta = pool.allocate(Na + kNew), tb = pool.allocate(Nb + kNew);
  std::swap(ta[0], tb[1]);  // interleave the two sequences' blocks

  SeqChunk a, b;
  a.embeds = ea.data();
  a.n_tokens = Na;
  a.block_table = ta.data();
  a.all_logits = true;
  b.embeds = eb.data();
  b.n_tokens = Nb;
  b.block_table = tb.data();
  std::vector<float> logits(static_cast<size_t>((Na + 1) * V));
  ASSERT_EQ(l.model->forward({a, b}, pool.views(), logits.data()), Na + 1);
  std::vector<float> la(logits.begin(), logits.begin() + Na * V);
  EXPECT_TRUE(all_close(la, golden_f32("llm.logits")));
  std::vector<float> lb(logits.begin() + Na * V, logits.end());
  EXPECT_TRUE(all_close(lb, golden_f32("text_only.logits_last")));

  std::vector<int64_t> gen_a, gen_b;
  int32_t next[2] = {static_cast<int32_t>(argmax(logits.data() + (Na - 1) * V, V)),
                     static_cast<int32_t>(argmax(logits.data() + Na * V, V))};
  std::vector<float> step(static_cast<size_t>(2 * V));
  for (int64_t i = 0; i < kNew; ++i) {
    gen_a.push_back(next[0]);
    gen_b.push_back(next[1]);
    SeqChunk sa, sb;
    sa.ids = &next[0];
    sa.n_tokens = 1;
    sa.start_pos = Na + i;
    sa.block_table = ta.data();
    sb.ids = &next[1];
    sb.n_tokens = 1;
    sb.start_pos = Nb + i;
    sb.block_table = tb.data();
    ASSERT_EQ(l.model->forward({sa, sb}, pool.views(), step.data()), 2);
    next[0] = static_cast<int32_t>(argmax(step.data(), V));
    next[1] = static_cast<int32_t>(argmax(step.data() + V, V));
  }
  EXPECT_EQ(gen_a, golden_i64("gen.ids"));
  EXPECT_EQ(gen_b, golden_i64("text_only.gen_ids"));
}

TEST(LlmErrors, BadInputsAreClearErrors) {
  Loaded l = load_tiny("llava_orig_fp32");
  const TextConfig& t = l.model->config().text;
  engine::KvCachePool pool(engine::KvCacheShape::for_text(t, kernels::KvDType::F32, 8), 4);
  std::vector<int32_t> table = pool.allocate(16);
  std::vector<float> logits(static_cast<size_t>(4 * t.vocab));
  int32_t ids[2] = {1, 5};
  SeqChunk c;
  c.ids = ids;
  c.n_tokens = 2;
  c.block_table = table.data();
  // One KV view per layer is required.
  std::vector<kernels::KvCacheView> one_layer(pool.views().begin(), pool.views().begin() + 1);
  EXPECT_THROW(l.model->forward({c}, one_layer, logits.data()), std::invalid_argument);
  // Ids outside the vocabulary.
  int32_t bad_ids[2] = {1, static_cast<int32_t>(t.vocab)};
  c.ids = bad_ids;
  EXPECT_THROW(l.model->forward({c}, pool.views(), logits.data()), std::out_of_range);
  c.ids = ids;
  // No block table; positions past max_position.
  c.block_table = nullptr;
  EXPECT_THROW(l.model->forward({c}, pool.views(), logits.data()), std::invalid_argument);
  c.block_table = table.data();
  c.start_pos = t.max_position - 1;
  EXPECT_THROW(l.model->forward({c}, pool.views(), logits.data()), std::invalid_argument);
  // Image tokens without images, and out-of-vocabulary text ids in a prompt.
  std::vector<float> out(static_cast<size_t>(64 * t.hidden));
  EXPECT_THROW(l.model->splice_embeddings({1, -200, 5}, nullptr, 0, out.data()), std::invalid_argument);
  EXPECT_THROW(l.model->splice_embeddings({1, -5}, nullptr, 0, out.data()), std::out_of_range);
  // Pool exhaustion is reported.
  EXPECT_THROW(pool.allocate(1000), std::runtime_error);
}

}  // namespace
}  // namespace recap::models::testing
