// recap-engine bench: end-to-end throughput of the captioning job on this machine
// (engine/bench.h), on synthetic weights of a real model's shapes or on a checkpoint /
// quantized cache directory. Prints a markdown table (or --json) with each figure's
// fraction of the machine limit that bounds it, measured in the same run.
#include <cstdio>
#include <memory>
#include <string>

#include "engine/bench.h"
#include "engine/errors.h"
#include "engine/signals.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

CommandRegistrar reg_bench(
    "bench", "Benchmark preprocessing, vision tower, prefill, decode, a real caption run and images/hour",
    [](CLI::App* sub) -> std::function<int()> {
      auto o = std::make_shared<engine::BenchOptions>();
      auto json_out = std::make_shared<bool>(false);
      auto* syn = sub->add_option("--synthetic", o->synthetic,
                                  "random weights of a preset's real shapes: llava-llama3-8b");
      auto* w = sub->add_option("--weights", o->weights_dir, "checkpoint or quantized-cache dir");
      syn->excludes(w);
      sub->add_option("--vision-weights", o->vision_weights_dir, "CLIP tower dir (with --weights)");
      sub->add_option("--precision", o->precision, "weight format: f32|bf16|int8|int4")
          ->capture_default_str();
      sub->add_option("--kv-dtype", o->kv_dtype, "KV cache dtype: f32|bf16|f16")->capture_default_str();
      sub->add_option("--max-batch", o->max_batch, "decode batch (continuous-batching width)")
          ->capture_default_str();
      sub->add_option("--new-tokens", o->new_tokens, "new tokens per image (eos ignored)")
          ->capture_default_str();
      sub->add_option("--prompt-tokens", o->prompt_tokens, "text tokens around the image")
          ->capture_default_str();
      sub->add_option("--images", o->images, "timed vision-tower runs")->capture_default_str();
      sub->add_option("--tower-batch", o->tower_batch,
                      "images of one timed batched vision-tower run (caption's tower batch; 1 skips it)")
          ->capture_default_str();
      sub->add_option("--decode-steps", o->decode_steps,
                      "timed decode steps per batch size (0: min(new-tokens, 16))")
          ->capture_default_str();
      sub->add_option(
             "--caption-images", o->caption_images,
             "images of the end-to-end caption phase (the real caption job, --ignore-eos; 0 skips it)")
          ->capture_default_str();
      sub->add_option("--tokenizer", o->tokenizer_path,
                      "tokenizer.json for the caption phase (default WEIGHTS/tokenizer.json; required with "
                      "--synthetic)");
      sub->add_option("--threads", o->threads, "compute threads (0: affinity/cgroup/OMP_NUM_THREADS)");
      sub->add_option("--seed", o->seed, "seed of weights, image and prompt")->capture_default_str();
      sub->add_flag("--json", *json_out, "print the report as JSON");
      sub->add_flag("--quick", o->quick, "fewer repetitions, no warm-up (tests)");
      return [o, json_out]() -> int {
        if (o->synthetic.empty() == o->weights_dir.empty())
          throw engine::UsageError("give exactly one of --synthetic NAME or --weights DIR");
        if (!o->synthetic.empty() && !engine::is_synthetic_preset(o->synthetic))
          throw engine::UsageError("unknown --synthetic preset '" + o->synthetic +
                                   "' (known: llava-llama3-8b)");
        // A signal exits 75 at once: bench writes nothing but its report, printed at the end.
        engine::install_stop_handlers();
        nlohmann::ordered_json r = engine::run_bench(*o);
        r["recap_version"] = RECAP_VERSION;
        if (*json_out)
          write_report(r.dump(2) + "\n");
        else
          write_report(engine::bench_markdown(r));
        return kExitOk;
      };
    });

}  // namespace
}  // namespace recap::cli
