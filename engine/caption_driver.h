// The caption driver: the one path from a sample to its captions, shared by
// `recap-engine caption` (engine/caption_pipeline) and the C API (engine/c_api.cpp).
//
// Samples go in as SampleInput (bytes to decode, a URL or path to fetch, decoded RGB pixels,
// or an input that already failed), each with the caller's id; records come out, one per
// sample, in completion order. In between the driver owns everything both callers need:
//   - the chat template (the default one is applied here and nowhere else), the prompt
//     fields of a sample and its prompt ids;
//   - the KV cache size (reusing the caller's pool when it fits) and the Scheduler;
//   - the Loader hand-off (decode + preprocess on worker threads);
//   - the vision batches (on a VisionWorker thread beside the decoder, or between decode
//     steps), feature splicing and admission;
//   - text post-processing (decode, --first-sentence, --shear, num_captions);
//   - ONE per-sample error policy: a sample whose input, image, prompt, tower batch or
//     generation fails gets a record with its status and error and the rest go on. A vision
//     tower exception fails exactly the samples of its batch.
// The caller keeps what is its own: where samples come from and where records go (shards,
// resume, reporting for the CLI; C structs and callbacks for the C API).
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/loader.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/sources.h"
#include "engine/vision_worker.h"
#include "models/chat_template.h"
#include "models/llava.h"
#include "models/tokenizer.h"

