#include "golden_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace recap::models::testing {

std::string tiny_dir(const std::string& name) {
  return std::string(RECAP_TEST_DATA) + "/tiny/" + name;
}

const io::SafetensorsFile& golden() {
  static std::shared_ptr<io::SafetensorsFile> f =
      io::SafetensorsFile::open(std::string(RECAP_TEST_DATA) + "/tiny/golden.safetensors");
  return *f;
}

static const io::TensorInfo& golden_tensor(const std::string& name) {
  auto it = golden().tensors().find(name);
  if (it == golden().tensors().end()) throw std::runtime_error("golden tensor missing: " + name);
  return it->second;
}

std::vector<float> golden_f32(const std::string& name) {
  const io::TensorInfo& t = golden_tensor(name);
  if (t.dtype != io::DType::F32) throw std::runtime_error("golden tensor not F32: " + name);
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

std::vector<int64_t> golden_i64(const std::string& name) {
  const io::TensorInfo& t = golden_tensor(name);
  if (t.dtype != io::DType::I64) throw std::runtime_error("golden tensor not I64: " + name);
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

std::vector<int64_t> golden_shape(const std::string& name) {
  return golden_tensor(name).shape;
}

Loaded load_tiny(const std::string& dir, kernels::WeightFormat precision, const LoadOptions& opts) {
  Loaded l;
  l.ckpt = open_checkpoint(tiny_dir(dir), opts);
  ModelOptions mo;
  mo.precision = precision;
  l.model = LlavaModel::load(l.ckpt, mo);
  return l;
}

::testing::AssertionResult all_close(const std::vector<float>& a, const std::vector<float>& g, double atol,
                                     double rtol) {
  if (a.size() != g.size())
    return ::testing::AssertionFailure() << "size " << a.size() << " != golden size " << g.size();
  size_t bad = 0, worst = 0;
  double worst_excess = -1, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - g[i]);
    const double lim = atol + rtol * std::fabs(static_cast<double>(g[i]));
    max_abs = std::max(max_abs, d);
    if (!(d <= lim)) {  // NaN counts as a failure
      ++bad;
      if (d - lim > worst_excess || std::isnan(d)) {
        worst_excess = d - lim;
        worst = i;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << "max_abs_diff " << max_abs;
  return ::testing::AssertionFailure()
         << bad << " of " << a.size() << " elements out of tolerance; worst at " << worst << ": " << a[worst]
         << " vs golden " << g[worst] << " (max_abs_diff " << max_abs << ")";
}

double nmse(const std::vector<float>& a, const std::vector<float>& g) {
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - g[i];
    num += d * d;
    den += static_cast<double>(g[i]) * g[i];
  }
  if (a.size() != g.size()) return INFINITY;
  return den > 0 ? num / den : num;
}

int64_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;  // strict: the lowest id wins ties
  return best;
}

Generation generate(const LlavaModel& model, const std::vector<int64_t>& ids, const float* image_features,
                    int64_t n_images, int64_t n_new, kernels::KvDType kv, int64_t block_size) {
  const TextConfig& t = model.config().text;
  Generation g;
  const int64_t N = model.spliced_length(ids);
  g.inputs_embeds.resize(static_cast<size_t>(N * t.hidden));
  model.splice_embeddings(ids, image_features, n_images, g.inputs_embeds.data());

  const int64_t total = N + n_new;
  engine::KvCachePool pool(engine::KvCacheShape::for_text(t, kv, block_size),
                           (total + block_size - 1) / block_size + 2);
  std::vector<int32_t> table = pool.allocate(total);
  std::reverse(table.begin(), table.end());  // physical blocks out of order: exercises paging

  SeqChunk prefill;
  prefill.embeds = g.inputs_embeds.data();
  prefill.n_tokens = N;
  prefill.start_pos = 0;
  prefill.block_table = table.data();
  prefill.all_logits = true;
  LlmTrace trace;
  trace.enabled = true;
  g.logits.resize(static_cast<size_t>(N * t.vocab));
  const int64_t rows = model.forward({prefill}, pool.views(), g.logits.data(), &trace);
  EXPECT_EQ(rows, N);
  g.hidden_states = trace.hidden_states;

  std::vector<float> step_logits(static_cast<size_t>(t.vocab));
  int32_t next = static_cast<int32_t>(argmax(g.logits.data() + (N - 1) * t.vocab, t.vocab));
  for (int64_t i = 0; i < n_new; ++i) {
    g.ids.push_back(next);
    if (i + 1 == n_new) break;
    SeqChunk step;
    step.ids = &next;
    step.n_tokens = 1;
    step.start_pos = N + i;
    step.block_table = table.data();
    EXPECT_EQ(model.forward({step}, pool.views(), step_logits.data()), 1);
    next = static_cast<int32_t>(argmax(step_logits.data(), t.vocab));
  }
  return g;
}

std::vector<float> golden_pixels() {
  return golden_f32("pixel_values");
}

}  // namespace recap::models::testing
