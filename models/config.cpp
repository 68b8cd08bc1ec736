// Model configuration loading: layout detection, vision tower resolution, HF defaults,
// unsupported-value checks and tensor-shape validation. See models/config.h.
//
// Sources of truth, in order (each later one fills what the earlier ones leave open):
//   text      config.json (top level for original LLaVA, text_config for llava-hf; missing
//             keys take transformers' LlamaConfig defaults), vocab from embed_tokens rows.
//   vision    --vision-config > the tower's own config.json (separate dir, or the local dir
//             mm_vision_tower names) / llava-hf vision_config / the CLIP dir's config.json
//             > a built-in preset keyed by the hub id > what the tensor shapes tell.
//   preproc   preprocessor_config.json next to the vision config, else CLIP defaults sized to
//             the tower's image_size.
#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "io/safetensors.h"
#include "models/quantized_cache.h"
#include "models/weight_names.h"
#include "models/weight_source.h"

namespace recap::models {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::LlavaOrig:
      return "llava-orig";
    case Layout::LlavaHf:
      return "llava-hf";
    case Layout::ClipVision:
      return "clip-vision";
    case Layout::ClipFull:
      return "clip-full";
  }
  return "?";
}

namespace {

// ---------------------------------------------------------------------------------------
// JSON access that names the file and key in every error.

// A SAX pass that remembers the key path being parsed, so a parse error can name the key whose
// value is bad ("text_config.rope_theta" for an overflowing 1e999 or a Python NaN/Infinity).
struct KeyTracker : json::json_sax_t {
  std::vector<std::string> path;  // one entry per open container: its current key, "" in arrays
  std::string where() const {
    std::string w;
    for (const std::string& k : path) {
      if (k.empty()) continue;
      if (!w.empty()) w += '.';
      w += k;
    }
    return w;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    path.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    path.back() = k;
    return true;
  }
  bool end_object() override {
    path.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    path.emplace_back();
    return true;
  }
  bool end_array() override {
    path.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

// Config files are a few KB; a larger one is not a config.
constexpr std::uintmax_t kMaxConfigFileBytes = 16u << 20;

json read_json_file(const fs::path& path) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > kMaxConfigFileBytes)
    throw ConfigError(path.string() + ": " + std::to_string(size) + " bytes; a config file is at most " +
                      std::to_string(kMaxConfigFileBytes) + " bytes");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error; out_of_range for a number overflow (1e999)
    KeyTracker keys;
    json::sax_parse(text, &keys);
    const std::string key = keys.where();
    throw ConfigError(path.string() + ": malformed JSON" + (key.empty() ? "" : " at " + key) + ": " +
                      e.what() + " (NaN, Infinity and numbers beyond double range are not valid JSON)");
  }
  if (!j.is_object()) throw ConfigError(path.string() + ": expected a JSON object at top level");
  return j;
}

// A JSON object inside a file; `prefix` is its key path ("text_config.") for messages.
struct Section {
  const json* obj = nullptr;
  std::string file;
  std::string prefix;

