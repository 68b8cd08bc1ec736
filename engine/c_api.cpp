// The C API (include/recap/recap.h) over the engine: the same model loading, prompt building,
// vision batching and continuous-batching scheduler that `recap-engine caption` runs, minus the
// list/shard/resume machinery. A batch flows: prompt ids per sample (template + fields) ->
// decode + preprocess a vision group (worker threads) -> encode_images -> splice -> Scheduler
// (prefill + batched decode; a finished caption frees its slot for the next image at once).
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/threads.h"
#include "io/fileutil.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/preprocess.h"
#include "models/tokenizer.h"
#include "recap/recap.h"

namespace {

// The integer a C caller stored in an enum field, read without loading the enum type itself
// (any int may arrive through the C ABI; an out-of-range enum load is undefined behaviour).
template <class Enum>
int enum_value(const Enum& e) {
  std::underlying_type_t<Enum> raw;
  std::memcpy(&raw, &e, sizeof raw);
  return static_cast<int>(raw);
}

namespace engine = recap::engine;
namespace models = recap::models;
namespace kernels = recap::kernels;
namespace io = recap::io;

// ------------------------------------------------------------------ errors and logging

// An error with its C status, thrown inside the API functions and turned into a return code.
struct ApiError {
  recap_status status;
  std::string message;
};

char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

void set_error(char** error, const std::string& message) {
  if (error) *error = dup_string(message);
}

std::mutex g_log_mu;
recap_log_callback g_log_cb = nullptr;
void* g_log_user = nullptr;

const char* level_name(recap_log_level l) {
  switch (l) {
    case RECAP_LOG_DEBUG:
      return "debug";
    case RECAP_LOG_INFO:
      return "info";
    case RECAP_LOG_WARN:
      return "warning";
    case RECAP_LOG_ERROR:
      return "error";
  }
  return "log";
}

void log_line(recap_log_level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (g_log_cb) {
    g_log_cb(level, message.c_str(), g_log_user);
  } else if (level >= RECAP_LOG_WARN) {
    std::fprintf(stderr, "recap: %s: %s\n", level_name(level), message.c_str());
  }
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_readable_file(const std::string& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return false;
  std::fclose(f);
  return true;
}

// Runs `fn`, mapping exceptions to a status + message. ApiError carries its own status; the
// engine's exception types say what kind of failure it was.
template <class Fn>
recap_status guarded(char** error, Fn&& fn) {
  if (error) *error = nullptr;
  try {
    fn();
    return RECAP_OK;
  } catch (const ApiError& e) {
    set_error(error, e.message);
    return e.status;
  } catch (const std::bad_alloc&) {
    set_error(error, "out of memory");
    return RECAP_ERR_OUT_OF_MEMORY;
  } catch (const io::IoError& e) {
    set_error(error, e.what());
    return RECAP_ERR_IO;
  } catch (const models::ConfigError& e) {
    set_error(error, e.what());
    return RECAP_ERR_FORMAT;
  } catch (const models::TokenizerError& e) {
    set_error(error, e.what());
    return RECAP_ERR_FORMAT;
  } catch (const io::FormatError& e) {
    set_error(error, e.what());
    return RECAP_ERR_FORMAT;
  } catch (const std::exception& e) {
    set_error(error, std::string("internal error: ") + e.what());
    return RECAP_ERR_INTERNAL;
  } catch (...) {
    set_error(error, "internal error: unknown exception");
    return RECAP_ERR_INTERNAL;
  }
}

}  // namespace

// ------------------------------------------------------------------ the model handle

struct recap_model {
  std::mutex mu;  // one captioning call at a time
  std::unique_ptr<models::LlavaModel> llava;
  std::unique_ptr<models::Tokenizer> tok;
  std::vector<int64_t> generation_eos;
  models::PreprocessConfig pre;
  kernels::KvDType kv_dtype = kernels::KvDType::F32;
  int threads = 1;
  // Reused between calls when large enough and every block came back (a cancelled call can
  // leave blocks held by sequences it abandoned; the pool is then dropped).
  std::unique_ptr<engine::KvCachePool> pool;
};

extern "C" {

const char* recap_version(void) {
#define RECAP_STR2(x) #x
#define RECAP_STR(x) RECAP_STR2(x)
  return RECAP_STR(RECAP_VERSION_MAJOR) "." RECAP_STR(RECAP_VERSION_MINOR) "." RECAP_STR(RECAP_VERSION_PATCH);
#undef RECAP_STR
#undef RECAP_STR2
}

const char* recap_status_string(recap_status status) {
  switch (status) {
    case RECAP_OK:
      return "ok";
    case RECAP_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case RECAP_ERR_IO:
      return "i/o error (missing or unreadable file)";
    case RECAP_ERR_FORMAT:
      return "malformed file";
    case RECAP_ERR_UNSUPPORTED:
      return "unsupported";
    case RECAP_ERR_IMAGE:
      return "image could not be decoded";
    case RECAP_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case RECAP_ERR_CANCELLED:
      return "cancelled";
    case RECAP_ERR_INTERNAL:
      return "internal error";
  }
  return "unknown status";
}

recap_model_params recap_model_default_params(void) {
  recap_model_params p;
  p.weights_dir = nullptr;
  p.vision_weights_dir = nullptr;
  p.tokenizer_path = nullptr;
  p.precision = RECAP_PRECISION_F32;
  p.kv_dtype = RECAP_KV_F32;
  p.threads = 0;
  return p;
}

recap_caption_params recap_caption_default_params(void) {
  recap_caption_params p;
  p.template_name = nullptr;
  p.prompt = nullptr;
  p.max_new_tokens = 128;
  p.temperature = 0.f;
  p.top_k = 0;
  p.top_p = 1.f;
  p.seed = 0;
  p.max_batch = 8;
  p.vision_batch = 0;
  return p;
}

void recap_set_log_callback(recap_log_callback callback, void* user_data) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log_cb = callback;
  g_log_user = callback ? user_data : nullptr;
}

recap_status recap_model_load(const recap_model_params* params, recap_model** model, char** error) {
  if (model) *model = nullptr;
  return guarded(error, [&] {
    if (!params) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_model_load: params is NULL"};
    if (!model) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_model_load: model is NULL"};
    if (!params->weights_dir || !*params->weights_dir)
      throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_model_load: weights_dir is not set"};
    kernels::WeightFormat precision;
    // Read the enums as their underlying integers: a caller may pass any int, and loading an
    // out-of-range value through the enum type is undefined behaviour.
    const int precision_raw = enum_value(params->precision);
    switch (precision_raw) {
      case RECAP_PRECISION_F32:
        precision = kernels::WeightFormat::F32;
        break;
      case RECAP_PRECISION_BF16:
        precision = kernels::WeightFormat::BF16;
        break;
      case RECAP_PRECISION_INT8:
        precision = kernels::WeightFormat::Int8;
        break;
      case RECAP_PRECISION_INT4:
        precision = kernels::WeightFormat::Int4;
        break;
      default:
        throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_model_load: precision " +
                                                       std::to_string(precision_raw) +
                                                       " is not a recap_precision value"};
    }
    kernels::KvDType kv;
    const int kv_dtype_raw = enum_value(params->kv_dtype);
    switch (kv_dtype_raw) {
      case RECAP_KV_F32:
        kv = kernels::KvDType::F32;
        break;
      case RECAP_KV_BF16:
        kv = kernels::KvDType::BF16;
        break;
      case RECAP_KV_F16:
        kv = kernels::KvDType::F16;
        break;
      default:
        throw ApiError{
            RECAP_ERR_INVALID_ARGUMENT,
            "recap_model_load: kv_dtype " + std::to_string(kv_dtype_raw) + " is not a recap_kv_dtype value"};
    }
    if (params->threads < 0)
      throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_model_load: threads must be >= 0"};

    // Missing inputs are I/O errors, told apart here from malformed ones (FORMAT) which the
    // loaders report by exception type.
    const std::string weights_dir = params->weights_dir;
    if (!is_dir(weights_dir))
      throw ApiError{RECAP_ERR_IO, weights_dir + ": checkpoint directory not found or not a directory"};
    models::LoadOptions lo;
    if (params->vision_weights_dir && *params->vision_weights_dir) {
      lo.vision_weights_dir = params->vision_weights_dir;
      if (!is_dir(lo.vision_weights_dir))
        throw ApiError{RECAP_ERR_IO, lo.vision_weights_dir + ": vision weights directory not found"};
    }
    const std::string tok_explicit = params->tokenizer_path ? params->tokenizer_path : "";
    const std::string tok_path =
        tok_explicit.empty() ? io::join_path(weights_dir, "tokenizer.json") : tok_explicit;
    if (!is_readable_file(tok_path))
      throw ApiError{RECAP_ERR_IO,
                     tok_path + ": tokenizer.json not found or unreadable" +
                         (tok_explicit.empty() ? " (the checkpoint has none: set tokenizer_path)" : "")};
    if (!is_readable_file(io::join_path(weights_dir, "config.json")))
      throw ApiError{RECAP_ERR_IO, io::join_path(weights_dir, "config.json") + ": not found or unreadable"};

    auto m = std::make_unique<recap_model>();
    models::Checkpoint ckpt = models::open_checkpoint(weights_dir, lo);
    if (!ckpt.config.has_text || !ckpt.config.has_vision)
      throw ApiError{
          RECAP_ERR_UNSUPPORTED,
          weights_dir + ": not a LLaVA checkpoint (needs the vision tower and the language model)"};
    m->tok = std::make_unique<models::Tokenizer>(models::open_tokenizer(ckpt.config, tok_path));
    const engine::ThreadBudget tb = engine::resolve_threads(params->threads);
    m->threads = tb.threads;
    engine::apply_threads(m->threads);
    models::ModelOptions mo;
    mo.precision = precision;
    mo.kv_dtype = kv;
    auto t0 = std::chrono::steady_clock::now();
    m->llava = models::LlavaModel::load(ckpt, mo);
    m->generation_eos = m->llava->config().generation.eos_token_ids;
    m->pre = models::from_vision_config(m->llava->config().vision);
    m->kv_dtype = kv;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_line(RECAP_LOG_INFO, "model " + weights_dir + ": " + models::layout_name(m->llava->config().layout) +
                                 ", " + kernels::weight_format_name(precision) + " weights (" +
                                 std::to_string(m->llava->weight_bytes() >> 20) + " MiB) loaded in " +
                                 std::to_string(secs) + " s; threads " + std::to_string(m->threads) + " (" +
                                 tb.source + ")");
    *model = m.release();
  });
}

