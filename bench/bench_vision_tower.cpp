// CLIP-ViT-L/14-336 tower + mlp2x_gelu projector (LLaVA-1.5 shapes: 23 of 24 layers run,
// 1024 -> 4096 -> 4096) on synthetic weights of the real shape, per weight precision, batch 1
// and 8. Reports ms per image, the throughput (GFLOP/s of the model's arithmetic) and its
// fraction of the format's compute peak probed in the same run.
//   ./bench_vision_tower --benchmark_min_time=0.1
#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/machine_limits.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/weight_source.h"

namespace {

using recap::kernels::WeightFormat;
using recap::models::LlavaModel;
using recap::models::ModelConfig;

ModelConfig clip_l336_config() {
  const recap::models::VisionConfig* v = recap::models::vision_preset("openai/clip-vit-large-patch14-336");
  if (!v) throw std::runtime_error("no built-in preset for openai/clip-vit-large-patch14-336");
  ModelConfig c;
  c.layout = recap::models::Layout::LlavaOrig;
  c.has_vision = true;
  c.has_text = true;  // the projector lives with the text weights
  c.vision = *v;
  c.projector.in = c.vision.hidden;
  c.projector.hidden = 4096;
  c.projector.out = 4096;
  c.names.vision_prefix = "model.vision_tower.vision_tower.vision_model.";
  c.names.proj1_prefix = "model.mm_projector.0.";
  c.names.proj2_prefix = "model.mm_projector.2.";
  return c;
}

// One model per precision at a time (an f32 tower is 1.2 GB).
const LlavaModel& model_for(WeightFormat format) {
  static WeightFormat current = WeightFormat::F32;
  static std::unique_ptr<LlavaModel> model;
  if (!model || current != format) {
    model.reset();
    recap::models::SyntheticWeightSource weights(/*seed=*/7, /*stddev=*/0.02f);
    recap::models::ModelOptions opts;
    opts.precision = format;
    opts.load_text = false;  // tower + projector only
    model = LlavaModel::load_from(clip_l336_config(), &weights, &weights, opts);
    current = format;
  }
  return *model;
}

double flops_per_image(const ModelConfig& c) {
  const double D = c.vision.hidden, I = c.vision.intermediate, P = c.vision.num_patches(), T = P + 1;
  const double K = c.vision.channels * c.vision.patch_size * c.vision.patch_size;
  const double layers = c.vision.layers_to_run();
  const double per_layer = 2 * T * (4 * D * D + 2 * D * I) + 2 * 2 * T * T * D;  // GEMMs + QK^T, PV
  const double projector =
      2 * P * (c.projector.in * c.projector.hidden + c.projector.hidden * c.projector.out);
  return 2 * P * K * D + layers * per_layer + projector;
}

void BM_VisionTower(benchmark::State& state) {
  const WeightFormat format = static_cast<WeightFormat>(state.range(0));
  const int64_t batch = state.range(1);
  const LlavaModel& m = model_for(format);
  const ModelConfig& c = m.config();
  const int64_t S = c.vision.image_size, P = c.vision.num_patches();
  std::vector<float> pixels(static_cast<size_t>(batch * 3 * S * S));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (float& v : pixels) v = nd(rng);
  std::vector<float> out(static_cast<size_t>(batch * P * c.projector.out));
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    m.encode_images(pixels.data(), batch, out.data());
    benchmark::DoNotOptimize(out.data());
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double images = static_cast<double>(state.iterations() * batch);
  state.counters["ms_per_image"] = 1e3 * seconds / images;
  state.counters["GFLOP/s"] =
      benchmark::Counter(images * flops_per_image(c) * 1e-9, benchmark::Counter::kIsRate);
  // The compute limit of this format, probed right after the row (the host's speed drifts):
  // f32 FMA for f32, the bf16 dot for bf16, the int8 dot for int8/int4 (their GEMMs run on
  // vpdpbusd). Attention and the norms stay f32, so 100% is out of reach by construction.
  const int threads = omp_get_max_threads();
  const recap::kernels::LimitProbe peak =
      format == WeightFormat::F32    ? recap::kernels::measure_f32_fma_peak(threads)
      : format == WeightFormat::BF16 ? recap::kernels::measure_bf16_dot_peak(threads)
                                     : recap::kernels::measure_int8_dot_peak(threads);
  const double achieved = images * flops_per_image(c) * 1e-9 / seconds;
  state.counters["peak_G"] = peak.value;
  state.counters["pct_of_peak"] = peak.value > 0 ? 100.0 * achieved / peak.value : 0.0;
  state.SetLabel(std::string(recap::kernels::weight_format_name(format)) + " vs " + peak.instruction);
}

void Args(benchmark::internal::Benchmark* b) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4})
    for (int64_t batch : {1, 8}) b->Args({static_cast<int64_t>(f), batch});
  b->ArgNames({"precision", "batch"})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
}

BENCHMARK(BM_VisionTower)->Apply(Args);

}  // namespace

BENCHMARK_MAIN();
