// Helpers shared by the config and inspect tests: temp dirs, copies of the tiny checkpoints
// with an edited config.json or edited tensors, a sharded re-write.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace recap::testutil {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline std::string tiny(const std::string& name) {
  return std::string(RECAP_TEST_DATA) + "/tiny/" + name;
}

// A fresh temporary directory, removed with its contents afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "recap_cfg_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string sub(const std::string& name) const {
    fs::create_directories(path_ + "/" + name);
    return path_ + "/" + name;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline void write_json(const std::string& path, const json& j) {
  write_text(path, j.dump(2));
}

// Copies every file of src (not recursively) into dst (created).
inline void copy_dir(const std::string& src, const std::string& dst) {
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src))
    if (e.is_regular_file()) fs::copy_file(e.path(), fs::path(dst) / e.path().filename());
}

// A copy of a tiny checkpoint dir whose config.json went through `edit`. A relative
// mm_vision_tower is made absolute so the copy still finds the tiny tower.
inline std::string copy_with_config(const TempDir& tmp, const std::string& tiny_name,
                                    const std::function<void(json&)>& edit,
                                    const std::string& sub = "model") {
  const std::string dst = tmp.sub(sub);
  copy_dir(tiny(tiny_name), dst);
  json cfg = read_json(dst + "/config.json");
  if (cfg.contains("mm_vision_tower") && cfg["mm_vision_tower"].is_string()) {
    std::string t = cfg["mm_vision_tower"].get<std::string>();
    if (t.rfind("..", 0) == 0)
      cfg["mm_vision_tower"] = (fs::path(tiny(tiny_name)) / t).lexically_normal().string();
  }
  edit(cfg);
  write_json(dst + "/config.json", cfg);
  return dst;
}

struct TensorCopy {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// All tensors of a checkpoint dir, in name order.
inline std::vector<TensorCopy> read_tensors(const std::string& dir) {
  io::WeightStore store = io::WeightStore::open(dir);
  std::vector<TensorCopy> out;
  for (const std::string& name : store.names()) {
    const io::TensorInfo& t = store.get(name);
    out.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  }
  return out;
}

inline void write_tensors(const std::string& path, const std::vector<TensorCopy>& tensors) {
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  w.write(path);
}

// Rewrites dir/model.safetensors after `edit` changed the tensor list.
inline void edit_tensors(const std::string& dir, const std::function<void(std::vector<TensorCopy>&)>& edit) {
  std::vector<TensorCopy> tensors = read_tensors(dir);
  edit(tensors);
  write_tensors(dir + "/model.safetensors", tensors);
}

// A copy of a tiny checkpoint split into two shards + model.safetensors.index.json.
inline std::string make_sharded_copy(const TempDir& tmp, const std::string& tiny_name,
                                     const std::string& sub) {
  const std::string dst = tmp.sub(sub);
  for (const auto& e : fs::directory_iterator(tiny(tiny_name)))
    if (e.is_regular_file() && e.path().extension() != ".safetensors")
      fs::copy_file(e.path(), fs::path(dst) / e.path().filename());
  json cfg = read_json(dst + "/config.json");
  if (cfg.contains("mm_vision_tower") && cfg["mm_vision_tower"].is_string()) {
    std::string t = cfg["mm_vision_tower"].get<std::string>();
    if (t.rfind("..", 0) == 0)
      cfg["mm_vision_tower"] = (fs::path(tiny(tiny_name)) / t).lexically_normal().string();
    write_json(dst + "/config.json", cfg);
  }
  std::vector<TensorCopy> all = read_tensors(tiny(tiny_name));
  const size_t half = all.size() / 2;
  std::vector<TensorCopy> a(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(half));
  std::vector<TensorCopy> b(all.begin() + static_cast<std::ptrdiff_t>(half), all.end());
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  write_tensors(dst + "/" + s1, a);
  write_tensors(dst + "/" + s2, b);
  json index;
  size_t total = 0;
  for (const auto& t : a) {
    index["weight_map"][t.name] = s1;
    total += t.bytes.size();
  }
  for (const auto& t : b) {
    index["weight_map"][t.name] = s2;
    total += t.bytes.size();
  }
  index["metadata"]["total_size"] = total;
  write_json(dst + "/model.safetensors.index.json", index);
  return dst;
}

// ---------------------------------------------------------------------------------------
// A checkpoint with the real model's names, shapes and dtypes whose data is a hole: the
// files are sparse (ftruncate), so a 17 GB checkpoint costs a few KB of disk and no time.

struct TensorDecl {
  std::string name;
  std::string dtype;  // safetensors spelling
  std::vector<int64_t> shape;
};

inline size_t decl_bytes(const TensorDecl& t) {
  size_t n = t.dtype == "F32" || t.dtype == "I32" ? 4 : t.dtype == "I64" ? 8 : 2;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  return n;
}

inline void write_sparse_safetensors(const std::string& path, const std::vector<TensorDecl>& tensors) {
  json header = json::object();
  size_t offset = 0;
  for (const auto& t : tensors) {
    const size_t nb = decl_bytes(t);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + nb}}};
    offset += nb;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8) text.push_back(' ');
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  write_text(path, prefix + text);
  fs::resize_file(path, 8 + text.size() + offset);
}

