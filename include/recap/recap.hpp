// recap.hpp: header-only RAII C++ wrapper over the C API (recap.h). C++17 or later.
//
// Error handling: every call that fails as a whole throws recap::Error (a std::runtime_error
// carrying the recap_status and the library's message). Per-sample failures of a batch (an
// undecodable image, ...) are NOT exceptions: they come back as Result::status / Result::error
// so the rest of the batch is kept. Cancelling from the on_result callback (return false) is
// not an exception either: caption() returns the results, the unfinished samples having
// status RECAP_ERR_CANCELLED.
//
// Thread-safety: as the C API. A Model may be shared between threads; its caption() calls are
// serialised internally. Model is move-only; the model is freed by its destructor.
//
//   recap::ModelParams mp;
//   mp.weights_dir = "/models/llava-llama3";
//   mp.tokenizer_path = "/models/llama3/tokenizer.json";
//   recap::Model model(mp);
//   auto results = model.caption({recap::Image::from_file("a.jpg")});
//   std::cout << results[0].caption << "\n";
#pragma once
#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "recap/recap.h"

namespace recap {

// A failed call: status() says which kind (see recap_status), what() the library's message.
class Error : public std::runtime_error {
 public:
  Error(recap_status status, const std::string& message)
      : std::runtime_error(std::string(recap_status_string(status)) + ": " + message), status_(status) {}
  recap_status status() const noexcept { return status_; }

 private:
  recap_status status_;
};

namespace detail {
// Takes ownership of a library error string and throws it.
[[noreturn]] inline void throw_error(recap_status st, char* message) {
  std::string m = message ? message : "";
  recap_free_string(message);
  throw Error(st, m);
}
}  // namespace detail

inline std::string version() {
  return recap_version();
}

enum class Precision {
  F32 = RECAP_PRECISION_F32,
  BF16 = RECAP_PRECISION_BF16,
  Int8 = RECAP_PRECISION_INT8,
  Int4 = RECAP_PRECISION_INT4
};
enum class KvDType { F32 = RECAP_KV_F32, BF16 = RECAP_KV_BF16, F16 = RECAP_KV_F16 };
enum class Shear { None = RECAP_SHEAR_NONE, Words = RECAP_SHEAR_WORDS, Tokens = RECAP_SHEAR_TOKENS };

// recap_model_params with owning strings; "" means "not set" (the C default).
struct ModelParams {
  std::string weights_dir;
  std::string vision_weights_dir;
  std::string tokenizer_path;
  Precision precision = Precision::F32;
  KvDType kv_dtype = KvDType::F32;
  int threads = 0;
};

// recap_caption_params with owning strings; defaults are the C defaults.
struct CaptionParams {
  std::string template_name;  // "": llava-llama3
  std::string prompt;         // "": the template's prompt
  int max_new_tokens = recap_caption_default_params().max_new_tokens;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 0;
  int max_batch = recap_caption_default_params().max_batch;
  int vision_batch = 0;
  int num_captions = 1;
  Shear shear = Shear::None;
  bool first_sentence = false;
  uint64_t max_image_pixels = recap_caption_default_params().max_image_pixels;
};

// An image to caption: encoded bytes (JPEG/PNG/WebP) or RGB8 pixels (HWC).
struct Image {
  std::vector<uint8_t> encoded;
  std::vector<uint8_t> rgb;
  int width = 0, height = 0;
  std::string key;  // "": the batch index
  std::string original_caption;

  static Image from_bytes(std::vector<uint8_t> bytes, std::string key = "") {
    Image im;
    im.encoded = std::move(bytes);
    im.key = std::move(key);
    return im;
  }
  static Image from_rgb(std::vector<uint8_t> pixels, int width, int height, std::string key = "") {
    Image im;
    im.rgb = std::move(pixels);
    im.width = width;
    im.height = height;
    im.key = std::move(key);
    return im;
  }
  // Reads a file's bytes (decoded later by the library). Throws Error(RECAP_ERR_IO).
  static Image from_file(const std::string& path, std::string key = "") {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(RECAP_ERR_IO, path + ": cannot open");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f.bad()) throw Error(RECAP_ERR_IO, path + ": read error");
    return from_bytes(std::move(bytes), key.empty() ? path : std::move(key));
  }
};

struct Result {
  size_t index = 0;
  std::string key;
  recap_status status = RECAP_OK;
  std::string status_name;  // "success", "failed_to_decode", ... (as `recap-engine caption`)
  std::string caption;      // the first caption; "" unless ok()
  std::string error;        // "" when ok()
  int prompt_tokens = 0;
  int new_tokens = 0;
  std::vector<std::string> captions;      // num_captions of them when ok()
  std::string stop_reason;                // of the first caption: "stop_token" | "max_new_tokens"
  std::vector<std::string> stop_reasons;  // per caption
  bool ok() const { return status == RECAP_OK; }
};

// Routes library log lines to `fn` (empty: the default, warnings to stderr). Process-wide.
inline void set_log_callback(std::function<void(recap_log_level, const std::string&)> fn) {
  static std::function<void(recap_log_level, const std::string&)> holder;
  if (!fn) {
    recap_set_log_callback(nullptr, nullptr);
    holder = nullptr;
    return;
  }
  recap_set_log_callback(nullptr, nullptr);  // no line reaches the old holder while it changes
  holder = std::move(fn);
  recap_set_log_callback(
      [](recap_log_level level, const char* message, void* user) {
        (*static_cast<std::function<void(recap_log_level, const std::string&)>*>(user))(level, message);
      },
      &holder);
}