namespace recap::engine {

// Every caption option, the same for the CLI and the C API.
struct DriverOptions {
  int max_new_tokens = 128;
  // Stop tokens do not end a caption: every caption gets exactly max_new_tokens tokens (a
  // sampled stop token is kept as an ordinary token). For benchmarking: fixed work per image.
  bool ignore_eos = false;
  SamplingParams sampling;
  int num_captions = 1;  // captions per image (each from the same prefill)
  std::string shear;     // "", "words", "tokens": at most the original caption's length
  bool first_sentence = false;
  int max_batch = 8;        // sequences decoding at once
  int vision_batch = 0;     // images per tower call; 0: min(max_batch, 8)
  int64_t kv_cache_mb = 0;  // 0: enough for max_batch sequences
  kernels::KvDType kv_dtype = kernels::KvDType::F32;
  int threads = 1;            // the thread budget (resolved)
  bool vision_thread = true;  // encode on a thread of its own when threads >= 2
  // Prefill the template's positions before the image once per driver and fork their whole
  // KV blocks into every sample whose prompt starts with them (Scheduler::set_shared_prefix);
  // captions are identical either way.
  bool prefix_cache = true;
};

// A KV cache that cannot be indexed (more than 2^31 - 1 blocks): refused before allocating.
struct KvCacheTooLarge : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Why a sample failed, beside its img2dataset-style status string (for the C API's codes).
enum class SampleFailure {
  kNone,
  kInput,       // failed_to_parse: malformed input, no pixels given, bad RGB size
  kFetch,       // failed_to_download
  kImage,       // failed_to_decode
  kPrompt,      // failed_to_caption: the prompt does not render or is too long for the model
  kTower,       // failed_to_caption: the vision tower threw for this sample's batch
  kGeneration,  // failed_to_caption: the scheduler could not run the request
};

// One finished sample.
struct CaptionRecord {
  uint64_t id = 0;                 // the caller's
  LoadResult load;                 // the sample as loaded (input, image size, bytes...); pixels released
  std::string status = "success";  // or failed_to_parse/_download/_decode/_caption
  SampleFailure failure = SampleFailure::kNone;
  std::string error;
  std::vector<std::string> captions;      // num_captions of them on success
  std::vector<std::string> stop_reasons;  // per caption: "stop_token" | "max_new_tokens"
  int64_t prompt_tokens = 0;              // prompt positions, image features included
  int64_t new_tokens = 0;                 // generated tokens over every caption, stop excluded
  double vision_ms = 0, prefill_ms = 0, decode_ms = 0;
  bool ok() const { return failure == SampleFailure::kNone; }
};

// The template a run uses: `name_or_path` ("" = the model family's default, through
// models::template_name_for) with its prompt replaced by `prompt` when not empty. Throws what
// models::resolve_template throws.
models::ChatTemplate resolve_caption_template(const models::ModelConfig& cfg, const std::string& name_or_path,
                                              const std::string& prompt);

// The fields a template may use for a sample: its extra columns, original_caption, caption,
// key and url.
std::map<std::string, std::string> prompt_fields(const SampleInput& in);

// The prompt ids of a sample without fields (the shape of every prompt, for sizing); throws
// UsageError("template: ...") when the template uses a field no sample has.
std::vector<int32_t> template_prompt_ids(const models::ChatTemplate& t, const models::Tokenizer& tok);

// Text post-processing.
// --first-sentence: Python's `text.strip().split('.')[0]`, stripped again.
std::string first_sentence(const std::string& text);
// --shear words: at most `n_words` whitespace-separated words of `text` (original spacing of
// the kept part preserved, trailing space dropped). n_words <= 0 keeps the text.
std::string shear_words(const std::string& text, int64_t n_words);
int64_t count_words(const std::string& text);

class CaptionDriver {
 public:
  using RecordSink = std::function<void(CaptionRecord&&)>;

  // `stop_ids` end a caption. `pool` is the caller's KV cache slot: reused when its shape
  // matches, it has the blocks needed and every block is free; replaced otherwise. `stopping`
  // (may be empty) says the caller is winding down: no new tower batch or admission starts,
  // running sequences finish. Throws KvCacheTooLarge, UsageError (--kv-cache-mb too small),
  // std::bad_alloc.
  CaptionDriver(const models::LlavaModel& model, const models::Tokenizer& tok, models::ChatTemplate tmpl,
                std::vector<int32_t> stop_ids, const DriverOptions& opts, Loader& loader,
                std::unique_ptr<KvCachePool>& pool, std::function<bool()> stopping = {});
  ~CaptionDriver();
  CaptionDriver(const CaptionDriver&) = delete;
  CaptionDriver& operator=(const CaptionDriver&) = delete;

  // Queues a sample (`rgb` set: already decoded pixels, preprocessed without decoding).
  void push(uint64_t id, SampleInput in, std::optional<io::Image> rgb = std::nullopt);
  // One turn: takes loaded samples, starts tower batches, admits, runs one scheduler step;
  // with nothing to decode it waits (up to 100 ms) for the tower or the loader instead of
  // spinning. Every sample finished during the turn goes to `sink`.
  void pump(const RecordSink& sink);

  // Samples pushed and not yet recorded.
  size_t in_flight() const { return in_flight_; }
  // Samples loading, waiting for the tower or for a batch slot (the caller's lookahead).
  size_t queued() const;
  // How many samples a caller keeps queued so the tower and freed batch slots never wait:
  // two batches of sequences, a tower batch and one per loader worker.
  size_t lookahead(int loader_workers) const {
    return static_cast<size_t>(2 * o_.max_batch + vision_batch_ + loader_workers);
  }
  // No sequence is decoding (stop: everything started has finished).
  bool decoding_idle() const { return sched_->idle(); }

  // For the CLI's report.
  int64_t prompt_estimate() const { return n_prompt_est_; }
  int64_t kv_blocks() const { return pool_.total_blocks(); }
  const KvCachePool& pool() const { return pool_; }
  int64_t tokens_prefilled() const { return sched_->tokens_prefilled(); }
  // The shared prefix's positions (0: none) and the prompt positions it saved computing.
  int64_t prefix_positions() const { return sched_->shared_prefix_positions(); }
  int64_t prefix_positions_saved() const { return sched_->prefix_positions_saved(); }
  bool vision_thread() const { return vision_ != nullptr; }
  double llm_waited_for_vision_s() const { return llm_waited_for_vision_s_; }

 private:
  struct Pending {
    LoadResult load;
    std::vector<int32_t> prompt_ids;
    int64_t n_prompt = 0;
    int64_t shared_prefix = 0;  // positions it shares with the scheduler's prefix
    double vision_ms = 0;
  };
  bool stopping() const { return stopping_ && stopping_(); }
  void on_loaded(LoadResult r, const RecordSink& sink);
  VisionBatch take_ready_batch(int threads);
  void finish_encoded(VisionBatch& b, const RecordSink& sink);
  void encode_ready(const RecordSink& sink);
  void admit_encoded();
  void on_caption(const CaptionResult& r, const RecordSink& sink);
  void fail(uint64_t id, std::string status, SampleFailure failure, std::string error,
            const RecordSink& sink);

  const models::LlavaModel& model_;
  const models::Tokenizer& tok_;
  models::ChatTemplate tmpl_;
  DriverOptions o_;
  Loader& loader_;
  std::function<bool()> stopping_;
  int vision_batch_ = 8;
  int64_t image_side_ = 0;
  int64_t n_prompt_est_ = 0;
  std::vector<int32_t> prefix_ids_;  // the shared prefix's ids (empty: none)
  KvCachePool& pool_;
  std::unique_ptr<Scheduler> sched_;
  std::map<uint64_t, Pending> flight_;
  std::deque<uint64_t> ready_;                               // loaded, waiting for the tower
  std::deque<std::pair<uint64_t, CaptionRequest>> encoded_;  // waiting for a batch slot
  size_t in_flight_ = 0;
  double llm_waited_for_vision_s_ = 0;
  // Declared last: joined before anything it reads goes away.
  std::unique_ptr<VisionWorker> vision_;
};

}  // namespace recap::engine