void recap_model_free(recap_model* model) {
  delete model;
}

}  // extern "C"

// ------------------------------------------------------------------ captioning

namespace {

struct Sample {
  std::string key;
  std::vector<int32_t> prompt_ids;
  int64_t n_prompt = 0;
  recap_status status = RECAP_OK;
  std::string caption, error;
  int new_tokens = 0;
  bool done = false;
};

// Template by name or file: unknown names are invalid arguments, missing files I/O errors,
// files that do not parse FORMAT errors.
models::ChatTemplate resolve_template_checked(const std::string& name) {
  const auto names = models::builtin_template_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return models::builtin_template(name);
  const bool looks_like_path = name.find('/') != std::string::npos || name.find('.') != std::string::npos;
  if (!looks_like_path) {
    std::string known;
    for (auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT,
                   "template '" + name + "' is neither a built-in template (" + known + ") nor a file path"};
  }
  if (!is_readable_file(name)) throw ApiError{RECAP_ERR_IO, name + ": template file not found or unreadable"};
  try {
    return models::load_template_file(name);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError{RECAP_ERR_FORMAT, e.what()};
  }
}

std::map<std::string, std::string> prompt_fields(const recap_image& im, const std::string& key) {
  // The fields `recap-engine caption` gives a list sample with no extra columns.
  std::map<std::string, std::string> f;
  const std::string oc = im.original_caption ? im.original_caption : "";
  f["original_caption"] = oc;
  f["caption"] = oc;
  f["key"] = key;
  f["url"] = "";
  return f;
}

class BatchRun {
 public:
  BatchRun(recap_model& m, const recap_caption_params& p, const recap_image* images, size_t n,
           recap_result_callback on_result, recap_progress_callback on_progress, void* user)
      : m_(m), p_(p), images_(images), n_(n), on_result_(on_result), on_progress_(on_progress), user_(user) {}

