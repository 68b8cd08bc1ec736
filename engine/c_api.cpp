// The C API (include/recap/recap.h): only the C boundary. Argument checks, conversions between
// the C structs and the engine's types, the mapping from exceptions and sample failures to
// recap_status, log and result callbacks. Captioning itself is engine/caption_driver, the code
// `recap-engine caption` runs: a recap_image becomes a SampleInput (inline bytes, decoded RGB,
// or an already-failed input), each record becomes a recap_result.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/caption_driver.h"
#include "engine/errors.h"
#include "engine/failpoints.h"
#include "engine/kv_cache.h"
#include "engine/loader.h"
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
  } catch (const engine::KvCacheTooLarge& e) {
    set_error(error, e.what());
    return RECAP_ERR_OUT_OF_MEMORY;
  } catch (const engine::UsageError& e) {  // the call's settings (e.g. a template field no sample has)
    set_error(error, e.what());
    return RECAP_ERR_INVALID_ARGUMENT;
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
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof(recap_caption_params);
  p.template_name = nullptr;
  p.prompt = nullptr;
  p.max_new_tokens = 128;
  p.temperature = 0.f;
  p.top_k = 0;
  p.top_p = 1.f;
  p.seed = 0;
  p.max_batch = 8;
  p.vision_batch = 0;
  p.num_captions = 1;
  p.shear = RECAP_SHEAR_NONE;
  p.first_sentence = 0;
  p.max_image_pixels = recap::io::DecodeOptions{}.max_pixels;
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
    // Test-only fault injection: a malformed RECAP_FAILPOINTS is refused by the first call that
    // does work (RECAP_ERR_INVALID_ARGUMENT naming the variable), not at a later tower batch.
    engine::check_failpoints();
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

// The recap_status a failed sample's record maps to.
recap_status status_of(engine::SampleFailure f) {
  switch (f) {
    case engine::SampleFailure::kNone:
      return RECAP_OK;
    case engine::SampleFailure::kInput:
      return RECAP_ERR_INVALID_ARGUMENT;
    case engine::SampleFailure::kFetch:
    case engine::SampleFailure::kImage:
      return RECAP_ERR_IMAGE;
    case engine::SampleFailure::kPrompt:
    case engine::SampleFailure::kGeneration:
      return RECAP_ERR_UNSUPPORTED;
    case engine::SampleFailure::kTower:
      return RECAP_ERR_INTERNAL;
  }
  return RECAP_ERR_INTERNAL;
}

// A sample's outcome in C terms: the record (absent for a sample a cancelled call never
// finished) and the message a C caller sees ("<status>: <error>").
struct ApiSample {
  std::string key;
  std::optional<engine::CaptionRecord> rec;
  recap_status status = RECAP_ERR_CANCELLED;
  std::string status_name = "cancelled";
  std::string error = "cancelled before this sample finished";
};

// A recap_result whose strings point into `s` (valid while `s` and this view live).
struct ResultView {
  std::vector<const char*> captions, stop_reasons;
  recap_result r{};
  ResultView(const ResultView&) = delete;  // r points into this object's vectors
  ResultView& operator=(const ResultView&) = delete;
  ResultView(size_t index, const ApiSample& s) {
    r.index = index;
    r.key = s.key.c_str();
    r.status = s.status;
    r.status_name = s.status_name.c_str();
    r.error_message = s.status == RECAP_OK ? "" : s.error.c_str();
    r.caption = "";
    r.stop_reason = "";
    if (s.rec && s.status == RECAP_OK) {
      for (auto& c : s.rec->captions) captions.push_back(c.c_str());
      for (auto& c : s.rec->stop_reasons) stop_reasons.push_back(c.c_str());
      r.caption = captions.empty() ? "" : captions[0];
      r.stop_reason = stop_reasons.empty() ? "" : stop_reasons[0];
    }
    if (s.rec) {
      r.prompt_tokens = s.status == RECAP_OK ? static_cast<int>(s.rec->prompt_tokens) : 0;
      r.new_tokens = static_cast<int>(s.rec->new_tokens);
    }
    r.n_captions = captions.size();
    r.captions = captions.empty() ? nullptr : captions.data();
    r.stop_reasons = stop_reasons.empty() ? nullptr : stop_reasons.data();
  }
};

// The sample a recap_image is to the driver: encoded bytes to decode, RGB pixels to
// preprocess, or an input that already failed (no pixels, a bad RGB size).
engine::SampleInput sample_of(const recap_image& im, size_t index, std::optional<io::Image>* rgb) {
  engine::SampleInput in;
  in.index = static_cast<int64_t>(index);
  in.key = im.key ? im.key : std::to_string(index);
  in.caption = im.original_caption ? im.original_caption : "";
  if (im.encoded) {
    in.has_inline_image = true;
    in.image_bytes.assign(reinterpret_cast<const char*>(im.encoded), im.encoded_size);
  } else if (im.rgb) {
    if (im.width <= 0 || im.height <= 0) {
      in.parse_error = "rgb image of size " + std::to_string(im.width) + "x" + std::to_string(im.height);
    } else {
      io::Image img;
      img.width = im.width;
      img.height = im.height;
      img.rgb.assign(im.rgb, im.rgb + static_cast<size_t>(im.width) * static_cast<size_t>(im.height) * 3);
      *rgb = std::move(img);
    }
  } else {
    in.parse_error = "the image has neither encoded bytes nor rgb pixels";
  }
  return in;
}

// The caption params a caller passed, checked; NULL: the defaults.
recap_caption_params checked_params(const recap_caption_params* params) {
  if (!params) return recap_caption_default_params();
  // Read before any other field: a struct of another API version has other offsets.
  if (params->struct_size != sizeof(recap_caption_params))
    throw ApiError{
        RECAP_ERR_INVALID_ARGUMENT,
        "recap_caption_params.struct_size is " + std::to_string(params->struct_size) + ", not " +
            std::to_string(sizeof(recap_caption_params)) + " (API version " +
            std::to_string(RECAP_API_VERSION) +
            "): initialise the params with recap_caption_default_params() and rebuild against this recap.h"};
  const recap_caption_params& p = *params;
  if (p.max_new_tokens < 1) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "max_new_tokens must be at least 1"};
  if (p.max_batch < 1) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "max_batch must be at least 1"};
  if (p.vision_batch < 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "vision_batch must be >= 0"};
  if (!(p.temperature >= 0.f)) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "temperature must be >= 0"};
  if (p.top_k < 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "top_k must be >= 0"};
  if (!(p.top_p > 0.f && p.top_p <= 1.f))
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "top_p must be in (0, 1]"};
  if (p.num_captions < 1) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "num_captions must be at least 1"};
  if (p.num_captions > p.max_batch)
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "num_captions " + std::to_string(p.num_captions) +
                                                   " exceeds max_batch " + std::to_string(p.max_batch)};
  const int shear = enum_value(p.shear);
  if (shear != RECAP_SHEAR_NONE && shear != RECAP_SHEAR_WORDS && shear != RECAP_SHEAR_TOKENS)
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT,
                   "shear " + std::to_string(shear) + " is not a recap_shear value"};
  return p;
}

