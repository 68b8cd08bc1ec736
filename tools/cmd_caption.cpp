// recap-engine caption: recaption shard lists / webdataset tars into webdataset shards.
// All the work is in engine/caption_pipeline; this file maps flags to CaptionOptions.
#include <optional>

#include "engine/caption_pipeline.h"
#include "engine/signals.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

struct CaptionFlags {
  engine::CaptionOptions o;
  int64_t shard_index = -1, shard_count = -1;
  float temperature = 0.f, top_p = 1.f;
  int top_k = 0;
  uint64_t seed = 0;
};

CommandRegistrar reg_caption(
    "caption", "Recaption images from lists or webdataset tars into webdataset shards (resumable)",
    [](CLI::App* sub) -> std::function<int()> {
      auto f = std::make_shared<CaptionFlags>();
      auto& o = f->o;
      sub->add_option("--weights", o.weights_dir, "LLaVA checkpoint directory")->required();
      sub->add_option("--vision-weights", o.vision_weights_dir,
                      "CLIP vision tower directory (if not embedded)");
      sub->add_option("--vision-config", o.vision_config_dir,
                      "CLIPVisionConfig directory overriding the tower dims");
      sub->add_option("--tokenizer", o.tokenizer_path, "tokenizer.json (default: WEIGHTS/tokenizer.json)");
      sub->add_option("--list", o.lists,
                      "sample list(s): .jsonl/.json/.tsv/.csv/.txt, optionally .gz; brace and glob "
                      "patterns like 'lists/{00000..00099}.jsonl' or 'lists/*.jsonl' (repeatable)");
      sub->add_option("--input", o.inputs,
                      "webdataset tar(s) or a brace/glob pattern 'shards/{00000..00099}.tar', "
                      "'shards/*.tar' (repeatable)");
      sub->add_option("--out", o.out_dir, "output directory")->required();
      sub->add_option("--url-col", o.columns.url, "list column holding the image URL/path")
          ->capture_default_str();
      sub->add_option("--caption-col", o.columns.caption, "list column holding the original caption")
          ->capture_default_str();
      sub->add_option("--key-col", o.columns.key,
                      "list column holding the sample key (default: img2dataset keys)")
          ->capture_default_str();
      sub->add_flag("--strict-columns", o.columns.strict, "use exactly the named columns (no aliases)");
      sub->add_option("--samples-per-shard", o.samples_per_shard, "samples per output shard for list inputs")
          ->capture_default_str();
      sub->add_option("--precision", o.precision,
                      "weight precision: auto (a quantized cache's own; else int8, or int4 when int8 does "
                      "not fit), f32, bf16, int8, int4")
          ->capture_default_str();
      sub->add_option("--kv-dtype", o.kv_dtype, "KV cache dtype: f32, bf16, f16")->capture_default_str();
      sub->add_option("--max-batch", o.max_batch,
                      "sequences decoded together (default 0: as many as memory holds, at most 16)");
      sub->add_option("--kv-cache-mb", o.kv_cache_mb,
                      "KV cache budget in MiB (default: enough for --max-batch)");
      sub->add_option("--vision-batch", o.vision_batch,
                      "images per vision tower batch (default: min(max-batch, 8))");
      sub->add_flag("--no-vision-thread{false}", o.vision_thread,
                    "encode images between decode steps instead of on a thread of their own");
      sub->add_flag("--no-prefix-cache{false}", o.prefix_cache,
                    "prefill the template before the image for every sample instead of once (same captions)");
      sub->add_option("--max-new-tokens", o.max_new_tokens, "caption length limit in tokens")
          ->capture_default_str();
      sub->add_flag("--ignore-eos", o.ignore_eos,
                    "stop tokens do not end a caption: exactly --max-new-tokens tokens each (benchmarks)");
      sub->add_option("--template", o.template_name,
                      "chat template: a built-in name or a file (default: the model family's, llava-llama3 "
                      "for LLaVA-LLaMA-3)");
      sub->add_option("--prompt", o.prompt, "instruction text (default: the Recap-DataComp-1B prompt)");
      sub->add_option("--temperature", f->temperature, "0 = greedy")->capture_default_str();
      sub->add_option("--top-k", f->top_k, "sample from the k most likely tokens (0 = off)")
          ->capture_default_str();
      sub->add_option("--top-p", f->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
      sub->add_option("--seed", f->seed, "sampling seed (per-sample seeds derive from it and the key)")
          ->capture_default_str();
      sub->add_option("--num-captions", o.num_captions, "captions per image (one encoding and prefill)")
          ->capture_default_str();
      sub->add_option("--shear", o.shear,
                      "cut each caption to the original caption's length: words | tokens");
      sub->add_flag("--first-sentence", o.first_sentence, "keep only the first sentence");
      sub->add_flag("--no-images", o.no_images, "do not copy the images into the output tars");
      sub->add_flag("--overwrite", o.overwrite, "replace shards written with a different fingerprint");
      sub->add_option("--threads", o.threads, "compute threads (default: CPUs allowed to this process)");
      sub->add_option("--io-workers", o.io_workers, "fetch/decode worker threads")->capture_default_str();
      sub->add_option("--http-timeout", o.http_timeout_s, "seconds per HTTP request")->capture_default_str();
      sub->add_option("--http-retries", o.http_retries, "retries of a failed HTTP request")
          ->capture_default_str();
      sub->add_option("--max-image-bytes", o.max_image_bytes, "largest image accepted")
          ->capture_default_str();
      sub->add_option("--local-root", o.local_root,
                      "local image paths and file:// URLs must resolve inside DIR (default: anywhere; "
                      "regular files only)")
          ->check(CLI::ExistingDirectory);
      sub->add_option("--disallowed-header-directives", o.disallowed_header_directives,
                      "X-Robots-Tag directives that refuse an image, comma-separated ('' = ignore them)")
          ->capture_default_str();
      sub->add_option("--max-image-pixels", o.max_image_pixels,
                      "largest image accepted, in pixels (decompression-bomb guard; 0 = no limit)")
          ->capture_default_str();
      sub->add_option("--stats-json", o.stats_json, "write the run summary here");
      sub->add_option("--log-interval", o.log_interval_s, "seconds between log lines when not on a terminal")
          ->capture_default_str();
      sub->add_flag("--quiet", o.quiet, "no progress output");
      sub->add_option(
          "--max-samples", o.max_samples,
          "stop after this many new samples (smoke tests; exit 75 if shards are left unfinished)");
      sub->add_option("--shard-index", f->shard_index,
                      "this worker's index (default: Slurm/K8s env, else 0)");
      sub->add_option("--shard-count", f->shard_count, "number of workers (default: Slurm env, else 1)");
      sub->add_option("--shards", o.shards,
                      "only these input shards: ids/ranges/names like '120-159,200' or @FILE (then strided "
                      "over the workers)");
      sub->add_option("--shards-file", o.shards_file, "only the shards named in FILE (ids, ranges or names)");
      return [f]() -> int {
        auto& o = f->o;
        o.sampling.temperature = f->temperature;
        o.sampling.top_k = f->top_k;
        o.sampling.top_p = f->top_p;
        o.sampling.seed = f->seed;
        if (f->shard_index >= 0) o.shard_index = f->shard_index;
        if (f->shard_count >= 0) o.shard_count = f->shard_count;
        o.engine_version = RECAP_VERSION;
        engine::install_stop_handlers();
        return engine::run_caption(o);
      };
    });

}  // namespace
}  // namespace recap::cli