  // Returns RECAP_OK or RECAP_ERR_CANCELLED; throws ApiError / engine exceptions otherwise.
  recap_status run();
  std::vector<Sample>& samples() { return samples_; }

 private:
  void build_prompts();
  void prepare_group();
  void finish(size_t i, recap_status status, std::string caption, std::string error, int new_tokens);

  recap_model& m_;
  const recap_caption_params& p_;
  const recap_image* images_;
  size_t n_;
  recap_result_callback on_result_;
  recap_progress_callback on_progress_;
  void* user_;

  models::ChatTemplate tmpl_;
  std::vector<Sample> samples_;
  size_t next_ = 0;  // next sample to decode
  size_t finished_ = 0;
  bool cancelled_ = false;
  std::unique_ptr<engine::Scheduler> sched_;
  std::deque<engine::CaptionRequest> waiting_;  // encoded, waiting for a batch slot
};

void BatchRun::finish(size_t i, recap_status status, std::string caption, std::string error, int new_tokens) {
  Sample& s = samples_[i];
  s.status = status;
  s.caption = std::move(caption);
  s.error = std::move(error);
  s.new_tokens = new_tokens;
  s.done = true;
  ++finished_;
  if (status != RECAP_OK)
    log_line(RECAP_LOG_INFO, "sample " + std::to_string(i) + " (" + s.key + "): " + s.error);
  if (on_result_ && !cancelled_) {
    recap_result r;
    r.index = i;
    r.key = s.key.c_str();
    r.status = s.status;
    r.caption = s.caption.c_str();
    r.error_message = s.error.c_str();
    r.prompt_tokens = static_cast<int>(s.n_prompt);
    r.new_tokens = s.new_tokens;
    if (on_result_(&r, user_) != 0) cancelled_ = true;
  }
  if (on_progress_) on_progress_(finished_, n_, user_);
}

void BatchRun::build_prompts() {
  const auto& cfg = m_.llava->config();
  samples_.resize(n_);
  for (size_t i = 0; i < n_; ++i) {
    Sample& s = samples_[i];
    s.key = images_[i].key ? images_[i].key : std::to_string(i);
    models::PromptInputs pin;
    pin.prompt = tmpl_.prompt;
    pin.fields = prompt_fields(images_[i], s.key);
    try {
      s.prompt_ids = models::build_prompt_ids(tmpl_, *m_.tok, pin);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      // The same template renders for every sample, so this is the call's argument error.
      throw ApiError{RECAP_ERR_INVALID_ARGUMENT, std::string("template: ") + e.what()};
    }
    std::vector<int64_t> ids64(s.prompt_ids.begin(), s.prompt_ids.end());
    s.n_prompt = m_.llava->spliced_length(ids64);
    if (s.n_prompt + p_.max_new_tokens > cfg.text.max_position) {
      s.status = RECAP_ERR_UNSUPPORTED;
      s.error = "prompt (" + std::to_string(s.n_prompt) + " positions) + max_new_tokens " +
                std::to_string(p_.max_new_tokens) + " exceeds the model's " +
                std::to_string(cfg.text.max_position) + " positions";
    }
  }
}

// Decodes and preprocesses the next group of samples (worker threads), encodes the good ones
// with one vision-tower call and queues their prompt embeddings.
void BatchRun::prepare_group() {
  const auto& cfg = m_.llava->config();
  const size_t group = static_cast<size_t>(p_.vision_batch > 0 ? p_.vision_batch : std::min(p_.max_batch, 8));
  std::vector<size_t> idx;
  while (next_ < n_ && idx.size() < group) {
    const size_t i = next_++;
    if (samples_[i].status != RECAP_OK) {  // prompt too long: fails without touching the image
      std::string err = samples_[i].error;
      finish(i, samples_[i].status, "", err, 0);
      if (cancelled_) return;
      continue;
    }
    idx.push_back(i);
  }
  if (idx.empty()) return;
  const int64_t S = m_.pre.crop_size;
  const size_t img_elems = static_cast<size_t>(3 * S * S);
  std::vector<float> pixels(idx.size() * img_elems);
  std::vector<recap_status> st(idx.size(), RECAP_OK);
  std::vector<std::string> err(idx.size());
  auto work = [&](size_t k) {
    const recap_image& im = images_[idx[k]];
    try {
      io::Image img;
      if (im.encoded) {
        if (im.encoded_size == 0)
          throw io::ImageError(io::ImageErrorKind::Truncated, "empty encoded image (0 bytes)");
        img = io::decode_image(im.encoded, im.encoded_size);
      } else if (im.rgb) {
        if (im.width <= 0 || im.height <= 0) {
          st[k] = RECAP_ERR_INVALID_ARGUMENT;
          err[k] = "rgb image of size " + std::to_string(im.width) + "x" + std::to_string(im.height);
          return;
        }
        img.width = im.width;
        img.height = im.height;
        img.rgb.assign(im.rgb, im.rgb + static_cast<size_t>(im.width) * static_cast<size_t>(im.height) * 3);
      } else {
        st[k] = RECAP_ERR_INVALID_ARGUMENT;
        err[k] = "the image has neither encoded bytes nor rgb pixels";
        return;
      }
      models::preprocess_llava_into(img, m_.pre, pixels.data() + k * img_elems);
    } catch (const io::ImageError& e) {
      st[k] = RECAP_ERR_IMAGE;
      err[k] = std::string("failed_to_decode: ") + e.what();
    } catch (const std::bad_alloc&) {
      st[k] = RECAP_ERR_OUT_OF_MEMORY;
      err[k] = "out of memory while decoding the image";
    } catch (const std::exception& e) {
      st[k] = RECAP_ERR_IMAGE;
      err[k] = e.what();
    }
  };
  const size_t workers = std::min(idx.size(), static_cast<size_t>(std::max(1, m_.threads)));
  if (workers <= 1) {
    for (size_t k = 0; k < idx.size(); ++k) work(k);
  } else {
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    for (size_t w = 0; w < workers; ++w)
      threads.emplace_back([&] {
        for (size_t k; (k = next.fetch_add(1)) < idx.size();) work(k);
      });
    for (auto& t : threads) t.join();
  }
  // Failures are finished now; the good images are packed together for the tower.
  std::vector<size_t> good;
  for (size_t k = 0; k < idx.size(); ++k) {
    if (st[k] != RECAP_OK) {
      finish(idx[k], st[k], "", err[k], 0);
      if (cancelled_) return;
      continue;
    }
    if (good.size() != k)
      std::copy_n(pixels.begin() + static_cast<long>(k * img_elems), img_elems,
                  pixels.begin() + static_cast<long>(good.size() * img_elems));
    good.push_back(k);
  }
  if (good.empty()) return;
  const int64_t P = cfg.vision.num_patches(), D = cfg.text.hidden;
  std::vector<float> features(good.size() * static_cast<size_t>(P * D));
  m_.llava->encode_images(pixels.data(), static_cast<int64_t>(good.size()), features.data());
  for (size_t g = 0; g < good.size(); ++g) {
    const size_t i = idx[good[g]];
    Sample& s = samples_[i];
    engine::CaptionRequest req;
    req.id = i;
    req.n_prompt = s.n_prompt;
    req.prompt_embeds.resize(static_cast<size_t>(s.n_prompt * D));
    std::vector<int64_t> ids64(s.prompt_ids.begin(), s.prompt_ids.end());
    m_.llava->splice_embeddings(ids64, features.data() + g * static_cast<size_t>(P * D), 1,
                                req.prompt_embeds.data());
    req.n_captions = 1;
    req.sampling.temperature = p_.temperature;
    req.sampling.top_k = p_.top_k;
    req.sampling.top_p = p_.top_p;
    req.sampling.seed = p_.seed;
    req.seed_key = s.key;
    waiting_.push_back(std::move(req));
  }
}

recap_status BatchRun::run() {
  tmpl_ = resolve_template_checked(
      models::template_name_for(m_.llava->config(), p_.template_name ? p_.template_name : ""));
  if (p_.prompt && *p_.prompt) tmpl_.prompt = p_.prompt;
  std::vector<int32_t> stop_ids;
  try {
    stop_ids = models::stop_token_ids(tmpl_, *m_.tok, m_.generation_eos);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT, std::string("template: ") + e.what()};
  }
  build_prompts();

