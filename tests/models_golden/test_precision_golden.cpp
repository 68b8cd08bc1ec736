// Reduced-precision weights (bf16, int8, int4) and KV caches (bf16, f16) against the f32
// goldens: NMSE bounds derived in docs/NUMERICS.md ("Model precision"). Each test prints
// the measured NMSE so the table there can be regenerated:
//   ./test_models_golden --gtest_filter='Precision*'
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <tuple>

#include "golden_util.h"

namespace recap::models::testing {
namespace {

// Per-GEMM output NMSE a weight format may add (docs/NUMERICS.md, "Model precision"):
//   bf16: operands rounded to bf16, relative error <= u = 2^-8 each -> 2u^2
//   int8: the kernel bound on Gaussian weights (5e-5) + the per-row int8 activations (5e-5)
//   int4: the kernel bound on Gaussian weights (1e-2)
// Errors of successive GEMMs add (measured: NMSE grows linearly with the GEMM count), so a
// path through n quantized GEMMs is bounded by 2 * n * eps (factor 2: gain of the
// non-linearities and the residual stream).
struct Bound {
  const char* name;
  kernels::WeightFormat format;
  double eps_per_gemm;
};
constexpr double kU = 1.0 / 256.0;
constexpr Bound kBounds[] = {
    {"bf16", kernels::WeightFormat::BF16, 2 * kU* kU},
    {"int8", kernels::WeightFormat::Int8, 1e-4},
    {"int4", kernels::WeightFormat::Int4, 1e-2},
};

// Fraction of rows whose argmax equals the golden's.
double top1_agreement(const std::vector<float>& logits, const std::vector<float>& golden, int64_t V) {
  const int64_t rows = static_cast<int64_t>(golden.size()) / V;
  int64_t same = 0;
  for (int64_t r = 0; r < rows; ++r)
    same += argmax(logits.data() + r * V, V) == argmax(golden.data() + r * V, V);
  return static_cast<double>(same) / static_cast<double>(rows);
}

// Every LLaVA layout and stored dtype of the tiny model (the same weights; bf16/fp16 files hold
// values exactly representable in their dtype), at every reduced precision.
constexpr const char* kLlavaDirs[] = {
    "llava_orig_fp32", "llava_orig_bf16", "llava_orig_fp16", "llava_orig_with_vt_fp32",
    "llava_hf_fp32",   "llava_hf_bf16",   "llava_hf_fp16"};

class PrecisionGolden : public ::testing::TestWithParam<std::tuple<const char*, Bound>> {};

TEST_P(PrecisionGolden, NmseWithinBound) {
  const char* dir = std::get<0>(GetParam());
  const Bound& b = std::get<1>(GetParam());
  Loaded l = load_tiny(dir, b.format);
  const ModelConfig& c = l.model->config();
  const int64_t P = c.vision.num_patches(), Dt = c.text.hidden, S = c.vision.image_size, V = c.text.vocab;
  // Quantized GEMMs on each path: patch embedding + 4 per encoder layer run + 2 projector;
  // embedding gather + 4 per decoder layer (qkv, o, gate|up, down) + lm_head.
  const double n_vision = 1 + 4 * c.vision.layers_to_run() + 2;
  const double n_llm = 1 + 4 * c.text.layers + 1;
  const double bound_vision = 2 * n_vision * b.eps_per_gemm;
  const double bound_llm = 2 * n_llm * b.eps_per_gemm;
  const double bound_e2e = 2 * (n_vision + n_llm) * b.eps_per_gemm;

  std::vector<float> pixels = golden_pixels();
  std::vector<float> proj(static_cast<size_t>(4 * P * Dt));
  VisionTrace trace;
  trace.enabled = true;
  l.model->encode_images(pixels.data(), 4, proj.data(), &trace);
  const double proj_nmse = nmse(proj, golden_f32("projector.out"));
  // The tower's own output (hidden_states[select_layer], CLS included): 1 + 4 per layer run.
  const double selected_nmse = nmse(trace.selected, golden_f32("vision.selected"));
  const double bound_selected = 2 * (1 + 4 * c.vision.layers_to_run()) * b.eps_per_gemm;

  // The LLM gets the golden image features so its error is measured on its own.
  std::vector<float> feats = golden_f32("llm.image_features");
  Generation g = generate(*l.model, golden_i64("llm.input_ids"), feats.data(), 1, 1);
  const double logits_nmse = nmse(g.logits, golden_f32("llm.logits"));
  Generation t = generate(*l.model, golden_i64("text_only.input_ids"), nullptr, 0, 1);
  const double text_nmse = nmse(t.logits, golden_f32("text_only.logits"));
  // End to end: this precision's own image features into its own LLM.
  std::vector<float> own(static_cast<size_t>(P * Dt));
  const int64_t index = golden_i64("llm.image_index").at(0);
  l.model->encode_images(pixels.data() + index * 3 * S * S, 1, own.data());
  Generation e = generate(*l.model, golden_i64("llm.input_ids"), own.data(), 1, 1);
  const double e2e_nmse = nmse(e.logits, golden_f32("llm.logits"));
  const double agree = top1_agreement(e.logits, golden_f32("llm.logits"), V);

  std::printf(
      "[precision %s %s] vision.selected NMSE %.3g (bound %.3g) | projector.out %.3g (bound %.3g) | "
      "llm.logits %.3g | text_only.logits %.3g (bound %.3g) | end-to-end llm.logits %.3g (bound %.3g), "
      "top-1 agreement %.3f\n",
      b.name, dir, selected_nmse, bound_selected, proj_nmse, bound_vision, logits_nmse, text_nmse, bound_llm,
      e2e_nmse, bound_e2e, agree);
  EXPECT_LE(selected_nmse, bound_selected);
  EXPECT_GT(selected_nmse, 0.0);
  EXPECT_LE(proj_nmse, bound_vision);
  EXPECT_LE(logits_nmse, bound_llm);
  EXPECT_LE(text_nmse, bound_llm);
  EXPECT_LE(e2e_nmse, bound_e2e);
  // The reduced precision really is in use (a test that cannot fail proves nothing).
  EXPECT_GT(e2e_nmse, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Weights, PrecisionGolden,
                         ::testing::Combine(::testing::ValuesIn(kLlavaDirs), ::testing::ValuesIn(kBounds)),
                         [](const ::testing::TestParamInfo<std::tuple<const char*, Bound>>& i) {
                           return std::string(std::get<1>(i.param).name) + "_" + std::get<0>(i.param);
                         });

// K and V rounded once when written to the cache: relative error <= u per element
// (bf16 u = 2^-8, f16 u = 2^-11 for values in f16's normal range), through every layer's
// attention: bound 2 * layers * u^2 * 2 (K and V).
struct KvBound {
  const char* name;
  kernels::KvDType dtype;
  double u;
};
constexpr KvBound kKvBounds[] = {
    {"bf16", kernels::KvDType::BF16, 1.0 / 256},
    {"f16", kernels::KvDType::F16, 1.0 / 2048},
};

class KvPrecisionGolden : public ::testing::TestWithParam<KvBound> {};

TEST_P(KvPrecisionGolden, NmseWithinBound) {
  const KvBound& b = GetParam();
  Loaded l = load_tiny("llava_orig_fp32");
  std::vector<float> feats = golden_f32("llm.image_features");
  Generation g = generate(*l.model, golden_i64("llm.input_ids"), feats.data(), 1, 16, b.dtype);
  const double logits_nmse = nmse(g.logits, golden_f32("llm.logits"));
  const double bound = 2.0 * static_cast<double>(l.model->config().text.layers) * 2.0 * b.u * b.u;
  const std::vector<int64_t> gold_ids = golden_i64("gen.ids");
  int64_t same = 0;
  while (same < 16 && g.ids[same] == gold_ids[same]) ++same;
  std::printf("[kv %s] llm.logits NMSE %.3g (bound %.3g), greedy ids equal to the golden's for %lld of 16\n",
              b.name, logits_nmse, bound, static_cast<long long>(same));
  EXPECT_LE(logits_nmse, bound);
  EXPECT_EQ(g.ids.front(), golden_i64("gen.ids").front());
  EXPECT_GT(logits_nmse, 0.0);
}

INSTANTIATE_TEST_SUITE_P(KvCache, KvPrecisionGolden, ::testing::ValuesIn(kKvBounds),
                         [](const ::testing::TestParamInfo<KvBound>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
}  // namespace recap::models::testing
