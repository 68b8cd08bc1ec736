// recap-engine plan: what a caption run of this checkpoint needs before it is launched --
// memory per precision (weights, KV cache, buffers), the disk of a quantized cache, which
// precision `caption` would pick here, and images/hour on this machine from a few seconds
// of the real kernels at the model's shapes (engine/memory_plan.h). Sizes a Slurm array:
// run it on one node of the partition with the job's --threads and --max-batch.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "engine/errors.h"
#include "engine/kv_cache.h"
#include "engine/memory_plan.h"
#include "engine/signals.h"
#include "engine/threads.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/quantized_cache.h"
#include "models/tokenizer.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

using json = nlohmann::ordered_json;
using kernels::WeightFormat;

struct PlanArgs {
  std::string weights, vision_weights, vision_config, tokenizer, precision = "auto", kv_dtype = "f32";
  int threads = 0, max_batch = 0, max_new_tokens = 128;  // max_batch 0: as caption picks it
  bool as_json = false, no_calibration = false;
};

// Text tokens of the default prompt when no tokenizer is at hand (the real checkpoint ships
// none): the llava-llama3 template around the Recap-DataComp instruction is 40 tokens with the
// Llama-3 tokenizer, as `recap-engine bench` assumes.
constexpr int64_t kDefaultPromptTextTokens = 40;