  // KV pool: max_batch sequences of the longest prompt + max_new_tokens.
  const auto& cfg = m_.llava->config();
  engine::KvCacheShape shape;
  shape.layers = cfg.text.layers;
  shape.kv_heads = cfg.text.kv_heads;
  shape.head_dim = cfg.text.head_dim;
  shape.block_size = engine::kKvBlockPositions;
  shape.dtype = m_.kv_dtype;
  int64_t longest = 1;
  for (auto& s : samples_)
    if (s.status == RECAP_OK) longest = std::max(longest, s.n_prompt);
  const int64_t per_seq = (longest + p_.max_new_tokens + shape.block_size - 1) / shape.block_size;
  const int64_t blocks = per_seq * p_.max_batch;
  if (blocks > (int64_t(1) << 31) - 1)
    throw ApiError{RECAP_ERR_OUT_OF_MEMORY,
                   "a KV cache for max_batch " + std::to_string(p_.max_batch) + " sequences of " +
                       std::to_string(per_seq * shape.block_size) + " positions is too large"};
  if (!m_.pool || m_.pool->total_blocks() < blocks || m_.pool->free_blocks() != m_.pool->total_blocks()) {
    m_.pool.reset();
    m_.pool = std::make_unique<engine::KvCachePool>(shape, blocks);
  }
  engine::SchedulerOptions so;
  so.max_batch = p_.max_batch;
  so.max_new_tokens = p_.max_new_tokens;
  so.vocab_limit = m_.tok->vocab_size();
  for (int32_t id : stop_ids) so.stop_ids.insert(id);
  sched_ = std::make_unique<engine::Scheduler>(*m_.llava, *m_.pool, so);