class Model {
 public:
  // Loads the model; throws Error (RECAP_ERR_IO, RECAP_ERR_FORMAT, ...) on failure.
  explicit Model(const ModelParams& p) {
    recap_model_params c = recap_model_default_params();
    c.weights_dir = p.weights_dir.c_str();
    c.vision_weights_dir = p.vision_weights_dir.empty() ? nullptr : p.vision_weights_dir.c_str();
    c.tokenizer_path = p.tokenizer_path.empty() ? nullptr : p.tokenizer_path.c_str();
    c.precision = static_cast<recap_precision>(p.precision);
    c.kv_dtype = static_cast<recap_kv_dtype>(p.kv_dtype);
    c.threads = p.threads;
    recap_model* m = nullptr;
    char* err = nullptr;
    const recap_status st = recap_model_load(&c, &m, &err);
    if (st != RECAP_OK) detail::throw_error(st, err);
    model_.reset(m);
  }
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;

  // Per finished sample (completion order); return false to cancel the rest of the batch.
  using ResultCallback = std::function<bool(const Result&)>;
  using ProgressCallback = std::function<void(size_t done, size_t total)>;

  // Captions a batch; results in batch order. Throws Error when the call fails as a whole
  // (bad parameters, empty batch, ...); per-sample failures are in the results. An exception
  // thrown by a callback cancels the batch and is rethrown after the library returns.
  std::vector<Result> caption(const std::vector<Image>& images, const CaptionParams& params = {},
                              ResultCallback on_result = {}, ProgressCallback on_progress = {}) const {
    recap_caption_params c = recap_caption_default_params();
    c.template_name = params.template_name.empty() ? nullptr : params.template_name.c_str();
    c.prompt = params.prompt.empty() ? nullptr : params.prompt.c_str();
    c.max_new_tokens = params.max_new_tokens;
    c.temperature = params.temperature;
    c.top_k = params.top_k;
    c.top_p = params.top_p;
    c.seed = params.seed;
    c.max_batch = params.max_batch;
    c.vision_batch = params.vision_batch;
    c.num_captions = params.num_captions;
    c.shear = static_cast<recap_shear>(params.shear);
    c.first_sentence = params.first_sentence ? 1 : 0;
    c.max_image_pixels = params.max_image_pixels;
    std::vector<recap_image> in(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const Image& im = images[i];
      recap_image& r = in[i];
      r.encoded = im.encoded.empty() ? nullptr : im.encoded.data();
      r.encoded_size = im.encoded.size();
      r.rgb = im.rgb.empty() ? nullptr : im.rgb.data();
      r.width = im.width;
      r.height = im.height;
      r.key = im.key.empty() ? nullptr : im.key.c_str();
      r.original_caption = im.original_caption.empty() ? nullptr : im.original_caption.c_str();
    }
    struct Ctx {
      ResultCallback* on_result;
      ProgressCallback* on_progress;
      std::exception_ptr failure;
    } ctx{&on_result, &on_progress, nullptr};
    auto result_cb = [](const recap_result* r, void* user) -> int {
      auto* x = static_cast<Ctx*>(user);
      try {
        return (*x->on_result)(to_result(*r)) ? 0 : 1;
      } catch (...) {
        x->failure = std::current_exception();
        return 1;
      }
    };
    auto progress_cb = [](size_t done, size_t total, void* user) {
      auto* x = static_cast<Ctx*>(user);
      if (x->failure) return;
      try {
        (*x->on_progress)(done, total);
      } catch (...) {
        x->failure = std::current_exception();
      }
    };
    recap_result* res = nullptr;
    char* err = nullptr;
    const recap_status st =
        recap_caption_batch(model_.get(), &c, in.data(), in.size(), &res, on_result ? +result_cb : nullptr,
                            on_progress ? +progress_cb : nullptr, &ctx, &err);
    std::unique_ptr<recap_result, std::function<void(recap_result*)>> guard(
        res, [n = images.size()](recap_result* p) { recap_results_free(p, n); });
    if (ctx.failure) {
      recap_free_string(err);
      std::rethrow_exception(ctx.failure);
    }
    if (st != RECAP_OK && !(st == RECAP_ERR_CANCELLED && res)) detail::throw_error(st, err);
    recap_free_string(err);
    std::vector<Result> out;
    out.reserve(images.size());
    for (size_t i = 0; i < images.size(); ++i) out.push_back(to_result(res[i]));
    return out;
  }

  // One image; throws Error with the sample's status (e.g. RECAP_ERR_IMAGE) when it fails.
  std::string caption_one(const Image& image, const CaptionParams& params = {}) const {
    auto r = caption(std::vector<Image>{image}, params);
    if (!r[0].ok()) throw Error(r[0].status, r[0].error);
    return r[0].caption;
  }

  recap_model* get() const noexcept { return model_.get(); }

 private:
  static Result to_result(const recap_result& r) {
    Result o;
    o.index = r.index;
    o.key = r.key ? r.key : "";
    o.status = r.status;
    o.caption = r.caption ? r.caption : "";
    o.error = r.error_message ? r.error_message : "";
    o.prompt_tokens = r.prompt_tokens;
    o.new_tokens = r.new_tokens;
    o.status_name = r.status_name ? r.status_name : "";
    o.stop_reason = r.stop_reason ? r.stop_reason : "";
    for (size_t c = 0; c < r.n_captions; ++c) {
      o.captions.emplace_back(r.captions[c]);
      o.stop_reasons.emplace_back(r.stop_reasons[c]);
    }
    return o;
  }
  struct Free {
    void operator()(recap_model* m) const noexcept { recap_model_free(m); }
  };
  std::unique_ptr<recap_model, Free> model_;
};

}  // namespace recap