int run_plan(const PlanArgs& a) {
  if (a.max_batch < 0) throw engine::UsageError("--max-batch must be at least 1 (or 0: chosen from memory)");
  if (a.max_new_tokens < 1) throw engine::UsageError("--max-new-tokens must be at least 1");
  if (a.precision != "auto" && a.precision != "all" && a.precision != "f32" && a.precision != "bf16" &&
      a.precision != "int8" && a.precision != "int4")
    throw engine::UsageError("--precision '" + a.precision +
                             "': expected auto, all, f32, bf16, int8 or int4");
  // A signal exits 75 at once: plan writes nothing but its report, printed at the end.
  engine::install_stop_handlers();
  engine::RunShape shape;
  shape.kv_dtype = engine::as_usage_error("", [&] { return engine::parse_kv_dtype(a.kv_dtype); });
  models::LoadOptions lo;
  lo.vision_weights_dir = a.vision_weights;
  lo.vision_config_dir = a.vision_config;
  // Whatever stops the checkpoint from opening is its fault (exit 2).
  const models::Checkpoint ck =
      engine::as_usage_error("", [&] { return models::open_checkpoint(a.weights, lo); });
  const models::ModelConfig& c = ck.config;
  if (!c.has_text || !c.has_vision)
    throw engine::UsageError(a.weights +
                             ": not a LLaVA checkpoint (needs the vision tower and the language model)");
  std::optional<WeightFormat> cache_precision;
  if (ck.text_store && models::is_quantized_cache_store(*ck.text_store))
    cache_precision = models::QuantizedCacheWeightSource(ck.text_store).precision();

  // The prompt's length: exact with a tokenizer, else the default prompt's known length.
  std::string prompt_source;
  try {
    const std::string tok_path = models::find_tokenizer(a.weights, a.tokenizer);
    models::Tokenizer tok = models::open_tokenizer(c, tok_path);
    models::ChatTemplate tmpl = models::resolve_template_for(c, "");
    models::PromptInputs pin;
    pin.prompt = tmpl.prompt;
    shape.prompt_positions = engine::prompt_positions(c, models::build_prompt_ids(tmpl, tok, pin));
    prompt_source = "default prompt with " + tok_path;
  } catch (const std::exception& e) {
    // Only a tokenizer the user named must be readable; the default one is optional.
    if (!a.tokenizer.empty())
      throw engine::UsageError(a.tokenizer + ": cannot read the tokenizer: " + e.what());
    shape.prompt_positions = c.vision.num_patches() + kDefaultPromptTextTokens;
    prompt_source =
        "no tokenizer: image + " + std::to_string(kDefaultPromptTextTokens) + " text tokens assumed";
  }
  shape.max_new_tokens = a.max_new_tokens;
  shape.max_batch = a.max_batch > 0 ? a.max_batch : engine::auto_batch_for_precision_choice(shape);
  shape.from_float_checkpoint = !cache_precision;

  const engine::AvailableMemory avail =
      engine::available_memory();  // UsageError: a bad RECAP_MEMORY_AVAILABLE_MB
  const engine::ThreadBudget tb = engine::resolve_threads(a.threads);
  const std::string requested = a.precision == "all" ? "auto" : a.precision;
  engine::PrecisionChoice chosen = engine::choose_precision(requested, cache_precision, c, shape, avail);
  // --max-batch 0 (the default, as for caption): the batch caption would pick with the chosen
  // precision in this memory; every precision's row is then sized for that batch.
  std::string batch_source = "--max-batch";
  if (a.max_batch == 0) {
    shape.max_batch = engine::auto_max_batch(c, chosen.precision, shape, avail.bytes);
    // The same precision, its reason's figures now those of the batch picked.
    if (chosen.fits) chosen = engine::choose_precision(requested, cache_precision, c, shape, avail);
    batch_source = "auto: the largest up to " + std::to_string(engine::kAutoMaxBatchCap) + " whose " +
                   kernels::weight_format_name(chosen.precision) + " estimate fits, as caption picks it";
  }

  constexpr WeightFormat kAll[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8,
                                   WeightFormat::Int4};
  std::vector<engine::MemoryEstimate> est;
  for (WeightFormat f : kAll) est.push_back(engine::estimate_memory(c, f, shape));

  std::vector<engine::Calibration> cals;
  if (!a.no_calibration) {
    if (!a.as_json)
      std::fprintf(stderr, "plan: calibrating on %d thread(s) (a few seconds per precision)...\n",
                   tb.threads);
    if (a.precision == "all")
      for (WeightFormat f : kAll) cals.push_back(engine::calibrate_throughput(c, f, shape, tb.threads));
    else
      cals.push_back(engine::calibrate_throughput(c, chosen.precision, shape, tb.threads));
  }

  if (a.as_json) {
    json j;
    j["weights_dir"] = a.weights;
    j["layout"] = models::layout_name(c.layout);
    j["quantized_cache"] =
        cache_precision ? json(kernels::weight_format_name(*cache_precision)) : json(nullptr);
    j["prompt_positions"] = shape.prompt_positions;
    j["prompt_source"] = prompt_source;
    j["max_new_tokens"] = shape.max_new_tokens;
    j["max_batch"] = shape.max_batch;
    j["max_batch_source"] = batch_source;
    j["kv_dtype"] = a.kv_dtype;
    j["threads"] = tb.threads;
    j["available_bytes"] = avail.bytes;
    j["available_source"] = avail.source;
    json p = json::object();
    for (const auto& e : est)
      p[kernels::weight_format_name(e.precision)] = {
          {"weights_bytes", e.weights}, {"kv_cache_bytes", e.kv_cache},     {"buffers_bytes", e.buffers},
          {"total_bytes", e.total()},   {"fits", e.total() <= avail.bytes}, {"cache_disk_bytes", e.weights}};
    j["precisions"] = p;
    j["choice"] = {{"precision", kernels::weight_format_name(chosen.precision)},
                   {"reason", chosen.reason},
                   {"fits", chosen.fits}};
    json cj = json::array();
    for (const auto& k : cals)
      cj.push_back({{"precision", kernels::weight_format_name(k.precision)},
                    {"threads", k.threads},
                    {"vision_s_per_image", k.vision_s_per_image},
                    {"prefill_tok_s", k.prefill_tok_s},
                    {"decode_tok_s", k.decode_tok_s},
                    {"seconds_per_image", k.seconds_per_image},
                    {"images_per_hour", k.images_per_hour},
                    {"calibration_s", k.wall_s},
                    {"cpu_share", k.cpu_share}});
    j["calibration"] = cj;
    write_report(j.dump(2) + "\n");
  } else {
    std::printf(
        "plan: %s (%s%s)\n", a.weights.c_str(), models::layout_name(c.layout),
        cache_precision
            ? (std::string(", quantized cache ") + kernels::weight_format_name(*cache_precision)).c_str()
            : ", float checkpoint");
    std::printf("run: prompt %lld positions (%s) + %d new tokens, max batch %d (%s), KV %s, %d thread(s)\n",
                static_cast<long long>(shape.prompt_positions), prompt_source.c_str(), shape.max_new_tokens,
                shape.max_batch, batch_source.c_str(), a.kv_dtype.c_str(), tb.threads);
    std::printf("memory available: %s (%s)\n\n", engine::format_gib(avail.bytes).c_str(),
                avail.source.c_str());
    std::printf("| precision | weights | KV cache | buffers | total | fits | quantized cache on disk |\n");
    std::printf("|---|---:|---:|---:|---:|---|---:|\n");
    for (const auto& e : est)
      std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", kernels::weight_format_name(e.precision),
                  engine::format_gib(e.weights).c_str(), engine::format_gib(e.kv_cache).c_str(),
                  engine::format_gib(e.buffers).c_str(), engine::format_gib(e.total()).c_str(),
                  e.total() <= avail.bytes ? "yes" : "no", engine::format_gib(e.weights).c_str());
    std::printf("\ncaption would use: precision %s (%s)%s\n", kernels::weight_format_name(chosen.precision),
                chosen.reason.c_str(), chosen.fits ? "" : " -- does not fit");
    for (const auto& k : cals)
      std::printf(
          "throughput %s, %d thread(s): vision %.2f s/image, prefill %.1f tok/s, decode %.1f tok/s at batch "
          "%d "
          "-> %.1f s/image, %.0f images/hour (calibrated in %.1f s; CPU share %.2f%s)\n",
          kernels::weight_format_name(k.precision), k.threads, k.vision_s_per_image, k.prefill_tok_s,
          k.decode_tok_s, shape.max_batch, k.seconds_per_image, k.images_per_hour, k.wall_s, k.cpu_share,
          k.cpu_share < 0.8 ? ": other processes shared the cores, figures pessimistic" : "");
  }
  return kExitOk;
}