// Template by name or file, with the call's errors told apart: an unknown name is an invalid
// argument, a missing file an I/O error, a file that does not parse a FORMAT error. NULL or
// "" is the model family's default (applied by engine::resolve_caption_template).
models::ChatTemplate checked_template(const models::ModelConfig& cfg, const char* name_or_null,
                                      const char* prompt) {
  const std::string name = name_or_null ? name_or_null : "";
  const auto names = models::builtin_template_names();
  const bool builtin = name.empty() || std::find(names.begin(), names.end(), name) != names.end();
  if (!builtin) {
    const bool looks_like_path = name.find('/') != std::string::npos || name.find('.') != std::string::npos;
    if (!looks_like_path) {
      std::string known;
      for (auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "template '" + name + "' is neither a built-in template (" +
                                                     known + ") nor a file path"};
    }
    if (!is_readable_file(name))
      throw ApiError{RECAP_ERR_IO, name + ": template file not found or unreadable"};
  }
  try {
    return engine::resolve_caption_template(cfg, name, prompt ? prompt : "");
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError{RECAP_ERR_FORMAT, e.what()};
  }
}

// One recap_caption_batch call: feeds the driver, keeps each sample's record, calls back.
// Returns RECAP_OK or RECAP_ERR_CANCELLED; throws otherwise.
recap_status caption_batch(recap_model& m, const recap_caption_params& p, const recap_image* images, size_t n,
                           recap_result_callback on_result, recap_progress_callback on_progress, void* user,
                           std::vector<ApiSample>& samples) {
  const models::ChatTemplate tmpl = checked_template(m.llava->config(), p.template_name, p.prompt);
  std::vector<int32_t> stop_ids;
  try {
    stop_ids = models::stop_token_ids(tmpl, *m.tok, m.generation_eos);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError{RECAP_ERR_INVALID_ARGUMENT, std::string("template: ") + e.what()};
  }
  engine::DriverOptions o;
  o.max_new_tokens = p.max_new_tokens;
  o.sampling.temperature = p.temperature;
  o.sampling.top_k = p.top_k;
  o.sampling.top_p = p.top_p;
  o.sampling.seed = p.seed;
  o.num_captions = p.num_captions;
  const int shear = enum_value(p.shear);
  o.shear = shear == RECAP_SHEAR_WORDS ? "words" : shear == RECAP_SHEAR_TOKENS ? "tokens" : "";
  o.first_sentence = p.first_sentence != 0;
  o.max_batch = p.max_batch;
  o.vision_batch = p.vision_batch;
  o.kv_dtype = m.kv_dtype;
  o.threads = m.threads;
  engine::LoaderOptions lo;
  lo.workers = std::max(1, m.threads);
  lo.preprocess = m.pre;
  lo.decode.max_pixels = p.max_image_pixels;
  engine::Loader loader(lo);
  bool cancelled = false;
  engine::CaptionDriver driver(*m.llava, *m.tok, tmpl, stop_ids, o, loader, m.pool,
                               [&] { return cancelled; });

  samples.assign(n, ApiSample{});
  size_t finished = 0;
  const auto sink = [&](engine::CaptionRecord&& rec) {
    const size_t i = static_cast<size_t>(rec.id);
    ApiSample& s = samples[i];
    s.status = status_of(rec.failure);
    s.status_name = rec.status;
    s.error = rec.ok() ? "" : rec.status + ": " + rec.error;
    s.rec = std::move(rec);
    ++finished;
    if (s.status != RECAP_OK)
      log_line(RECAP_LOG_INFO, "sample " + std::to_string(i) + " (" + s.key + "): " + s.error);
    if (on_result && !cancelled) {
      ResultView v(i, s);
      if (on_result(&v.r, user) != 0) cancelled = true;
    }
    if (on_progress) on_progress(finished, n, user);
  };
  const size_t lookahead = driver.lookahead(lo.workers);
  size_t next = 0;
  while (!cancelled && (next < n || driver.in_flight() > 0)) {
    for (; !cancelled && next < n && driver.queued() < lookahead; ++next) {
      std::optional<io::Image> rgb;
      engine::SampleInput in = sample_of(images[next], next, &rgb);
      samples[next].key = in.key;
      driver.push(next, std::move(in), std::move(rgb));
    }
    driver.pump(sink);
  }
  return cancelled ? RECAP_ERR_CANCELLED : RECAP_OK;
}

