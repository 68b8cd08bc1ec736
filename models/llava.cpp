#include "models/llava.h"

#include <mutex>
#include <stdexcept>
#include <string>

#include "io/safetensors.h"
#include "models/clip.h"
#include "models/llama.h"
#include "models/projector.h"
#include "models/quantized_cache.h"
#include "models/scratch.h"
#include "models/weight_source.h"

namespace recap::models {

namespace {
constexpr int64_t kLlavaImageTokenIndex = -200;
}

struct LlavaModel::Impl {
  ModelConfig config;
  std::unique_ptr<VisionTower> vision;
  std::unique_ptr<Projector> projector;
  std::unique_ptr<LlamaModel> llm;
  std::shared_ptr<const io::WeightStore> mapped_weights;  // a quantized cache the weights view
  // encode_images' tower output [B*P, Dv], handed to the projector: grow-only like the
  // tower's and projector's own scratch, guarded by encode_mu (one encode_images at a time).
  std::mutex encode_mu;
  FloatScratch tower_out;
};

LlavaModel::LlavaModel() : impl_(std::make_unique<Impl>()) {}
LlavaModel::~LlavaModel() = default;

std::unique_ptr<LlavaModel> LlavaModel::load(const Checkpoint& ckpt, const ModelOptions& opts) {
  const ModelConfig& c = ckpt.config;
  if (ckpt.text_store && is_quantized_cache_store(*ckpt.text_store)) {
    // Packed matrices are views of the cache's mmap: the model keeps the store alive.
    QuantizedCacheWeightSource cache(ckpt.text_store);
    auto m = load_from(c, &cache, &cache, opts);
    m->impl_->mapped_weights = ckpt.text_store;
    return m;
  }
  std::unique_ptr<StoreWeightSource> vision, text;
  if (opts.load_vision && c.has_vision) {
    if (!ckpt.vision_store) throw std::runtime_error(c.weights_dir + ": no weights for the vision tower");
    vision = std::make_unique<StoreWeightSource>(*ckpt.vision_store);
  }
  if (c.has_text && ckpt.text_store) text = std::make_unique<StoreWeightSource>(*ckpt.text_store);
  if (opts.load_text && c.has_text && !text)
    throw std::runtime_error(c.weights_dir + ": no weights for the language model");
  return load_from(c, vision.get(), text.get(), opts);
}

std::unique_ptr<LlavaModel> LlavaModel::load_from(const ModelConfig& config, WeightSource* vision,
                                                  WeightSource* text, const ModelOptions& opts) {
  std::unique_ptr<LlavaModel> m(new LlavaModel());
  Impl& im = *m->impl_;
  im.config = config;
  const ModelConfig& c = im.config;
  if (opts.load_vision && c.has_vision && vision) {
    im.vision = std::make_unique<VisionTower>(c.vision, *vision, c.names, opts.precision);
    // The projector belongs to the LLaVA checkpoint (absent from a bare CLIP dir).
    if (c.has_text && text) {
      if (c.projector.in != c.vision.hidden)
        throw std::runtime_error(c.weights_dir + ": projector input " + std::to_string(c.projector.in) +
                                 " != vision hidden " + std::to_string(c.vision.hidden));
      im.projector = std::make_unique<Projector>(c.projector, *text, c.names, opts.precision);
    }
  }
  if (opts.load_text && c.has_text && text)
    im.llm = std::make_unique<LlamaModel>(c.text, *text, c.names, opts.precision);
  return m;
}

const ModelConfig& LlavaModel::config() const {
  return impl_->config;
}
bool LlavaModel::has_vision() const {
  return impl_->vision && impl_->projector;
}
bool LlavaModel::has_text() const {
  return static_cast<bool>(impl_->llm);
}

void LlavaModel::vision_features(const float* pixel_values, int64_t batch, float* out,
                                 VisionTrace* trace) const {
  if (!impl_->vision) throw std::logic_error("vision_features: the vision tower is not loaded");
  impl_->vision->forward(pixel_values, batch, out, trace);
}

void LlavaModel::encode_images(const float* pixel_values, int64_t batch, float* out,
                               VisionTrace* trace) const {
  if (!impl_->vision || !impl_->projector)
    throw std::logic_error("encode_images: the vision tower and projector are not loaded");
  const int64_t rows = batch * impl_->config.vision.num_patches();
  std::lock_guard<std::mutex> lock(impl_->encode_mu);
  float* features = impl_->tower_out.get(rows * impl_->config.vision.hidden);
  impl_->vision->forward(pixel_values, batch, features, trace);
  const bool tracing = trace && trace->enabled;
  impl_->projector->forward(features, rows, out, tracing ? &trace->projector_linear_1_out : nullptr);
}

void LlavaModel::embed_tokens(const int32_t* ids, int64_t n, float* out) const {
  if (!impl_->llm) throw std::logic_error("embed_tokens: the language model is not loaded");
  impl_->llm->embed(ids, n, out);
}

int64_t LlavaModel::forward(const std::vector<SeqChunk>& chunks, const std::vector<kernels::KvCacheView>& kv,
                            float* logits, LlmTrace* trace) const {
  if (!impl_->llm) throw std::logic_error("forward: the language model is not loaded");
  return impl_->llm->forward(chunks, kv, logits, trace);
}

size_t LlavaModel::weight_bytes() const {
  size_t b = 0;
  if (impl_->vision) b += impl_->vision->weight_bytes();
  if (impl_->projector) b += impl_->projector->weight_bytes();
  if (impl_->llm) b += impl_->llm->weight_bytes();
  return b;
}

bool LlavaModel::is_image_token(int64_t id) const {
  return id == kLlavaImageTokenIndex || id == impl_->config.image_token_index;
}

int64_t LlavaModel::spliced_length(const std::vector<int64_t>& ids) const {
  int64_t n = 0;
  for (int64_t id : ids) n += is_image_token(id) ? impl_->config.vision.num_patches() : 1;
  return n;
}

void LlavaModel::splice_embeddings(const std::vector<int64_t>& ids, const float* image_features,
                                   int64_t n_images, float* out) const {
  if (!impl_->llm) throw std::logic_error("splice_embeddings: the language model is not loaded");
  const int64_t D = impl_->config.text.hidden, P = impl_->config.vision.num_patches();
  const int64_t V = impl_->config.text.vocab;
  int64_t images_seen = 0;
  for (int64_t id : ids) images_seen += is_image_token(id) ? 1 : 0;
  if (images_seen != n_images)
    throw std::invalid_argument("prompt has " + std::to_string(images_seen) + " image tokens but " +
                                std::to_string(n_images) + " images were given");
  int64_t row = 0, image = 0;
  std::vector<int32_t> run;  // consecutive text ids, embedded in one gather
  auto flush = [&]() {
    if (run.empty()) return;
    impl_->llm->embed(run.data(), static_cast<int64_t>(run.size()), out + row * D);
    row += static_cast<int64_t>(run.size());
    run.clear();
  };
  for (int64_t id : ids) {
    if (is_image_token(id)) {
      flush();
      std::copy(image_features + image * P * D, image_features + (image + 1) * P * D, out + row * D);
      row += P;
      ++image;
    } else {
      if (id < 0 || id >= V)
        throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                                std::to_string(V) + ")");
      run.push_back(static_cast<int32_t>(id));
    }
  }
  flush();
}

}  // namespace recap::models
