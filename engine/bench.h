// End-to-end benchmark of the captioning job (recap-engine bench): llama-bench's pp/tg split
// plus what recaptioning needs (image preprocessing, vision tower, prefill of one image's
// prompt, decode at batch 1 and at the continuous-batching width, images/hour), each figure
// next to the machine limit that bounds it, measured in the same run (kernels/machine_limits.h).
//
// Phases, all on one model and one KV pool (engine::KvCachePool):
//   load        LlavaModel from a checkpoint / quantized cache, or synthetic weights of a preset
//   preprocess  a random 640x480 RGB image -> pad, Pillow bicubic, normalise (JPEG decode excluded)
//   vision      encode_images, batch 1 (tower + projector), ms/image
//   prefill     one sequence: the image's P feature rows spliced into prompt_tokens random text
//               tokens (P + prompt_tokens positions, 616 for the real model), one forward
//   decode b1   that sequence continues, one token per step
//   decode bB   B sequences forked from the prefilled prompt (whole KV blocks shared, as
//               --num-captions does), one token each per step
//   caption     the real `caption` job (engine/caption_pipeline: list source, loader decode,
//               tower thread, scheduler, sampler, tar writer) on caption_images random-content
//               PNG/JPEG files, with ignore_eos (exactly new_tokens per caption) and max_batch,
//               on the model loaded above; files and outputs live in a temp dir removed after.
// images/hour = 3600 / (preprocess + vision + prompt/prefill_tps + new_tokens/decode_tps(B)):
// the parts share the same cores, so their times add; decode at batch B is charged per image
// as new_tokens / aggregate tok/s. The caption phase measures images/hour instead, and puts it
// beside limit_images_per_hour: the same work at the machine's measured peaks (prefill and
// tower at the compute peak, decode at max(bandwidth, compute) bound of a batch-B step / B);
// docs/PERFORMANCE.md gives the formula.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "models/config.h"

namespace recap::engine {

struct BenchOptions {
  std::string synthetic;  // preset name ("llava-llama3-8b"), or empty to load weights_dir
  std::string weights_dir;
  std::string vision_weights_dir;
  std::string precision = "int4";
  std::string kv_dtype = "f32";
  int max_batch = 16;
  int new_tokens = 128;
  int prompt_tokens = 40;   // text tokens around the image
  int images = 2;           // timed vision-tower runs (batch 1)
  int tower_batch = 8;      // images of the timed batched tower run (the caption job's batch); <= 1 skips it
  int decode_steps = 0;     // timed decode steps per batch size; 0: min(new_tokens, 16)
  int threads = 0;          // 0: engine::resolve_threads
  int caption_images = 32;  // images of the caption phase; 0 skips it
  // tokenizer.json for the caption phase: default WEIGHTS/tokenizer.json; required with
  // --synthetic (the Llama-3 tokenizer for llava-llama3-8b).
  std::string tokenizer_path;
  bool quick = false;  // fewer repetitions, no warm-up (tests)
  uint64_t seed = 1;
};

// Names accepted by --synthetic.
bool is_synthetic_preset(const std::string& name);
// The full ModelConfig of a preset (real dims, LLaVA-original tensor names). Throws
// std::invalid_argument for an unknown name.
models::ModelConfig synthetic_preset_config(const std::string& name);

// Runs every phase and returns the report (keys documented in docs/PERFORMANCE.md).
// Progress lines go to stderr. Throws std::invalid_argument on bad options (before any work),
// std::runtime_error on a model that cannot run (e.g. no language model) or a caption phase
// that does not caption every image.
nlohmann::ordered_json run_bench(const BenchOptions& opts);

// The report as a markdown table for people.
std::string bench_markdown(const nlohmann::ordered_json& report);

}  // namespace recap::engine