const CommandRegistrar kPlan(
    "plan", "Memory per precision, the precision caption would pick, and images/hour on this machine",
    [](CLI::App* sub) -> std::function<int()> {
      auto a = std::make_shared<PlanArgs>();
      sub->add_option("--weights", a->weights, "checkpoint directory or quantized cache")->required();
      sub->add_option("--vision-weights", a->vision_weights, "CLIP vision tower directory (if not embedded)");
      sub->add_option("--vision-config", a->vision_config,
                      "CLIPVisionConfig directory overriding the tower dims");
      sub->add_option(
          "--tokenizer", a->tokenizer,
          "tokenizer.json for the exact prompt length (default: WEIGHTS/tokenizer.json if present)");
      sub->add_option("--precision", a->precision,
                      "precision to calibrate: auto (what caption picks), all, f32, bf16, int8, int4")
          ->capture_default_str();
      sub->add_option("--kv-dtype", a->kv_dtype, "KV cache dtype: f32, bf16, f16")->capture_default_str();
      sub->add_option("--threads", a->threads, "compute threads (default: CPUs allowed to this process)");
      sub->add_option("--max-batch", a->max_batch,
                      "sequences decoded together (0: chosen from memory, as caption does)")
          ->capture_default_str();
      sub->add_option("--max-new-tokens", a->max_new_tokens, "caption length limit in tokens")
          ->capture_default_str();
      sub->add_flag("--no-calibration", a->no_calibration, "memory figures only (no throughput measurement)");
      sub->add_flag("--json", a->as_json, "print one JSON object");
      return [a] { return run_plan(*a); };
    });

}  // namespace
}  // namespace recap::cli