  while (!cancelled_) {
    // Keep up to max_batch encoded images waiting so a freed slot fills at once.
    while (!cancelled_ && next_ < n_ && waiting_.size() < static_cast<size_t>(p_.max_batch)) prepare_group();
    if (cancelled_) break;
    bool admitted = false;
    while (!waiting_.empty() && sched_->can_admit(waiting_.front().n_prompt, waiting_.front().n_captions)) {
      sched_->admit(std::move(waiting_.front()));
      waiting_.pop_front();
      admitted = true;
    }
    if (!sched_->idle()) {
      for (auto& r : sched_->step()) {
        const size_t i = static_cast<size_t>(r.id);
        if (!r.error.empty()) {
          finish(i, RECAP_ERR_UNSUPPORTED, "", r.error, 0);
        } else {
          const auto& ids = r.tokens.at(0);
          finish(i, RECAP_OK, m_.tok->decode_output(ids), "", static_cast<int>(ids.size()));
        }
        if (cancelled_) break;
      }
    } else if (waiting_.empty() && next_ >= n_) {
      break;
    } else if (!admitted) {
      throw ApiError{RECAP_ERR_INTERNAL, "scheduler idle but a waiting request cannot be admitted"};
    }
  }
  if (!cancelled_) return RECAP_OK;
  for (size_t i = 0; i < n_; ++i)
    if (!samples_[i].done) {
      samples_[i].status = RECAP_ERR_CANCELLED;
      samples_[i].error = "cancelled before this sample finished";
    }
  return RECAP_ERR_CANCELLED;
}

