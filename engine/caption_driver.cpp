#include "engine/caption_driver.h"

#include <algorithm>
#include <chrono>

#include "engine/errors.h"
#include "engine/failpoints.h"
#include "engine/threads.h"

namespace recap::engine {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- template and prompts

models::ChatTemplate resolve_caption_template(const models::ModelConfig& cfg, const std::string& name_or_path,
                                              const std::string& prompt) {
  models::ChatTemplate t = models::resolve_template_for(cfg, name_or_path);
  if (!prompt.empty()) t.prompt = prompt;
  return t;
}

std::map<std::string, std::string> prompt_fields(const SampleInput& in) {
  std::map<std::string, std::string> f;
  for (auto it = in.extra.begin(); it != in.extra.end(); ++it)
    f[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  f["original_caption"] = in.caption;
  f["caption"] = in.caption;
  f["key"] = in.key;
  f["url"] = in.url;
  return f;
}

namespace {
std::vector<int32_t> sample_prompt_ids(const models::ChatTemplate& t, const models::Tokenizer& tok,
                                       const SampleInput& in) {
  models::PromptInputs pin;
  pin.prompt = t.prompt;
  pin.fields = prompt_fields(in);
  return models::build_prompt_ids(t, tok, pin);
}
}  // namespace

std::vector<int32_t> template_prompt_ids(const models::ChatTemplate& t, const models::Tokenizer& tok) {
  // A prompt that renders for a sample without fields proves the template's fields exist.
  return as_usage_error("template", [&] { return sample_prompt_ids(t, tok, SampleInput{}); });
}

// ---------------------------------------------------------------- text post-processing

namespace {
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
}  // namespace

std::string first_sentence(const std::string& text) {
  std::string s = models::strip_python_whitespace(text);
  size_t dot = s.find('.');
  if (dot != std::string::npos) s.resize(dot);
  return models::strip_python_whitespace(s);
}

int64_t count_words(const std::string& text) {
  int64_t n = 0;
  bool in = false;
  for (char c : text) {
    if (is_space(c)) {
      in = false;
    } else if (!in) {
      in = true;
      ++n;
    }
  }
  return n;
}

std::string shear_words(const std::string& text, int64_t n_words) {
  if (n_words <= 0) return text;
  int64_t n = 0;
  bool in = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (is_space(text[i])) {
      if (in && n == n_words) return text.substr(0, i);
      in = false;
    } else if (!in) {
      in = true;
      ++n;
    }
  }
  return text;
}

// ---------------------------------------------------------------- the driver

CaptionDriver::CaptionDriver(const models::LlavaModel& model, const models::Tokenizer& tok,
                             models::ChatTemplate tmpl, std::vector<int32_t> stop_ids,
                             const DriverOptions& opts, Loader& loader, std::unique_ptr<KvCachePool>& pool,
                             std::function<bool()> stopping)
    : model_(model),
      tok_(tok),
      tmpl_(std::move(tmpl)),
      o_(opts),
      loader_(loader),
      stopping_(std::move(stopping)),
      pool_([&]() -> KvCachePool& {
        const auto& cfg = model.config();
        // Prompt length for sizing: the template without sample fields.
        const auto ids = template_prompt_ids(tmpl_, tok);
        n_prompt_est_ = model.spliced_length(std::vector<int64_t>(ids.begin(), ids.end()));
        KvCacheShape shape;
        shape.layers = cfg.text.layers;
        shape.kv_heads = cfg.text.kv_heads;
        shape.head_dim = cfg.text.head_dim;
        shape.block_size = kKvBlockPositions;
        shape.dtype = opts.kv_dtype;
        const int64_t bs = shape.block_size;
        int64_t blocks;
        if (opts.kv_cache_mb > 0) {
          blocks = KvCachePool::blocks_for_budget(shape, static_cast<size_t>(opts.kv_cache_mb) << 20);
          const int64_t one = (n_prompt_est_ + opts.max_new_tokens + bs - 1) / bs;
          const int64_t min_blocks =
              one + static_cast<int64_t>(opts.num_captions - 1) * (one - n_prompt_est_ / bs);
          if (blocks < min_blocks)
            throw UsageError(
                "--kv-cache-mb " + std::to_string(opts.kv_cache_mb) + " holds " + std::to_string(blocks) +
                " blocks; one image needs " + std::to_string(min_blocks) + " (" +
                std::to_string(((static_cast<size_t>(min_blocks) * shape.bytes_per_block()) >> 20) + 1) +
                " MiB)");
        } else {
          // Sample fields in the template make prompts longer than the estimate: leave 25% room.
          const int64_t per_seq = (n_prompt_est_ + n_prompt_est_ / 4 + opts.max_new_tokens + bs - 1) / bs;
          if (per_seq > ((int64_t(1) << 31) - 1) / std::max(1, opts.max_batch))
            throw KvCacheTooLarge("a KV cache for max_batch " + std::to_string(opts.max_batch) +
                                  " sequences of " + std::to_string(per_seq * bs) +
                                  " positions is too large");
          blocks = per_seq * opts.max_batch;
        }
        const bool reusable =
            pool && pool->total_blocks() >= blocks && pool->free_blocks() == pool->total_blocks() &&
            pool->shape().layers == shape.layers && pool->shape().kv_heads == shape.kv_heads &&
            pool->shape().head_dim == shape.head_dim && pool->shape().block_size == shape.block_size &&
            pool->shape().dtype == shape.dtype;
        if (!reusable) {
          pool.reset();
          pool = std::make_unique<KvCachePool>(shape, blocks);
        }
        return *pool;
      }()) {
  const auto& cfg = model_.config();
  image_side_ = models::from_vision_config(cfg.vision).crop_size;
  vision_batch_ = o_.vision_batch > 0 ? o_.vision_batch : std::min(o_.max_batch, 8);
  SchedulerOptions so;
  so.max_batch = o_.max_batch;
  so.max_new_tokens = o_.max_new_tokens;
  so.vocab_limit = tok_.vocab_size();
  if (!o_.ignore_eos)
    for (int32_t id : stop_ids) so.stop_ids.insert(id);
  sched_ = std::make_unique<Scheduler>(model_, pool_, so);
  if (o_.prefix_cache) {
    // The positions before the image in the template rendered without sample fields; a
    // sample shares them when its own prompt starts with the same ids (fields before the
    // image make it differ, and it then prefills its whole prompt). Only whole blocks.
    const auto ids = template_prompt_ids(tmpl_, tok_);
    size_t before_image = 0;
    while (before_image < ids.size() && !model_.is_image_token(ids[before_image])) ++before_image;
    const int64_t bs = pool_.block_size();
    const int64_t n = static_cast<int64_t>(before_image) / bs * bs;
    if (before_image < ids.size() && n >= bs) {
      prefix_ids_.assign(ids.begin(), ids.begin() + n);
      std::vector<float> embeds(static_cast<size_t>(n * cfg.text.hidden));
      model_.splice_embeddings(std::vector<int64_t>(prefix_ids_.begin(), prefix_ids_.end()), nullptr, 0,
                               embeds.data());
      sched_->set_shared_prefix(embeds.data(), n);
    }
  }
  if (o_.vision_thread && o_.threads >= 2) vision_ = std::make_unique<VisionWorker>(model_);
}

CaptionDriver::~CaptionDriver() = default;

size_t CaptionDriver::queued() const {
  return loader_.outstanding() + ready_.size() + encoded_.size();
}

void CaptionDriver::push(uint64_t id, SampleInput in, std::optional<io::Image> rgb) {
  flight_[id];
  ++in_flight_;
  LoadJob job;
  job.tag = id;
  job.in = std::move(in);
  job.decoded = std::move(rgb);
  loader_.push(std::move(job));
}

void CaptionDriver::fail(uint64_t id, std::string status, SampleFailure failure, std::string error,
                         const RecordSink& sink) {
  auto it = flight_.find(id);
  if (it == flight_.end()) return;
  CaptionRecord rec;
  rec.id = id;
  rec.load = std::move(it->second.load);
  std::vector<float>().swap(rec.load.pixels);
  rec.status = std::move(status);
  rec.failure = failure;
  rec.error = std::move(error);
  flight_.erase(it);
  --in_flight_;
  sink(std::move(rec));
}

void CaptionDriver::on_loaded(LoadResult r, const RecordSink& sink) {
  auto it = flight_.find(r.tag);
  if (it == flight_.end()) return;
  Pending& p = it->second;
  p.load = std::move(r);
  const uint64_t id = it->first;
  if (!p.load.status.empty()) {
    const SampleFailure kind = p.load.status == "failed_to_decode"     ? SampleFailure::kImage
                               : p.load.status == "failed_to_download" ? SampleFailure::kFetch
                                                                       : SampleFailure::kInput;
    fail(id, p.load.status, kind, p.load.error, sink);
    return;
  }
  // img2dataset's sha256 / exif sidecar fields, unless the input record already has them
  // (templates may use them).
  auto& extra = p.load.in.extra;
  if (!p.load.sha256.empty() && !extra.contains("sha256")) extra["sha256"] = p.load.sha256;
  if (p.load.exif && !extra.contains("exif")) extra["exif"] = *p.load.exif;
  try {
    p.prompt_ids = sample_prompt_ids(tmpl_, tok_, p.load.in);
    p.n_prompt = model_.spliced_length(std::vector<int64_t>(p.prompt_ids.begin(), p.prompt_ids.end()));
    if (!prefix_ids_.empty() && p.prompt_ids.size() > prefix_ids_.size() &&
        std::equal(prefix_ids_.begin(), prefix_ids_.end(), p.prompt_ids.begin()))
      p.shared_prefix = static_cast<int64_t>(prefix_ids_.size());
  } catch (const std::exception& e) {
    fail(id, "failed_to_caption", SampleFailure::kPrompt, std::string("prompt: ") + e.what(), sink);
    return;
  }
  const int64_t max_position = model_.config().text.max_position;
  if (p.n_prompt + o_.max_new_tokens > max_position) {
    fail(id, "failed_to_caption", SampleFailure::kPrompt,
         "prompt (" + std::to_string(p.n_prompt) + " positions) + max_new_tokens " +
             std::to_string(o_.max_new_tokens) + " exceeds the model's " + std::to_string(max_position) +
             " positions",
         sink);
    return;
  }
  ready_.push_back(id);
}

VisionBatch CaptionDriver::take_ready_batch(int threads) {
  const size_t B = std::min(ready_.size(), static_cast<size_t>(vision_batch_));
  const size_t img_elems = static_cast<size_t>(3 * image_side_ * image_side_);
  VisionBatch b;
  b.threads = threads;
  b.pixels.resize(B * img_elems);
  for (size_t i = 0; i < B; ++i) {
    uint64_t id = ready_.front();
    ready_.pop_front();
    auto& px = flight_[id].load.pixels;
    std::copy(px.begin(), px.end(), b.pixels.begin() + static_cast<long>(i * img_elems));
    std::vector<float>().swap(px);
    b.tags.push_back(id);
  }
  return b;
}

// The one tower-failure policy: the samples of a failed batch fail, every other goes on.
void CaptionDriver::finish_encoded(VisionBatch& b, const RecordSink& sink) {
  if (!b.error.empty()) {
    for (uint64_t id : b.tags)
      fail(id, "failed_to_caption", SampleFailure::kTower, "vision tower: " + b.error, sink);
    return;
  }
  const auto& cfg = model_.config();
  const int64_t P = cfg.vision.num_patches(), D = cfg.text.hidden;
  for (size_t i = 0; i < b.tags.size(); ++i) {
    Pending& p = flight_[b.tags[i]];
    p.vision_ms = b.ms / static_cast<double>(b.tags.size());
    CaptionRequest req;
    req.id = b.tags[i];
    req.n_prompt = p.n_prompt;
    req.prompt_embeds.resize(static_cast<size_t>(p.n_prompt * D));
    std::vector<int64_t> ids64(p.prompt_ids.begin(), p.prompt_ids.end());
    model_.splice_embeddings(ids64, b.features.data() + i * static_cast<size_t>(P * D), 1,
                             req.prompt_embeds.data());
    req.n_captions = o_.num_captions;
    req.sampling = o_.sampling;
    req.seed_key = p.load.in.key;
    req.shared_prefix = p.shared_prefix;
    encoded_.emplace_back(b.tags[i], std::move(req));
  }
}

void CaptionDriver::encode_ready(const RecordSink& sink) {
  // Keep up to max_batch encoded images waiting, so freed batch slots fill at once.
  const size_t want = static_cast<size_t>(o_.max_batch);
  if (vision_) {
    VisionBatch done;
    if (vision_->collect(&done, 0)) finish_encoded(done, sink);
    // The tower overlaps decode steps, which are memory-bound and leave compute to spare;
    // beside a prefill (compute-bound like the tower) splitting the cores gains nothing, so a
    // batch starts only when the scheduler is idle (all threads) or will only decode (half
    // of them): prompts already encoded and waiting will be prefilled first.
    const bool decode_only = !sched_->idle() && !sched_->has_pending_prefill() && encoded_.empty();
    if (!vision_->busy() && !ready_.empty() && encoded_.size() < want && !stopping() &&
        ((sched_->idle() && encoded_.empty()) || decode_only)) {
      const int t = sched_->idle() ? o_.threads : std::max(1, o_.threads / 2);
      vision_->submit(take_ready_batch(t));
    }
    return;
  }
  while (!ready_.empty() && encoded_.size() < want && !stopping()) {
    VisionBatch b = take_ready_batch(o_.threads);
    const auto& cfg = model_.config();
    b.features.resize(b.tags.size() * static_cast<size_t>(cfg.vision.num_patches() * cfg.text.hidden));
    auto t0 = Clock::now();
    try {  // as on the tower's thread: a failed batch fails its samples, the rest go on
      failpoint_vision_tower_batch();  // tests: RECAP_FAILPOINTS=vision_tower_batch:N
      model_.encode_images(b.pixels.data(), static_cast<int64_t>(b.tags.size()), b.features.data());
    } catch (const std::exception& e) {
      b.error = e.what();
    }
    b.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    finish_encoded(b, sink);
  }
}

void CaptionDriver::admit_encoded() {
  while (!encoded_.empty() && !stopping()) {
    auto& [id, req] = encoded_.front();
    if (!sched_->can_admit(req.n_prompt, req.n_captions, req.shared_prefix)) break;
    sched_->admit(std::move(req));
    encoded_.pop_front();
  }
}

void CaptionDriver::on_caption(const CaptionResult& r, const RecordSink& sink) {
  auto it = flight_.find(r.id);
  if (it == flight_.end()) return;
  if (!r.error.empty()) {
    fail(r.id, "failed_to_caption", SampleFailure::kGeneration, r.error, sink);
    return;
  }
  CaptionRecord rec;
  rec.id = r.id;
  rec.load = std::move(it->second.load);
  rec.vision_ms = it->second.vision_ms;
  flight_.erase(it);
  --in_flight_;
  const std::string& original = rec.load.in.caption;
  for (auto ids : r.tokens) {
    rec.new_tokens += static_cast<int64_t>(ids.size());
    if (o_.shear == "tokens" && !original.empty()) {
      size_t n = tok_.encode(original, false).size();
      if (ids.size() > n) ids.resize(n);
    }
    std::string text = tok_.decode_output(ids);
    if (o_.first_sentence) text = first_sentence(text);
    if (o_.shear == "words" && !original.empty()) text = shear_words(text, count_words(original));
    rec.captions.push_back(std::move(text));
  }
  rec.stop_reasons = r.stop_reason;
  rec.prompt_tokens = r.n_prompt;
  rec.prefill_ms = r.prefill_ms;
  rec.decode_ms = r.decode_ms;
  sink(std::move(rec));
}

void CaptionDriver::pump(const RecordSink& sink) {
  LoadResult lr;
  while (loader_.pop(&lr, 0)) on_loaded(std::move(lr), sink);
  encode_ready(sink);
  admit_encoded();
  if (!sched_->idle()) {
    if (vision_) {
      // A step's thread count holds for the whole step, and a prefill step can be long: let a
      // tower batch started beside decoding finish first, so the prefill gets every thread.
      if (sched_->has_pending_prefill()) {
        VisionBatch done;
        while (vision_->busy())
          if (vision_->collect(&done, 100)) finish_encoded(done, sink);
      }
      // The decoder gets the threads the tower is not using.
      apply_threads(std::max(1, o_.threads - vision_->threads_in_use()));
    }
    auto finished = sched_->step();
    // Freed slots are refilled before the finished samples' records go out: once a record is
    // written, the samples waiting for its slot are in flight (a stop requested after seeing
    // it finishes them), and the writes do not delay the next prefill.
    admit_encoded();
    for (auto& r : finished) on_caption(r, sink);
  } else if (vision_ && vision_->busy()) {
    // Nothing to decode until the tower finishes (the start of a run, or the input could not
    // keep up): wait for it rather than spin.
    const auto t0 = Clock::now();
    VisionBatch done;
    if (vision_->collect(&done, 100)) finish_encoded(done, sink);
    llm_waited_for_vision_s_ += std::chrono::duration<double>(Clock::now() - t0).count();
  } else if (ready_.empty() && encoded_.empty() && loader_.outstanding() > 0 && !stopping()) {
    if (loader_.pop(&lr, 100)) on_loaded(std::move(lr), sink);
  }
}

}  // namespace recap::engine
