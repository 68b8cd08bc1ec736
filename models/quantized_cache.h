// The quantized cache: a model's weights already packed in one precision, stored so that a
// later load maps them with no work (kernels::PackedWeight::view over the mmap).
// Format (docs/QUANTIZED_CACHE.md): DIR/recap-packed.safetensors, a valid safetensors file
// whose __metadata__ holds
//   recap.format     "recap-packed-v1" (the marker)
//   recap.precision  f32|bf16|int8|int4 (the format of every packed matrix)
//   recap.config     the resolved models::ModelConfig as JSON (no config.json parsing or
//                    tensor-shape inference at load)
//   recap.matrices   JSON {key: {"format": f, "n": n, "k": k}} for every packed matrix
//   recap.content_xxh3  XXH3-64 (16 hex digits) of every byte after the header, computed at
//                    quantize time; the run fingerprint hashes the header (which holds it)
//                    instead of rereading gigabytes. Caches written before it existed lack
//                    it and are hashed in full.
// Packed matrices are U8 tensors [bytes] named by their WeightSource key (tensor names joined
// with '+' for fused matrices), each at a 64-byte aligned file offset; f32 vectors (norms,
// biases, class/position embeddings) are F32 tensors under their checkpoint names.
// config.json, generation_config.json, preprocessor_config.json and tokenizer files of the
// source directory are copied beside it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "models/config.h"
#include "models/weight_source.h"

namespace recap::models {

inline constexpr const char* kQuantizedCacheFile = "recap-packed.safetensors";
inline constexpr const char* kQuantizedCacheMarker = "recap-packed-v1";
inline constexpr const char* kQuantizedCacheContentHashKey = "recap.content_xxh3";

// True when dir holds a quantized cache (DIR/recap-packed.safetensors).
bool is_quantized_cache(const std::string& dir);
// True when the store's metadata carries the marker.
bool is_quantized_cache_store(const io::WeightStore& store);

// XXH3-64 (16 hex digits) of DIR/recap-packed.safetensors's header (8-byte length + JSON)
// when that header records recap.content_xxh3; "" when the file is absent, unreadable or
// has no content hash (then the caller hashes the whole file).
std::string quantized_cache_header_hash(const std::string& dir);
// The precision recorded in a cache checkpoint's metadata ("f32"|"bf16"|"int8"|"int4"), ""
// when the checkpoint is not a quantized cache.
std::string quantized_cache_precision(const Checkpoint& ckpt);

// Opens a cache as a Checkpoint (text_store == vision_store == the cache file). Every
// recorded matrix and tensor is checked for presence and size. Throws ConfigError naming
// the file on anything malformed.
Checkpoint open_quantized_cache(const std::string& dir);

// Serves matrices as zero-copy views of the mmap'ed cache. A request in another format than
// the cache holds throws (naming both): re-quantizing from already quantized weights would
// silently change results.
class QuantizedCacheWeightSource : public WeightSource {
 public:
  explicit QuantizedCacheWeightSource(std::shared_ptr<const io::WeightStore> store);
  kernels::PackedWeight matrix(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                               int64_t k, kernels::WeightFormat format,
                               bool flatten_trailing = false) override;
  std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) override;
  using WeightSource::matrix;
  kernels::WeightFormat precision() const { return precision_; }

  struct Entry {
    kernels::WeightFormat format;
    int64_t n, k;
  };
  // Every packed matrix (recap.matrices), sorted by key (tensor names joined with '+').
  const std::vector<std::pair<std::string, Entry>>& matrices() const { return entries_; }

 private:
  std::shared_ptr<const io::WeightStore> store_;
  kernels::WeightFormat precision_;
  std::vector<std::pair<std::string, Entry>> entries_;  // sorted by key
};

struct QuantizeStats {
  int64_t matrices = 0;
  int64_t vectors = 0;
  uint64_t file_bytes = 0;
  uint64_t largest_matrix_bytes = 0;
};

// Writes the cache of `config` (vision: tower source, text: projector + decoder source,
// either may be null) at `precision` into out_dir (created). Streams: each matrix is packed
// by its source, written at its offset and dropped before the next, so memory stays around
// the largest packed matrix (plus the source's own conversion buffer). The set of matrices
// and their fusion is exactly what LlavaModel::load_from asks for. copy_from_dir: the
// directory whose config/tokenizer files are copied (may be empty). progress(i, n, key) is
// called before each matrix.
QuantizeStats write_quantized_cache(
    const ModelConfig& config, WeightSource* vision, WeightSource* text, kernels::WeightFormat precision,
    const std::string& out_dir, const std::string& copy_from_dir,
    const std::function<void(int64_t, int64_t, const std::string&)>& progress = {});

// ModelConfig <-> JSON (the recap.config metadata).
std::string model_config_to_json(const ModelConfig& c);
ModelConfig model_config_from_json(const std::string& text, const std::string& source);

}  // namespace recap::models