recap_result* make_results(std::vector<Sample>& samples) {
  auto* out = static_cast<recap_result*>(std::calloc(samples.size(), sizeof(recap_result)));
  if (!out) throw std::bad_alloc();
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    recap_result& r = out[i];
    r.index = i;
    r.status = s.status;
    r.prompt_tokens = static_cast<int>(s.n_prompt);
    r.new_tokens = s.new_tokens;
    r.key = dup_string(s.key);
    r.caption = dup_string(s.caption);
    r.error_message = dup_string(s.error);
    if (!r.key || !r.caption || !r.error_message) {
      recap_results_free(out, samples.size());
      throw std::bad_alloc();
    }
  }
  return out;
}

}  // namespace

extern "C" {

recap_status recap_caption_batch(recap_model* model, const recap_caption_params* params,
                                 const recap_image* images, size_t n, recap_result** results,
                                 recap_result_callback on_result, recap_progress_callback on_progress,
                                 void* user_data, char** error) {
  if (results) *results = nullptr;
  recap_status cancelled_or_ok = RECAP_OK;
  const recap_status st = guarded(error, [&] {
    if (!model) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: model is NULL"};
    if (!images) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: images is NULL"};
    if (n == 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: empty batch (n == 0)"};
    const recap_caption_params p = params ? *params : recap_caption_default_params();
    if (p.max_new_tokens < 1) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "max_new_tokens must be at least 1"};
    if (p.max_batch < 1) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "max_batch must be at least 1"};
    if (p.vision_batch < 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "vision_batch must be >= 0"};
    if (!(p.temperature >= 0.f)) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "temperature must be >= 0"};
    if (p.top_k < 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "top_k must be >= 0"};
    if (!(p.top_p > 0.f && p.top_p <= 1.f))
      throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "top_p must be in (0, 1]"};

    std::lock_guard<std::mutex> lock(model->mu);
    engine::apply_threads(model->threads);  // OpenMP's thread count is per calling thread
    BatchRun run(*model, p, images, n, on_result, on_progress, user_data);
    try {
      cancelled_or_ok = run.run();
    } catch (...) {
      model->pool.reset();  // abandoned sequences may still hold blocks
      throw;
    }
    if (model->pool && model->pool->free_blocks() != model->pool->total_blocks()) model->pool.reset();
    if (results) *results = make_results(run.samples());
    if (cancelled_or_ok == RECAP_ERR_CANCELLED)
      throw ApiError{RECAP_ERR_CANCELLED, "cancelled by the result callback"};
  });
  return st;
}

