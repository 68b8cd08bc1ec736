// The caption job: input shards -> fetch/decode workers -> batched CLIP + projector ->
// prefill -> continuous-batching decode -> webdataset shards, resumable and loss-free.
//
// Flow of one sample: SampleStream (engine/sources) -> Loader worker (bytes, decode,
// preprocess) -> vision batch (encode_images on the VisionWorker thread, concurrently with
// the decoder and ahead of it by up to --max-batch images) -> prompt embeddings (template
// ids with the image spliced in) -> Scheduler (engine/scheduler: prefill, then one token per step while it
// runs) -> text post-processing (strip, --first-sentence, --shear) -> ShardOutput (engine/shard_output).
// Everything from the Loader hand-off to the captions is engine/caption_driver (shared with the
// C API); this file keeps the job: sources, shards, fingerprint, run plan, outputs, reporting.
// Every hand-off carries the sample's (shard, index, key); nothing is matched by position.
//
// Exit codes: 0 every assigned shard done; 1 a runtime failure (a shard could not be
// finished: corrupt input tar, write error...); 2 usage/config error (bad flags, missing or
// unreadable list such as a corrupt .gz, fingerprint conflict without --overwrite); 75
// interrupted with shards left unfinished: by SIGTERM/SIGINT, or by --max-samples before the
// assigned shards were done (what was finished is kept; a rerun continues). --max-samples
// that happens to cover every assigned shard exits 0.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/caption_driver.h"  // first_sentence, shear_words, count_words (tests)
#include "engine/sampler.h"
#include "io/image.h"
#include "io/lists.h"

namespace recap::engine {

struct CaptionOptions {
  // Model. `model` set (with `tokenizer`): the run uses this already loaded model instead of
  // loading weights_dir (bench's caption phase, e.g. on synthetic weights); `precision` must
  // then name the precision it was loaded at, and the fingerprint records the model's
  // config().weights_dir in place of the directory's content. Both outlive the run.
  const models::LlavaModel* model = nullptr;
  const models::Tokenizer* tokenizer = nullptr;
  std::string weights_dir;
  std::string vision_weights_dir;
  std::string vision_config_dir;
  std::string tokenizer_path;
  // auto | f32 | bf16 | int8 | int4. auto: a quantized cache's own precision, else int8, or
  // int4 when int8 does not fit in the memory available (engine/memory_plan.h).
  std::string precision = "auto";
  std::string kv_dtype = "f32";  // f32 | bf16 | f16
  // Inputs / outputs
  std::vector<std::string> lists;
  std::vector<std::string> inputs;
  io::ListColumns columns;
  std::string out_dir;
  int64_t samples_per_shard = 10000;
  bool no_images = false;
  bool overwrite = false;
  std::optional<int64_t> shard_index, shard_count;
  std::string shards, shards_file;  // --shards / --shards-file: rerun a subset (engine/shard_assign.h)
  // Generation
  std::string template_name;  // name or file; "" = the model family's default (models::template_name_for)
  std::string prompt;         // "" = the Recap-DataComp prompt
  int max_new_tokens = 128;
  // Every caption gets exactly max_new_tokens tokens: stop tokens do not end it (benchmarks).
  bool ignore_eos = false;
  SamplingParams sampling;
  int num_captions = 1;
  std::string shear;  // "", "words", "tokens"
  bool first_sentence = false;
  // Resources
  // Sequences decoding at once. 0: chosen from memory (kAutoMaxBatchCap at most): the largest
  // batch whose memory estimate (engine/memory_plan.h: weights, KV for that many sequences,
  // buffers) fits the memory available, once the precision is chosen; 8 for a preloaded model.
  int max_batch = 0;
  int64_t kv_cache_mb = 0;  // 0: enough for max_batch sequences
  int vision_batch = 0;     // 0: min(max_batch, 8)
  // Encode images on a thread of their own, overlapping the decoder (with >= 2 threads);
  // false: between decode steps on the decoder's thread.
  bool vision_thread = true;
  // Prefill the template's positions before the image once and share their KV blocks
  // (false: --no-prefix-cache; captions are identical either way, so not in the fingerprint).
  bool prefix_cache = true;
  int threads = 0;  // 0: auto (affinity/cgroup/OMP_NUM_THREADS/SLURM)
  int io_workers = 8;
  double http_timeout_s = 30;
  int http_retries = 3;
  uint64_t max_image_bytes = 64ull << 20;
  // Local image paths and file:// URLs must resolve (symlinks followed) inside this directory;
  // "" = anywhere (regular files only either way). See docs/CAPTION.md.
  std::string local_root;
  // img2dataset's --disallowed_header_directives, comma-separated; "" disables the check.
  std::string disallowed_header_directives = "noai,noimageai,noindex,noimageindex";
  // Decompression-bomb guard, checked from the image header (io::DecodeOptions::max_pixels;
  // default Pillow's MAX_IMAGE_PIXELS); 0: no limit.
  uint64_t max_image_pixels = io::DecodeOptions{}.max_pixels;
  // Reporting
  std::string stats_json;
  double log_interval_s = 30;
  bool quiet = false;
  // Stop after this many new samples (0: no limit; tests and smoke runs). Shards it leaves
  // unfinished make the run exit 75, like an interrupted one.
  int64_t max_samples = 0;
  std::string engine_version;  // recorded in outputs and part of the fingerprint
};

// Runs the whole job; returns the process exit code (an engine::ExitCode). Prints progress and a
// summary to stderr. A usage/configuration error found before any work is printed as
// "caption: error: ..." and returns 2; other exceptions escape to the caller
// (tools/main.cpp maps them with exit_code_for).
int run_caption(const CaptionOptions& opts);

}  // namespace recap::engine
