// recap-engine quantize: pack a checkpoint (or synthetic weights of a preset) once into a
// quantized cache directory that later loads by mmap with no work (models/quantized_cache.h,
// docs/QUANTIZED_CACHE.md). Streams tensor by tensor: one packed matrix in memory at a time.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/bench.h"
#include "engine/errors.h"
#include "engine/signals.h"
#include "engine/threads.h"
#include "models/quantized_cache.h"
#include "models/weight_source.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

struct QuantizeArgs {
  std::string weights, vision_weights, vision_config, synthetic, precision, out;
  int threads = 0;
  uint64_t seed = 1;
};

int run_quantize(const QuantizeArgs& a) {
  if (a.synthetic.empty() == a.weights.empty())
    throw engine::UsageError("give exactly one of --weights DIR or --synthetic NAME");
  const kernels::WeightFormat fmt =
      engine::as_usage_error("--precision", [&] { return kernels::parse_weight_format(a.precision); });
  if (!a.weights.empty() && models::is_quantized_cache(a.weights))
    throw engine::UsageError(a.weights + " is already a quantized cache; quantize the original checkpoint");
  // Opening the checkpoint: a signal exits 75 at once (nothing written yet).
  engine::install_stop_handlers();
  engine::apply_threads(engine::resolve_threads(a.threads).threads);

  models::Checkpoint ck;
  std::unique_ptr<models::WeightSource> vision, text;
  std::string copy_from;
  // Whatever stops the checkpoint (or preset) from opening is a configuration error (exit 2).
  engine::as_usage_error("", [&] {
    if (!a.synthetic.empty()) {
      ck.config = engine::synthetic_preset_config(a.synthetic);
      vision = std::make_unique<models::SyntheticWeightSource>(a.seed, 0.02f);
    } else {
      models::LoadOptions lo;
      lo.vision_weights_dir = a.vision_weights;
      lo.vision_config_dir = a.vision_config;
      ck = models::open_checkpoint(a.weights, lo);
      if (ck.config.has_vision && ck.vision_store)
        vision = std::make_unique<models::StoreWeightSource>(*ck.vision_store);
      if (ck.config.has_text && ck.text_store)
        text = std::make_unique<models::StoreWeightSource>(*ck.text_store);
      copy_from = a.weights;
    }
  });
  models::WeightSource* vsrc = vision.get();
  models::WeightSource* tsrc = a.synthetic.empty() ? text.get() : vision.get();  // one synthetic source

  const auto t0 = std::chrono::steady_clock::now();
  const bool tty = isatty(fileno(stderr));
  // Writing: a signal is acted on between two matrices, by throwing InterruptedError (exit 75)
  // through the writer, which removes its temporary file; the output directory goes too when
  // this run created it (and it is empty), and a cache already there is untouched. A signal
  // after the last matrix lets the cache be finished (exit 0); a second signal exits at once.
  std::error_code ec;
  const bool out_existed = std::filesystem::exists(a.out, ec);
  engine::enter_checkpoint_phase();
  models::QuantizeStats st;
  try {
    st = models::write_quantized_cache(
        ck.config, vsrc, tsrc, fmt, a.out, copy_from, [&](int64_t i, int64_t n, const std::string& key) {
          if (engine::stop_requested())
            throw engine::InterruptedError("stopped by a signal after " + std::to_string(i) + " of " +
                                           std::to_string(n) + " matrices; no cache was written to " + a.out +
                                           " (rerun to quantize)");
          if (tty || i % 25 == 0 || i + 1 == n)
            std::fprintf(stderr, "%s[quantize] %lld/%lld %s%s", tty ? "\r\033[K" : "",
                         static_cast<long long>(i + 1), static_cast<long long>(n), key.c_str(),
                         tty ? "" : "\n");
        });
  } catch (...) {
    if (tty) std::fprintf(stderr, "\n");
    if (!out_existed) std::filesystem::remove(a.out, ec);  // only if empty: never a user's file
    throw;
  }
  if (tty) std::fprintf(stderr, "\n");
  // The content hash recorded in the header (recap.content_xxh3): caption's fingerprint uses
  // it instead of rereading the cache; a rerun of quantize with the same input prints the same.
  const std::string header_hash = models::quantized_cache_header_hash(a.out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("content hash recorded (header xxh3 %s)\n", header_hash.c_str());
  std::printf(
      "wrote %s/%s: %s, %lld packed matrices, %lld f32 tensors, %.2f GiB (largest matrix %.1f MiB) in %.1f "
      "s; "
      "peak RSS %.2f GiB\n",
      a.out.c_str(), models::kQuantizedCacheFile, kernels::weight_format_name(fmt),
      static_cast<long long>(st.matrices), static_cast<long long>(st.vectors),
      static_cast<double>(st.file_bytes) / (1 << 30),
      static_cast<double>(st.largest_matrix_bytes) / (1 << 20), secs,
      static_cast<double>(ru.ru_maxrss) / (1 << 20));
  return kExitOk;
}

CommandRegistrar reg_quantize(
    "quantize", "Pack a checkpoint into a quantized cache that loads by mmap",
    [](CLI::App* sub) -> std::function<int()> {
      auto a = std::make_shared<QuantizeArgs>();
      a->precision = "int4";
      sub->add_option("--weights", a->weights, "LLaVA checkpoint dir");
      sub->add_option("--vision-weights", a->vision_weights, "CLIP tower dir");
      sub->add_option("--vision-config", a->vision_config, "dir with a CLIPVisionConfig config.json");
      sub->add_option("--synthetic", a->synthetic,
                      "random weights of a preset's real shapes: llava-llama3-8b");
      sub->add_option("--precision", a->precision, "int4|int8|bf16|f32")->capture_default_str();
      sub->add_option("--out", a->out, "output directory")->required();
      sub->add_option("--threads", a->threads, "threads for packing");
      sub->add_option("--seed", a->seed, "seed of --synthetic weights")->capture_default_str();
      return [a]() { return run_quantize(*a); };
    });

}  // namespace
}  // namespace recap::cli