recap_status recap_caption_image(recap_model* model, const recap_caption_params* params,
                                 const recap_image* image, char** caption, char** error) {
  if (caption) *caption = nullptr;
  if (!image || !caption) {
    if (error)
      *error =
          dup_string(!image ? "recap_caption_image: image is NULL" : "recap_caption_image: caption is NULL");
    return RECAP_ERR_INVALID_ARGUMENT;
  }
  recap_result* res = nullptr;
  recap_status st = recap_caption_batch(model, params, image, 1, &res, nullptr, nullptr, nullptr, error);
  if (st != RECAP_OK) {
    recap_results_free(res, 1);
    return st;
  }
  st = res[0].status;
  if (st == RECAP_OK) {
    *caption = dup_string(res[0].caption);
    if (!*caption) st = RECAP_ERR_OUT_OF_MEMORY;
    if (!*caption && error) *error = dup_string("out of memory");
  } else if (error) {
    *error = dup_string(res[0].error_message);
  }
  recap_results_free(res, 1);
  return st;
}

void recap_results_free(recap_result* results, size_t n) {
  if (!results) return;
  for (size_t i = 0; i < n; ++i) {
    std::free(const_cast<char*>(results[i].key));
    std::free(const_cast<char*>(results[i].caption));
    std::free(const_cast<char*>(results[i].error_message));
  }
  std::free(results);
}

void recap_free_string(char* s) {
  std::free(s);
}

}  // extern "C"