  std::string key_name(const std::string& key) const { return prefix + key; }
  bool has(const std::string& key) const { return obj && obj->contains(key) && !(*obj)[key].is_null(); }
  const json& at(const std::string& key) const { return (*obj)[key]; }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(file + ": " + key_name(key) + " = " + at(key).dump() + ": " + what);
  }
  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const {
    std::string value = has(key) ? at(key).dump() : std::string("(absent)");
    throw ConfigError(file + ": unsupported " + key_name(key) + " = " + value + " (" + why + ")");
  }

  int64_t get_int(const std::string& key, int64_t def) const {
    if (!has(key)) return def;
    const json& v = at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    }
    fail(key, "expected an integer");
  }
  double get_float(const std::string& key, double def) const {
    if (!has(key)) return def;
    const json& v = at(key);
    if (v.is_number()) return v.get<double>();
    fail(key, "expected a number");
  }
  std::string get_str(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = at(key);
    if (v.is_string()) return v.get<std::string>();
    fail(key, "expected a string");
  }
  bool get_bool(const std::string& key, bool def) const {
    if (!has(key)) return def;
    const json& v = at(key);
    if (v.is_boolean()) return v.get<bool>();
    fail(key, "expected true or false");
  }
  int64_t get_positive(const std::string& key, int64_t def) const {
    int64_t v = get_int(key, def);
    if (v <= 0) {
      if (has(key)) fail(key, "must be positive");
      throw ConfigError(file + ": " + key_name(key) + " must be positive");
    }
    return v;
  }
  // An integer in [lo, hi]; the default is not checked (every default is in range).
  int64_t get_int_in(const std::string& key, int64_t def, int64_t lo, int64_t hi) const {
    const int64_t v = get_int(key, def);
    if (has(key) && (v < lo || v > hi))
      fail(key, "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }
  // A dimension: an integer in [1, hi].
  int64_t get_dim(const std::string& key, int64_t def, int64_t hi) const {
    return get_int_in(key, def, 1, hi);
  }
  // A finite number in (lo, hi] (lo exclusive: eps and theta must be positive).
  double get_float_in(const std::string& key, double def, double lo, double hi) const {
    const double v = get_float(key, def);
    if (has(key) && !(std::isfinite(v) && v > lo && v <= hi))
      fail(key, "out of range (" + number_str(lo) + ", " + number_str(hi) + "]");
    return v;
  }
  static std::string number_str(double d) {
    std::ostringstream o;
    o << d;
    return o.str();
  }
  Section sub(const std::string& key) const {
    Section s;
    s.file = file;
    s.prefix = prefix + key + ".";
    if (has(key)) {
      if (!at(key).is_object()) fail(key, "expected an object");
      s.obj = &at(key);
    }
    return s;
  }
};

std::vector<std::string> string_list(const Section& s, const std::string& key) {
  std::vector<std::string> out;
  if (!s.has(key)) return out;
  const json& v = s.at(key);
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) s.fail(key, "expected a list of strings");
  for (const json& e : v) {
    if (!e.is_string()) s.fail(key, "expected a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

// eos_token_id may be an int or a list of ints.
std::vector<int64_t> token_id_list(const Section& s, const std::string& key) {
  std::vector<int64_t> out;
  if (!s.has(key)) return out;
  const json& v = s.at(key);
  if (v.is_number_integer()) return {v.get<int64_t>()};
  if (!v.is_array()) s.fail(key, "expected an integer or a list of integers");
  for (const json& e : v) {
    if (!e.is_number_integer()) s.fail(key, "expected an integer or a list of integers");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Vision presets and shape inference.

VisionConfig make_preset(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t image,
                         int64_t patch) {
  VisionConfig v;
  v.hidden = hidden;
  v.intermediate = inter;
  v.layers = layers;
  v.heads = heads;
  v.image_size = image;
  v.patch_size = patch;
  v.channels = 3;
  v.ln_eps = 1e-5f;
  v.hidden_act = "quick_gelu";
  return v;
}

const std::map<std::string, VisionConfig>& presets() {
  // OpenAI CLIP vision towers (transformers CLIPVisionConfig of each hub repo).
  static const std::map<std::string, VisionConfig> table = {
      {"openai/clip-vit-large-patch14-336", make_preset(1024, 4096, 24, 16, 336, 14)},
      {"openai/clip-vit-large-patch14", make_preset(1024, 4096, 24, 16, 224, 14)},
      {"openai/clip-vit-base-patch16", make_preset(768, 3072, 12, 12, 224, 16)},
      {"openai/clip-vit-base-patch32", make_preset(768, 3072, 12, 12, 224, 32)},
  };
  return table;
}

std::string trim_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string preset_key(const std::string& id_or_path) {
  std::string s = trim_slashes(id_or_path);
  if (presets().count(s)) return s;
  std::string base = fs::path(s).filename().string();
  for (const auto& [key, v] : presets()) {
    if (fs::path(key).filename().string() == base) return key;
  }
  return {};
}

// What the tower's tensors say about its dims (absent when the tensor is absent).
struct ShapeFacts {
  std::optional<int64_t> hidden, channels, patch, image_size, intermediate, layers;
};

ShapeFacts infer_vision_shapes(const io::WeightStore& store, const std::string& prefix) {
  ShapeFacts f;
  WeightNames names;
  names.vision_prefix = prefix;
  if (auto* t = store.find(tensor_name(names, VisionTensor::ClassEmbedding)); t && t->shape.size() == 1)
    f.hidden = t->shape[0];
  if (auto* t = store.find(tensor_name(names, VisionTensor::PatchEmbedding));
      t && t->shape.size() == 4 && t->shape[2] == t->shape[3]) {
    if (!f.hidden) f.hidden = t->shape[0];
    f.channels = t->shape[1];
    f.patch = t->shape[2];
  }
  if (auto* t = store.find(tensor_name(names, VisionTensor::PositionEmbedding));
      t && t->shape.size() == 2 && f.patch) {
    int64_t patches = t->shape[0] - 1;
    auto grid =
        static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(patches, 0)))));
    if (grid > 0 && grid * grid == patches) f.image_size = grid * *f.patch;
  }
  if (auto* t = store.find(tensor_name(names, VisionLayerTensor::Fc1Weight, 0)); t && t->shape.size() == 2) {
    f.intermediate = t->shape[0];
  }
  const std::string layer_prefix = prefix + "encoder.layers.";
  int64_t max_layer = -1;
  for (const std::string& name : store.names()) {
    if (name.compare(0, layer_prefix.size(), layer_prefix) != 0) continue;
    size_t end = name.find('.', layer_prefix.size());
    std::string idx = name.substr(layer_prefix.size(), end - layer_prefix.size());
    if (idx.empty() || !std::all_of(idx.begin(), idx.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    if (idx.size() > 6) continue;
    max_layer = std::max<int64_t>(max_layer, std::stoll(idx));
  }
  if (max_layer >= 0) f.layers = max_layer + 1;
  return f;
}

// CLIPVisionConfig fields (transformers' defaults for absent keys).
VisionConfig parse_clip_vision(const Section& s) {
  if (s.has("model_type")) {
    std::string mt = s.get_str("model_type", "");
    if (mt != "clip_vision_model" && mt != "clip")
      s.unsupported("model_type", "only CLIP vision towers (clip_vision_model) are supported");
  }
  VisionConfig v;
  v.hidden = s.get_dim("hidden_size", 768, kLimits.vision_hidden);
  v.intermediate = s.get_dim("intermediate_size", 3072, kLimits.vision_intermediate);
  v.layers = s.get_dim("num_hidden_layers", 12, kLimits.vision_layers);
  v.heads = s.get_dim("num_attention_heads", 12, kLimits.vision_heads);
  v.image_size = s.get_dim("image_size", 224, kLimits.image_size);
  v.patch_size = s.get_dim("patch_size", 32, kLimits.patch_size);
  v.channels = s.get_dim("num_channels", 3, kLimits.channels);
  v.ln_eps = static_cast<float>(s.get_float_in("layer_norm_eps", 1e-5, 0.0, kLimits.max_eps));
  v.hidden_act = s.get_str("hidden_act", "quick_gelu");
  if (v.hidden_act != "quick_gelu") s.unsupported("hidden_act", "the CLIP tower must use quick_gelu");
  return v;
}

// A CLIPVisionConfig config.json, or a CLIPModel one with vision_config nested.
VisionConfig parse_vision_config_file(const json& j, const std::string& file, std::string* what) {
  Section top{&j, file, ""};
  if (top.has("vision_config")) {
    *what = file + " (vision_config)";
    return parse_clip_vision(top.sub("vision_config"));
  }
  std::string mt = top.get_str("model_type", "");
  if (mt == "clip" || mt == "llava") {
    // CLIPModel / LlavaConfig without vision_config: transformers' own defaults apply.
    *what = file + " (vision_config absent: transformers defaults)";
    Section empty{nullptr, file, "vision_config."};
    if (mt == "llava") return make_preset(1024, 4096, 24, 16, 336, 14);
    return parse_clip_vision(empty);
  }
  *what = file;
  return parse_clip_vision(top);
}

// The vision prefix of the tensor-name table (models/weight_names.cpp) this store uses, "" if none.
std::string find_vision_prefix(const io::WeightStore& store) {
  for (const std::string& p : known_vision_prefixes()) {
    WeightNames probe;
    probe.vision_prefix = p;
    if (store.has(tensor_name(probe, VisionTensor::ClassEmbedding)) ||
        store.has(tensor_name(probe, VisionTensor::PatchEmbedding)))
      return p;
  }
  return {};
}

// A hub id is "owner/name" that is not an existing path.
bool looks_like_hub_id(const std::string& s) {
  if (s.empty() || s[0] == '/' || s[0] == '.' || s[0] == '~') return false;
  return std::count(s.begin(), s.end(), '/') == 1 && s.back() != '/';
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

std::shared_ptr<io::WeightStore> open_store(const fs::path& dir) {
  reject_pickle_only_checkpoint(dir.string());  // names the conversion instead of "no safetensors"
  return std::make_shared<io::WeightStore>(io::WeightStore::open(dir.string()));
}

void require_dir(const fs::path& dir, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw ConfigError(dir.string() + ": " + what + " does not exist");
  if (!fs::is_directory(dir, ec)) throw ConfigError(dir.string() + ": " + what + " is not a directory");
}

// ---------------------------------------------------------------------------------------
// The resolver: config + stores.

struct Resolved {
  ModelConfig cfg;
  std::shared_ptr<io::WeightStore> text_store;
  std::shared_ptr<io::WeightStore> vision_store;
};

Layout detect_layout(const Section& top, std::string* arch) {
  for (const std::string& a : string_list(top, "architectures")) {
    *arch = a;
    if (a == "LlavaLlamaForCausalLM") return Layout::LlavaOrig;
    if (a == "LlavaForConditionalGeneration") return Layout::LlavaHf;
    if (a == "CLIPVisionModel" || a == "CLIPVisionModelWithProjection") return Layout::ClipVision;
    if (a == "CLIPModel") return Layout::ClipFull;
    top.unsupported(
        "architectures",
        "supported: LlavaLlamaForCausalLM, LlavaForConditionalGeneration, CLIPVisionModel, CLIPModel");
  }
  const std::string mt = top.get_str("model_type", "");
  *arch = "model_type " + mt;
  if (mt == "llava_llama") return Layout::LlavaOrig;
  if (mt == "llava") return top.has("mm_vision_tower") ? Layout::LlavaOrig : Layout::LlavaHf;
  if (mt == "clip_vision_model") return Layout::ClipVision;
  if (mt == "clip") return Layout::ClipFull;
  if (top.has("model_type"))
    top.unsupported("model_type", "supported: llava_llama, llava, clip_vision_model, clip");
  throw ConfigError(top.file + ": neither architectures nor model_type says which model this is");
}

// LlamaConfig (transformers defaults for absent keys); vocab from the embedding rows.
TextConfig parse_llama(const Section& s, const io::WeightStore& store, const std::string& embed_name,
                       std::vector<std::string>& warnings) {
  if (s.prefix == "text_config." && s.has("model_type") && s.get_str("model_type", "") != "llama")
    s.unsupported("model_type", "the language model must be llama");
  TextConfig t;
  t.hidden = s.get_dim("hidden_size", 4096, kLimits.text_hidden);
  t.intermediate = s.get_dim("intermediate_size", 11008, kLimits.text_intermediate);
  t.layers = s.get_dim("num_hidden_layers", 32, kLimits.text_layers);
  t.heads = s.get_dim("num_attention_heads", 32, kLimits.text_heads);
  t.kv_heads = s.get_dim("num_key_value_heads", t.heads, kLimits.text_heads);
  if (t.heads % t.kv_heads != 0)
    throw ConfigError(s.file + ": " + s.key_name("num_attention_heads") + " = " + std::to_string(t.heads) +
                      " is not a multiple of " + s.key_name("num_key_value_heads") + " = " +
                      std::to_string(t.kv_heads));
  if (s.has("head_dim")) {
    t.head_dim = s.get_dim("head_dim", 0, kLimits.head_dim);
  } else {
    if (t.hidden % t.heads != 0)
      throw ConfigError(s.file + ": " + s.key_name("hidden_size") + " = " + std::to_string(t.hidden) +
                        " is not a multiple of " + s.key_name("num_attention_heads") + " = " +
                        std::to_string(t.heads));
    t.head_dim = t.hidden / t.heads;
  }
  t.rms_eps = static_cast<float>(s.get_float_in("rms_norm_eps", 1e-6, 0.0, kLimits.max_eps));
  t.rope_theta = static_cast<float>(s.get_float_in("rope_theta", 10000.0, 0.0, kLimits.max_rope_theta));
  t.max_position = s.get_dim("max_position_embeddings", 2048, kLimits.max_position);
  t.tie_embeddings = s.get_bool("tie_word_embeddings", false);
  if (s.get_str("hidden_act", "silu") != "silu") s.unsupported("hidden_act", "the LLaMA MLP must use silu");
  if (s.has("rope_scaling")) s.unsupported("rope_scaling", "only plain RoPE is implemented");
  if (s.get_bool("attention_bias", false)) s.unsupported("attention_bias", "LLaMA attention has no bias");
  if (s.get_bool("mlp_bias", false)) s.unsupported("mlp_bias", "LLaMA MLP has no bias");
  const int64_t config_vocab = s.get_dim("vocab_size", 32000, kLimits.vocab);
  t.vocab = config_vocab;
  if (auto* e = store.find(embed_name); e && e->shape.size() == 2 && e->shape[0] > 0) {
    t.vocab = e->shape[0];
    if (t.vocab != config_vocab)
      warnings.push_back(s.file + ": " + s.key_name("vocab_size") + " = " + std::to_string(config_vocab) +
                         " but " + embed_name + " has " + std::to_string(t.vocab) + " rows; using " +
                         std::to_string(t.vocab));
  }
  return t;
}

void parse_generation(const fs::path& dir, const Section& top, const Section& text, ModelConfig& cfg) {
  GenerationConfig g;
  const fs::path gen_path = dir / "generation_config.json";
  std::error_code ec;
  if (fs::exists(gen_path, ec)) {
    json j = read_json_file(gen_path);
    Section gs{&j, gen_path.string(), ""};
    g.bos_token_id = gs.get_int("bos_token_id", -1);
    g.eos_token_ids = token_id_list(gs, "eos_token_id");
  }
  if (g.bos_token_id < 0) g.bos_token_id = top.get_int("bos_token_id", text.get_int("bos_token_id", -1));
  if (g.eos_token_ids.empty()) g.eos_token_ids = token_id_list(top, "eos_token_id");
  if (g.eos_token_ids.empty()) g.eos_token_ids = token_id_list(text, "eos_token_id");
  if (g.eos_token_ids.empty())
    cfg.warnings.push_back(dir.string() + ": no eos_token_id in generation_config.json or config.json");
  cfg.generation = g;
}

// size / crop_size: an int, {"shortest_edge": n} or {"height": h, "width": w} (square only).
int64_t preprocessor_edge(const Section& s, const std::string& key, int64_t def) {
  if (!s.has(key)) return def;
  const json& v = s.at(key);
  if (v.is_number()) return s.get_dim(key, def, kLimits.image_size);
  if (v.is_object()) {
    Section o = s.sub(key);
    if (o.has("shortest_edge")) return o.get_dim("shortest_edge", def, kLimits.image_size);
    if (o.has("height") || o.has("width")) {
      int64_t h = o.get_dim("height", 0, kLimits.image_size), w = o.get_dim("width", 0, kLimits.image_size);
      if (h != w) s.unsupported(key, "only square sizes are supported");
      return h;
    }
  }
  s.fail(key, "expected an integer, {\"shortest_edge\": n} or {\"height\": h, \"width\": w}");
}

void parse_preprocessor(const std::vector<fs::path>& candidates, ModelConfig& cfg) {
  VisionConfig& v = cfg.vision;
  v.resize_shortest_edge = v.image_size;
  v.crop_size = v.image_size;
  cfg.preprocessor_source = "defaults (CLIP mean/std, size = crop = image_size)";
  std::error_code ec;
  for (const fs::path& p : candidates) {
    if (p.empty() || !fs::is_regular_file(p, ec)) continue;
    json j = read_json_file(p);
    Section s{&j, p.string(), ""};
    v.resize_shortest_edge = preprocessor_edge(s, "size", v.image_size);
    v.crop_size = preprocessor_edge(s, "crop_size", v.resize_shortest_edge);
    for (const char* key : {"image_mean", "image_std"}) {
      if (!s.has(key)) continue;
      const json& a = s.at(key);
      if (!a.is_array() || a.size() != 3 ||
          !std::all_of(a.begin(), a.end(), [](const json& e) { return e.is_number(); }))
        s.fail(key, "expected a list of 3 numbers");
      auto& dst = std::string(key) == "image_mean" ? v.image_mean : v.image_std;
      for (int c = 0; c < 3; ++c) {
        const double x = a[c].get<double>();
        if (!(std::isfinite(x) && std::fabs(x) <= kLimits.max_mean_std))
          s.fail(key, "each entry must be a finite number in [-" + Section::number_str(kLimits.max_mean_std) +
                          ", " + Section::number_str(kLimits.max_mean_std) + "]");
        dst[c] = static_cast<float>(x);
      }
    }
    for (float sd : v.image_std)
      if (!(sd > 0)) s.fail("image_std", "must be positive");
    if (!s.get_bool("do_resize", true)) s.unsupported("do_resize", "the engine always resizes");
    if (!s.get_bool("do_normalize", true)) s.unsupported("do_normalize", "the engine always normalizes");
    if (!s.get_bool("do_rescale", true)) s.unsupported("do_rescale", "the engine always rescales by 1/255");
    if (s.has("resample") && s.get_int("resample", 3) != 3)
      s.unsupported("resample", "only PIL BICUBIC (3) is implemented");
    if (v.crop_size != v.image_size)
      s.unsupported("crop_size", "must equal the tower's image_size " + std::to_string(v.image_size));
    if (v.resize_shortest_edge < v.crop_size)
      s.unsupported("size", "the shortest edge must be at least crop_size " + std::to_string(v.crop_size));
    cfg.preprocessor_source = p.string();
    break;
  }
  // LLaVA's expand2square background: tuple(int(x * 255) for x in image_mean) (truncation).
  for (int c = 0; c < 3; ++c) {
    double bg = static_cast<double>(v.image_mean[c]) * 255.0;
    v.pad_background[c] = static_cast<uint8_t>(std::clamp(bg, 0.0, 255.0));
  }
}

// Fills dims the config source did not give (or, for a preset / no source, every dim the
// tensors show) from the tower's tensor shapes.
// (An explicit config file's dims are not overridden: validation checks them against the shapes.)
void apply_shape_facts(const ShapeFacts& f, const std::string& source, VisionConfig& v,
                       std::vector<std::string>& warnings) {
  auto take = [&](const std::optional<int64_t>& fact, int64_t& dst, const char* what) {
    if (!fact) return;
    if (dst != 0 && dst != *fact)
      warnings.push_back(source + " says " + what + " " + std::to_string(dst) +
                         " but the tower's tensors say " + std::to_string(*fact) + "; using " +
                         std::to_string(*fact));
    dst = *fact;
  };
  take(f.hidden, v.hidden, "hidden_size");
  take(f.channels, v.channels, "num_channels");
  take(f.patch, v.patch_size, "patch_size");
  take(f.image_size, v.image_size, "image_size");
  take(f.intermediate, v.intermediate, "intermediate_size");
  take(f.layers, v.layers, "num_hidden_layers");
}

void check_vision(const ModelConfig& cfg, const std::string& source) {
  const VisionConfig& v = cfg.vision;
  auto bad = [&](const std::string& what) { throw ConfigError("vision tower (" + source + "): " + what); };
  for (auto [val, name] : {std::pair{v.hidden, "hidden_size"},
                           {v.intermediate, "intermediate_size"},
                           {v.layers, "num_hidden_layers"},
                           {v.image_size, "image_size"},
                           {v.patch_size, "patch_size"},
                           {v.channels, "num_channels"}}) {
    if (val <= 0)
      bad(std::string(name) +
          " is unknown (neither the config nor the tensors give it); pass --vision-config DIR");
  }
  if (v.heads <= 0)
    bad("num_attention_heads is unknown (tensor shapes cannot tell it); pass --vision-config DIR");
  // Dims taken from tensor shapes or names (a tensor "...layers.999999.x") have not been range
  // checked by a config parser yet.
  for (auto [val, name, hi] : {std::tuple{v.hidden, "hidden_size", kLimits.vision_hidden},
                               {v.intermediate, "intermediate_size", kLimits.vision_intermediate},
                               {v.layers, "num_hidden_layers", kLimits.vision_layers},
                               {v.heads, "num_attention_heads", kLimits.vision_heads},
                               {v.image_size, "image_size", kLimits.image_size},
                               {v.patch_size, "patch_size", kLimits.patch_size},
                               {v.channels, "num_channels", kLimits.channels}}) {
    if (val > hi)
      bad(std::string(name) + " = " + std::to_string(val) + " is out of range [1, " + std::to_string(hi) +
          "]");
  }
  if (v.hidden % v.heads != 0)
    bad("hidden_size " + std::to_string(v.hidden) + " is not a multiple of num_attention_heads " +
        std::to_string(v.heads));
  if (v.image_size % v.patch_size != 0)
    bad("image_size " + std::to_string(v.image_size) + " is not a multiple of patch_size " +
        std::to_string(v.patch_size));
}

// What the resolved dims imply the engine will allocate, checked against kLimits before anything
// is sized by them: parameter count, the RoPE cos/sin table, the KV cache per position.
void check_implied_memory(const ModelConfig& cfg, const std::string& file) {
  const VisionConfig& v = cfg.vision;
  const TextConfig& t = cfg.text;
  auto d = [](int64_t x) { return static_cast<double>(x); };
  const double patches = d(v.image_size / v.patch_size) * d(v.image_size / v.patch_size);
  double params = d(v.layers) * (4 * d(v.hidden) * d(v.hidden) + 2 * d(v.hidden) * d(v.intermediate)) +
                  (patches + 1) * d(v.hidden) +
                  d(v.hidden) * d(v.channels) * d(v.patch_size) * d(v.patch_size);
  double rope_bytes = 0, kv_bytes_per_position = 0;
  if (cfg.has_text) {
    const double q = d(t.heads) * d(t.head_dim), kv = d(t.kv_heads) * d(t.head_dim);
    params +=
        d(t.vocab) * d(t.hidden) * (t.tie_embeddings ? 1 : 2) +
        d(t.layers) * (2 * d(t.hidden) * q + 2 * d(t.hidden) * kv + 3 * d(t.hidden) * d(t.intermediate)) +
        d(v.hidden) * d(t.hidden) + d(t.hidden) * d(t.hidden);
    rope_bytes = d(t.max_position) * d(t.head_dim) * 4;  // cos + sin, head_dim / 2 each, f32
    kv_bytes_per_position = d(t.layers) * 2 * kv * 4;    // K and V of every layer, f32
  }
  auto too_big = [&](const std::string& what, double value, double limit) {
    std::ostringstream o;
    o << file << ": the config implies " << what << " of " << value << ", more than the limit " << limit
      << " (text: hidden_size " << t.hidden << ", intermediate_size " << t.intermediate
      << ", num_hidden_layers " << t.layers << ", vocab " << t.vocab << ", max_position_embeddings "
      << t.max_position << "; vision: hidden_size " << v.hidden << ", num_hidden_layers " << v.layers << ")";
    throw ConfigError(o.str());
  };
  if (params > kLimits.max_parameters) too_big("a parameter count", params, kLimits.max_parameters);
  if (rope_bytes > kLimits.max_rope_table_bytes)
    too_big("a RoPE table in bytes", rope_bytes, kLimits.max_rope_table_bytes);
  if (kv_bytes_per_position > kLimits.max_kv_bytes_per_position)
    too_big("KV cache bytes per position", kv_bytes_per_position, kLimits.max_kv_bytes_per_position);
}

Resolved resolve(const std::string& weights_dir, const LoadOptions& opts) {
  if (weights_dir.empty()) throw ConfigError("no weights directory given");
  const fs::path dir = fs::path(weights_dir);
  require_dir(dir, "weights directory");
  const fs::path config_path = dir / "config.json";
  std::error_code ec;
  if (!fs::exists(config_path, ec))
    throw ConfigError(config_path.string() + ": missing (not a model directory?)");
  const json top_json = read_json_file(config_path);
  const Section top{&top_json, config_path.string(), ""};

  Resolved r;
  ModelConfig& cfg = r.cfg;
  cfg.weights_dir = weights_dir;
  cfg.layout = detect_layout(top, &cfg.architecture);
  set_model_family(cfg, family_for_layout(cfg.layout));
  auto main_store = open_store(dir);
  cfg.text_dtype = top.get_str("torch_dtype", "");

  // --- where the tower is, and which config describes it -------------------------------
  std::shared_ptr<io::WeightStore> vstore;
  std::string vprefix;
  std::optional<VisionConfig> vcfg;  // from an explicit config file
  std::string vcfg_source;
  std::vector<fs::path> preproc_candidates;
  std::string preset_id;  // hub id to look up when no config file is found
  cfg.vision.select_layer = -2;
  cfg.vision.select_feature = "patch";

  auto use_separate_tower = [&](const fs::path& tdir_in, const std::string& why) {
    const fs::path tdir = tdir_in.lexically_normal();
    require_dir(tdir, "vision tower directory (" + why + ")");
    vstore = open_store(tdir);
    vprefix = find_vision_prefix(*vstore);
    if (vprefix.empty())
      throw ConfigError(tdir.string() +
                        ": no CLIP vision tensors (looked for vision_model.embeddings.class_embedding)");
    cfg.vision_weights_dir = tdir.string();
    cfg.vision_tower_source = "separate directory " + tdir.string() + " (" + why + ")";
    const fs::path tcfg = tdir / "config.json";
    if (fs::is_regular_file(tcfg, ec))
      vcfg = parse_vision_config_file(read_json_file(tcfg), tcfg.string(), &vcfg_source);
    preproc_candidates.push_back(tdir / "preprocessor_config.json");
  };

  if (cfg.layout == Layout::LlavaOrig || cfg.layout == Layout::LlavaHf) {
    cfg.has_text = true;
    cfg.has_vision = true;
    r.text_store = main_store;
  } else {
    cfg.has_text = false;
    cfg.has_vision = true;
    if (!opts.vision_weights_dir.empty())
      cfg.warnings.push_back("--vision-weights is ignored: " + weights_dir + " is itself a CLIP checkpoint");
  }

  if (cfg.has_text)
    cfg.names = resolve_text_names(cfg.layout, [&](const std::string& n) { return main_store->has(n); });

  if (cfg.layout == Layout::LlavaOrig) {
    // Unsupported LLaVA options.
    const std::string proj = top.get_str("mm_projector_type", "linear");
    if (proj != "mlp2x_gelu") top.unsupported("mm_projector_type", "only mlp2x_gelu is implemented");
    if (top.get_str("mm_vision_select_feature", "patch") != "patch")
      top.unsupported("mm_vision_select_feature", "only patch (drop CLS) is implemented");
    if (top.get_str("image_aspect_ratio", "") != "pad")
      top.unsupported("image_aspect_ratio", "only pad (expand2square) is implemented");
    if (top.get_bool("mm_use_im_start_end", false))
      top.unsupported("mm_use_im_start_end", "image start/end tokens are not implemented");
    if (top.get_str("mm_patch_merge_type", "flat") != "flat")
      top.unsupported("mm_patch_merge_type", "only flat is implemented");
    if (top.has("mm_vision_select_layer")) {
      cfg.vision.select_layer = top.get_int("mm_vision_select_layer", -2);
    } else {
      cfg.warnings.push_back(top.file + ": mm_vision_select_layer absent; using -2 (LLaVA-1.5)");
    }

    const std::string tower = top.get_str("mm_vision_tower", top.get_str("vision_tower", ""));
    const std::string embedded = layout_naming(Layout::LlavaOrig).vision.front();
    fs::path tower_dir;  // the local dir mm_vision_tower names, if it exists
    if (!tower.empty() && !looks_like_hub_id(tower)) {
      fs::path p = (fs::path(tower).is_absolute() ? fs::path(tower) : dir / tower).lexically_normal();
      if (fs::is_directory(p, ec)) tower_dir = p;
    } else if (!tower.empty() && fs::is_directory(dir / tower, ec)) {
      tower_dir = dir / tower;
    }
    if (!opts.vision_weights_dir.empty()) {
      use_separate_tower(opts.vision_weights_dir, "--vision-weights");
    } else if (!find_vision_prefix(*main_store).empty()) {
      vstore = main_store;
      vprefix = find_vision_prefix(*main_store);
      cfg.vision_weights_dir = weights_dir;
      cfg.vision_tower_source = "embedded in the checkpoint (" + vprefix + "*)";
      if (!tower_dir.empty()) {
        const fs::path tcfg = tower_dir / "config.json";
        if (fs::is_regular_file(tcfg, ec)) {
          vcfg = parse_vision_config_file(read_json_file(tcfg), tcfg.string(), &vcfg_source);
          vcfg_source += " (mm_vision_tower)";
        }
        preproc_candidates.push_back(tower_dir / "preprocessor_config.json");
      }
    } else if (tower.empty()) {
      throw ConfigError(top.file + ": no mm_vision_tower and the checkpoint holds no " + embedded +
                        "* tensors; pass --vision-weights DIR");
    } else if (!tower_dir.empty()) {
      use_separate_tower(tower_dir, "config.json mm_vision_tower \"" + tower + "\"");
    } else if (looks_like_hub_id(tower)) {
      throw ConfigError(top.file + ": mm_vision_tower = \"" + tower +
                        "\" is a hub id and the checkpoint holds no " + embedded +
                        "* tensors; pass --vision-weights DIR (a local CLIP safetensors directory)");
    } else {
      fs::path p = (fs::path(tower).is_absolute() ? fs::path(tower) : dir / tower).lexically_normal();
      throw ConfigError(p.string() + ": vision tower directory (config.json mm_vision_tower \"" + tower +
                        "\") does not exist and the checkpoint holds no " + embedded +
                        "* tensors; pass --vision-weights DIR");
    }
    preset_id = tower;
    preproc_candidates.push_back(dir / "preprocessor_config.json");
  } else if (cfg.layout == Layout::LlavaHf) {
    cfg.image_token_index = top.get_int("image_token_index", 32000);
    if (top.get_str("projector_hidden_act", "gelu") != "gelu")
      top.unsupported("projector_hidden_act", "the projector must use exact-erf gelu");
    if (!top.get_bool("multimodal_projector_bias", true))
      top.unsupported("multimodal_projector_bias", "the projector must have biases");
    if (top.get_str("vision_feature_select_strategy", "default") != "default")
      top.unsupported("vision_feature_select_strategy", "only default (drop CLS) is implemented");
    if (top.has("vision_feature_layer") && !top.at("vision_feature_layer").is_number_integer())
      top.unsupported("vision_feature_layer", "only a single layer index is implemented");
    cfg.vision.select_layer = top.get_int("vision_feature_layer", -2);
    if (!opts.vision_weights_dir.empty()) {
      use_separate_tower(opts.vision_weights_dir, "--vision-weights");
    } else {
      vstore = main_store;
      vprefix = find_vision_prefix(*main_store);
      if (vprefix.empty()) vprefix = layout_naming(Layout::LlavaHf).vision.back();
      cfg.vision_weights_dir = weights_dir;
      cfg.vision_tower_source = "embedded in the checkpoint (" + vprefix + "*)";
    }
    if (!vcfg) {
      vcfg = parse_vision_config_file(top_json, config_path.string(), &vcfg_source);
    }
    preproc_candidates.push_back(dir / "preprocessor_config.json");
  } else {
    vstore = main_store;
    vprefix = find_vision_prefix(*main_store);
    if (vprefix.empty()) vprefix = layout_naming(cfg.layout).vision.back();
    cfg.vision_weights_dir = weights_dir;
    cfg.vision_tower_source = "this CLIP checkpoint (" + vprefix + "*)";
    vcfg = parse_vision_config_file(top_json, config_path.string(), &vcfg_source);
    preproc_candidates.push_back(dir / "preprocessor_config.json");
  }
  cfg.names.vision_prefix = vprefix;
  r.vision_store = vstore;

  // --vision-config overrides every other source of the tower's dims.
  if (!opts.vision_config_dir.empty()) {
    fs::path p = opts.vision_config_dir;
    if (fs::is_directory(p, ec)) p /= "config.json";
    if (!fs::is_regular_file(p, ec))
      throw ConfigError(p.string() + ": vision config (--vision-config) does not exist");
    vcfg = parse_vision_config_file(read_json_file(p), p.string(), &vcfg_source);
    vcfg_source += " (--vision-config)";
    preproc_candidates.insert(preproc_candidates.begin(), p.parent_path() / "preprocessor_config.json");
  }

  // --- vision dims ---------------------------------------------------------------------
  const int64_t select_layer = cfg.vision.select_layer;
  const ShapeFacts facts = infer_vision_shapes(*vstore, vprefix);
  if (vcfg) {
    cfg.vision = *vcfg;
    cfg.vision_config_source = vcfg_source;
  } else if (std::string key = preset_key(preset_id); !key.empty()) {
    cfg.vision = presets().at(key);
    cfg.vision_config_source = "built-in preset " + key + " (checked against tensor shapes)";
    apply_shape_facts(facts, "built-in preset " + key, cfg.vision, cfg.warnings);
  } else {
    cfg.vision = VisionConfig{};
    cfg.vision.channels = 0;
    cfg.vision_config_source = "tensor shapes only";
    apply_shape_facts(facts, "tensor shapes", cfg.vision, cfg.warnings);
  }
  cfg.vision.select_layer = select_layer;
  cfg.vision.select_feature = "patch";
  check_vision(cfg, cfg.vision_config_source);
  if (cfg.vision.select_layer < -(cfg.vision.layers + 1) || cfg.vision.select_layer > cfg.vision.layers) {
    throw ConfigError(top.file + ": vision select layer " + std::to_string(cfg.vision.select_layer) +
                      " is out of range for a tower with " + std::to_string(cfg.vision.layers) + " layers");
  }
  parse_preprocessor(preproc_candidates, cfg);

  // --- text + projector ----------------------------------------------------------------
  if (cfg.has_text) {
    const Section text = cfg.layout == Layout::LlavaHf ? top.sub("text_config") : top;
    const std::string embed = tensor_name(cfg.names, TextTensor::Embedding);
    cfg.text = parse_llama(text, *main_store, embed, cfg.warnings);
    if (cfg.text.tie_embeddings) cfg.names.lm_head = embed;
    if (cfg.layout == Layout::LlavaHf && !top.has("text_config"))
      cfg.warnings.push_back(top.file + ": text_config absent; using transformers' LlamaConfig defaults");
    if (cfg.text_dtype.empty()) cfg.text_dtype = text.get_str("torch_dtype", "");
    cfg.projector.type = "mlp2x_gelu";
    cfg.projector.in = cfg.vision.hidden;
    cfg.projector.hidden = cfg.text.hidden;  // LLaVA: Linear(mm_hidden, hidden), GELU, Linear(hidden, hidden)
    cfg.projector.out = cfg.text.hidden;
    if (cfg.layout == Layout::LlavaOrig && top.has("mm_hidden_size") &&
        top.get_int("mm_hidden_size", 0) != cfg.vision.hidden) {
      cfg.warnings.push_back(top.file +
                             ": mm_hidden_size = " + std::to_string(top.get_int("mm_hidden_size", 0)) +
                             " but the vision tower's hidden size is " + std::to_string(cfg.vision.hidden));
    }
    parse_generation(dir, top, text, cfg);
  }
  check_implied_memory(cfg, config_path.string());
  return r;
}

}  // namespace

const VisionConfig* vision_preset(const std::string& hub_id_or_path) {
  std::string key = preset_key(hub_id_or_path);
  return key.empty() ? nullptr : &presets().at(key);
}

ModelConfig load_model_config(const std::string& weights_dir, const LoadOptions& opts) {
  return resolve(weights_dir, opts).cfg;
}

Checkpoint open_checkpoint_unchecked(const std::string& weights_dir, const LoadOptions& opts) {
  // A quantized cache (recap-engine quantize) carries its resolved config and packed weights.
  if (is_quantized_cache(weights_dir)) return open_quantized_cache(weights_dir);
  Resolved r = resolve(weights_dir, opts);
  Checkpoint c;
  c.config = std::move(r.cfg);
  c.text_store = r.text_store;
  c.vision_store = r.vision_store;
  return c;
}

Checkpoint open_checkpoint(const std::string& weights_dir, const LoadOptions& opts) {
  if (is_quantized_cache(weights_dir)) return open_quantized_cache(weights_dir);  // validated on open
  Checkpoint c = open_checkpoint_unchecked(weights_dir, opts);
  validate_checkpoint(c);
  return c;
}

std::vector<std::string> checkpoint_problems(const Checkpoint& ckpt) {
  std::vector<std::string> problems;
  for (const ExpectedTensor& e : expected_tensors(ckpt.config)) {
    const io::WeightStore* store =
        e.component == Component::Vision ? ckpt.vision_store.get() : ckpt.text_store.get();
    if (!store) {
      problems.push_back(std::string("no weight store for the ") + component_name(e.component) + " tensor '" +
                         e.name + "'");
      continue;
    }
    const io::TensorInfo* t = store->find(e.name);
    if (!t) {
      problems.push_back(store->root() + ": missing tensor '" + e.name + "' (" + component_name(e.component) +
                         ", expected shape " + shape_str(e.shape) + ")");
      continue;
    }
    if (!io::is_float_weight_dtype(t->dtype))
      problems.push_back(t->file + ": tensor '" + e.name + "' has dtype " + io::dtype_name(t->dtype) +
                         "; expected F32, F16 or BF16");
    if (t->shape != e.shape)
      problems.push_back(t->file + ": tensor '" + e.name + "' has shape " + shape_str(t->shape) +
                         ", expected " + shape_str(e.shape));
  }
  return problems;
}

void validate_checkpoint(const Checkpoint& ckpt) {
  std::vector<std::string> problems = checkpoint_problems(ckpt);
  if (problems.empty()) return;
  std::string msg = ckpt.config.weights_dir + ": " + std::to_string(problems.size()) +
                    (problems.size() == 1 ? " problem" : " problems") + " in the checkpoint:";
  for (const std::string& p : problems) msg += "\n  " + p;
  throw ConfigError(msg);
}

json text_config_json(const TextConfig& t) {
  return {{"hidden", t.hidden},
          {"intermediate", t.intermediate},
          {"layers", t.layers},
          {"heads", t.heads},
          {"kv_heads", t.kv_heads},
          {"head_dim", t.head_dim},
          {"vocab", t.vocab},
          {"rms_eps", t.rms_eps},
          {"rope_theta", t.rope_theta},
          {"max_position", t.max_position},
          {"tie_embeddings", t.tie_embeddings}};
}

}  // namespace recap::models