// The LLaVA-1.5-LLaMA3-8B layout of SPEC section 2(a): LLM + projector in `llm_dtype`,
// embedded CLIP-L/336 tower in F32 (with the old-format I64 position_ids), 4 shards + index.
inline std::vector<TensorDecl> real_llava_llama3_tensors(const std::string& llm_dtype, int64_t vocab) {
  std::vector<TensorDecl> ts;
  const std::string m = "model.";
  ts.push_back({m + "embed_tokens.weight", llm_dtype, {vocab, 4096}});
  for (int l = 0; l < 32; ++l) {
    const std::string p = m + "layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", llm_dtype, {4096}});
    ts.push_back({p + "self_attn.q_proj.weight", llm_dtype, {4096, 4096}});
    ts.push_back({p + "self_attn.k_proj.weight", llm_dtype, {1024, 4096}});
    ts.push_back({p + "self_attn.v_proj.weight", llm_dtype, {1024, 4096}});
    ts.push_back({p + "self_attn.o_proj.weight", llm_dtype, {4096, 4096}});
    ts.push_back({p + "post_attention_layernorm.weight", llm_dtype, {4096}});
    ts.push_back({p + "mlp.gate_proj.weight", llm_dtype, {14336, 4096}});
    ts.push_back({p + "mlp.up_proj.weight", llm_dtype, {14336, 4096}});
    ts.push_back({p + "mlp.down_proj.weight", llm_dtype, {4096, 14336}});
  }
  ts.push_back({m + "norm.weight", llm_dtype, {4096}});
  ts.push_back({"lm_head.weight", llm_dtype, {vocab, 4096}});
  ts.push_back({m + "mm_projector.0.weight", llm_dtype, {4096, 1024}});
  ts.push_back({m + "mm_projector.0.bias", llm_dtype, {4096}});
  ts.push_back({m + "mm_projector.2.weight", llm_dtype, {4096, 4096}});
  ts.push_back({m + "mm_projector.2.bias", llm_dtype, {4096}});
  const std::string v = "model.vision_tower.vision_tower.vision_model.";
  ts.push_back({v + "embeddings.class_embedding", "F32", {1024}});
  ts.push_back({v + "embeddings.patch_embedding.weight", "F32", {1024, 3, 14, 14}});
  ts.push_back({v + "embeddings.position_embedding.weight", "F32", {577, 1024}});
  ts.push_back({v + "embeddings.position_ids", "I64", {1, 577}});
  ts.push_back({v + "pre_layrnorm.weight", "F32", {1024}});
  ts.push_back({v + "pre_layrnorm.bias", "F32", {1024}});
  for (int l = 0; l < 24; ++l) {
    const std::string p = v + "encoder.layers." + std::to_string(l) + ".";
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      ts.push_back({p + ln + ".weight", "F32", {1024}});
      ts.push_back({p + ln + ".bias", "F32", {1024}});
    }
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      ts.push_back({p + "self_attn." + proj + ".weight", "F32", {1024, 1024}});
      ts.push_back({p + "self_attn." + proj + ".bias", "F32", {1024}});
    }
    ts.push_back({p + "mlp.fc1.weight", "F32", {4096, 1024}});
    ts.push_back({p + "mlp.fc1.bias", "F32", {4096}});
    ts.push_back({p + "mlp.fc2.weight", "F32", {1024, 4096}});
    ts.push_back({p + "mlp.fc2.bias", "F32", {1024}});
  }
  ts.push_back({v + "post_layernorm.weight", "F32", {1024}});
  ts.push_back({v + "post_layernorm.bias", "F32", {1024}});
  return ts;
}

