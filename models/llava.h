// The LLaVA-1.5 model: CLIP vision tower -> mlp2x_gelu projector -> LLaMA decoder, on the
// kernels. All dimensions come from models::ModelConfig. Weights are packed once at load
// into the requested precision (norms, biases and embeddings' scales stay f32).
//
// The KV cache memory and block allocation belong to engine/ (continuous batching); the
// model only reads/writes it through per-layer kernels::KvCacheView plus each sequence's
// block table.
//
// Threading: encode_images/vision_features and forward may run concurrently from two
// threads (vision and language keep separate scratch); concurrent calls of the same one are
// serialised by a mutex. Scratch: the float buffers of the tower, the projector, the decoder
// and encode_images' tower output grow to the largest batch seen and are reused, so encoding
// and decode steps of a batch no larger than an earlier one allocate nothing (splice_embeddings
// still builds its short run of text ids per prompt; traces allocate what they capture).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "models/config.h"

namespace recap::models {

struct ModelOptions {
  kernels::WeightFormat precision = kernels::WeightFormat::F32;  // of the big matrices
  // KV cache element type for whoever allocates the cache (engine::KvCachePool); the
  // forward pass reads the dtype of each KvCacheView it is given.
  kernels::KvDType kv_dtype = kernels::KvDType::F32;
  bool load_vision = true;
  bool load_text = true;
};

// One contiguous run of tokens of one sequence in a forward batch. Prefill is one chunk of
// many tokens; batched decode is many chunks of one token each; they may be mixed.
struct SeqChunk {
  const float* embeds = nullptr;  // [n_tokens, text.hidden] input embeddings (row-major), or null to use ids
  const int32_t* ids = nullptr;   // [n_tokens] token ids (used when embeds is null)
  int64_t n_tokens = 0;
  int64_t start_pos = 0;                 // position of the first token; cache holds 0..start_pos-1
  const int32_t* block_table = nullptr;  // this sequence's physical KV blocks
  bool all_logits = false;               // true: logits for every token; false: only the last
};

// Optional capture of intermediate activations (trace / golden tests).
struct LlmTrace {
  bool enabled = false;
  std::vector<float> hidden_states;  // [layers+1, n_tokens, hidden] of chunk 0 (last = after final norm)
};
struct VisionTrace {
  bool enabled = false;
  std::vector<float> hidden_states;           // [layers_run+1, B, 1+P, Dv]
  std::vector<float> selected;                // [B, 1+P, Dv]  hidden_states[select_layer]
  std::vector<float> projector_linear_1_out;  // [B, P, proj.hidden]
};

class VisionTower;
class Projector;
class LlamaModel;
class WeightSource;

class LlavaModel {
 public:
  static std::unique_ptr<LlavaModel> load(const Checkpoint& ckpt, const ModelOptions& opts);
  // The same from other weight sources (models/weight_source.h: synthetic weights for
  // benchmarks, a packed cache, ...), tensors named as config.names says. vision: the tower
  // (config.names.vision_prefix); text: projector and decoder. Either may be null to leave
  // that part out. The sources are only used during the call.
  static std::unique_ptr<LlavaModel> load_from(const ModelConfig& config, WeightSource* vision,
                                               WeightSource* text, const ModelOptions& opts);
  ~LlavaModel();
  const ModelConfig& config() const;

  // pixel_values: [B, 3, S, S] (CLIP-normalised). out: [B, P, text.hidden] projected image
  // features, P = vision.num_patches(). Optional trace of the tower's internals.
  void encode_images(const float* pixel_values, int64_t batch, float* out,
                     VisionTrace* trace = nullptr) const;
  // patch_features [B, P, Dv] only (no projector).
  void vision_features(const float* pixel_values, int64_t batch, float* out,
                       VisionTrace* trace = nullptr) const;

  // Embedding rows for token ids: out [n, text.hidden].
  void embed_tokens(const int32_t* ids, int64_t n, float* out) const;

  // Runs the decoder over a batch of chunks, reading/writing the KV cache (kv[layer]).
  // logits: for each chunk, n_tokens rows if all_logits else 1 row, concatenated in chunk
  // order, each [text.vocab]. Returns the number of logit rows written.
  int64_t forward(const std::vector<SeqChunk>& chunks, const std::vector<kernels::KvCacheView>& kv,
                  float* logits, LlmTrace* trace = nullptr) const;

  // Bytes of the packed weights (for reports).
  size_t weight_bytes() const;

  // True for the id that stands for an image in a prompt: -200 (LLaVA's IMAGE_TOKEN_INDEX)
  // or the config's image_token_index (llava-hf checkpoints, e.g. 32000; 1023 in the tiny goldens).
  bool is_image_token(int64_t id) const;
  // Length of the spliced sequence: every image token replaced by P = vision.num_patches() rows.
  int64_t spliced_length(const std::vector<int64_t>& ids) const;
  // Input embeddings of a prompt (LLaVA prepare_inputs_labels_for_multimodal): text ids are
  // embedded with embed_tokens, the k-th image token is replaced by the P rows of
  // image_features[k] ([n_images, P, text.hidden]). out: [spliced_length(ids), text.hidden].
  // Throws std::invalid_argument if the number of image tokens differs from n_images, or
  // std::out_of_range for an id outside the vocabulary.
  void splice_embeddings(const std::vector<int64_t>& ids, const float* image_features, int64_t n_images,
                         float* out) const;

  bool has_vision() const;  // tower + projector loaded
  bool has_text() const;    // decoder loaded

 private:
  LlavaModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace recap::models