char** dup_strings(const std::vector<std::string>& v) {
  if (v.empty()) return nullptr;
  auto** out = static_cast<char**>(std::calloc(v.size(), sizeof(char*)));
  if (!out) return nullptr;
  for (size_t i = 0; i < v.size(); ++i) out[i] = dup_string(v[i]);
  return out;
}

recap_result* make_results(const std::vector<ApiSample>& samples) {
  auto* out = static_cast<recap_result*>(std::calloc(samples.size(), sizeof(recap_result)));
  if (!out) throw std::bad_alloc();
  for (size_t i = 0; i < samples.size(); ++i) {
    const ResultView v(i, samples[i]);
    recap_result& r = out[i];
    r = v.r;
    r.key = dup_string(v.r.key);
    r.status_name = dup_string(v.r.status_name);
    r.caption = dup_string(v.r.caption);
    r.error_message = dup_string(v.r.error_message);
    r.stop_reason = dup_string(v.r.stop_reason);
    const std::vector<std::string> none;
    const auto& rec = samples[i].rec;
    const bool ok = rec && samples[i].status == RECAP_OK;
    r.captions = dup_strings(ok ? rec->captions : none);
    r.stop_reasons = dup_strings(ok ? rec->stop_reasons : none);
    bool complete = r.key && r.status_name && r.caption && r.error_message && r.stop_reason &&
                    (r.n_captions == 0 || (r.captions && r.stop_reasons));
    for (size_t c = 0; complete && c < r.n_captions; ++c) complete = r.captions[c] && r.stop_reasons[c];
    if (!complete) {
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
  return guarded(error, [&] {
    if (!model) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: model is NULL"};
    if (!images) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: images is NULL"};
    if (n == 0) throw ApiError{RECAP_ERR_INVALID_ARGUMENT, "recap_caption_batch: empty batch (n == 0)"};
    const recap_caption_params p = checked_params(params);

    std::lock_guard<std::mutex> lock(model->mu);
    engine::apply_threads(model->threads);  // OpenMP's thread count is per calling thread
    std::vector<ApiSample> samples;
    recap_status st;
    try {
      st = caption_batch(*model, p, images, n, on_result, on_progress, user_data, samples);
    } catch (...) {
      model->pool.reset();  // abandoned sequences may still hold blocks
      throw;
    }
    // A cancelled call leaves blocks held by the sequences it abandoned: the pool goes.
    if (model->pool && model->pool->free_blocks() != model->pool->total_blocks()) model->pool.reset();
    if (results) *results = make_results(samples);
    if (st == RECAP_ERR_CANCELLED) throw ApiError{RECAP_ERR_CANCELLED, "cancelled by the result callback"};
  });
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
    recap_result& r = results[i];
    std::free(const_cast<char*>(r.key));
    std::free(const_cast<char*>(r.status_name));
    std::free(const_cast<char*>(r.caption));
    std::free(const_cast<char*>(r.error_message));
    std::free(const_cast<char*>(r.stop_reason));
    for (const char* const* list : {r.captions, r.stop_reasons}) {
      if (!list) continue;
      for (size_t c = 0; c < r.n_captions; ++c) std::free(const_cast<char*>(list[c]));
      std::free(const_cast<char**>(list));
    }
  }
  std::free(results);
}

void recap_free_string(char* s) {
  std::free(s);
}

}  // extern "C"