// Writes `tensors` as `shards` sparse shard files + model.safetensors.index.json into dir.
inline void write_sparse_sharded(const std::string& dir, const std::vector<TensorDecl>& tensors, int shards) {
  json index;
  size_t total = 0;
  const size_t per = (tensors.size() + static_cast<size_t>(shards) - 1) / static_cast<size_t>(shards);
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
    const size_t b = static_cast<size_t>(s) * per, e = std::min(tensors.size(), b + per);
    std::vector<TensorDecl> part(tensors.begin() + static_cast<std::ptrdiff_t>(b),
                                 tensors.begin() + static_cast<std::ptrdiff_t>(e));
    write_sparse_safetensors(dir + "/" + name, part);
    for (const auto& t : part) {
      index["weight_map"][t.name] = name;
      total += decl_bytes(t);
    }
  }
  index["metadata"]["total_size"] = total;
  write_json(dir + "/model.safetensors.index.json", index);
}

// SPEC 1.2's reconstructed config.json of tennant/llava-llama-3-8b-hqedit.
inline json real_llava_llama3_config(int64_t vocab, const std::string& torch_dtype) {
  return json{{"architectures", {"LlavaLlamaForCausalLM"}},
              {"model_type", "llava_llama"},
              {"hidden_size", 4096},
              {"intermediate_size", 14336},
              {"num_hidden_layers", 32},
              {"num_attention_heads", 32},
              {"num_key_value_heads", 8},
              {"hidden_act", "silu"},
              {"rms_norm_eps", 1e-05},
              {"rope_theta", 500000.0},
              {"rope_scaling", nullptr},
              {"max_position_embeddings", 8192},
              {"tie_word_embeddings", false},
              {"attention_bias", false},
              {"vocab_size", vocab},
              {"bos_token_id", 128000},
              {"eos_token_id", 128001},
              {"mm_vision_tower", "openai/clip-vit-large-patch14-336"},
              {"mm_projector_type", "mlp2x_gelu"},
              {"mm_hidden_size", 1024},
              {"mm_vision_select_layer", -2},
              {"mm_vision_select_feature", "patch"},
              {"mm_patch_merge_type", "flat"},
              {"image_aspect_ratio", "pad"},
              {"mm_use_im_start_end", false},
              {"mm_use_im_patch_token", false},
              {"tokenizer_model_max_length", 2048},
              {"tokenizer_padding_side", "right"},
              {"use_mm_proj", true},
              {"torch_dtype", torch_dtype}};
}

// A sparse real-shaped checkpoint dir: config.json + generation_config.json (SPEC 1.3) + 4 shards.
inline std::string make_real_shaped_checkpoint(const TempDir& tmp, const std::string& sub,
                                               int64_t vocab = 128256,
                                               const std::string& llm_dtype = "BF16") {
  const std::string dir = tmp.sub(sub);
  write_json(dir + "/config.json",
             real_llava_llama3_config(vocab, llm_dtype == "BF16" ? "bfloat16" : "float16"));
  write_json(dir + "/generation_config.json", json{{"bos_token_id", 128000},
                                                   {"do_sample", true},
                                                   {"eos_token_id", {128001, 128009}},
                                                   {"max_length", 4096},
                                                   {"temperature", 0.6},
                                                   {"top_p", 0.9}});
  write_sparse_sharded(dir, real_llava_llama3_tensors(llm_dtype, vocab), 4);
  return dir;
}

}  // namespace recap::testutil
