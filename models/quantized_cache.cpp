#include "models/quantized_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "models/llava.h"

namespace recap::models {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using kernels::PackedWeight;
using kernels::WeightFormat;

namespace {

std::string join_key(const std::vector<std::string>& names) {
  std::string key;
  for (size_t i = 0; i < names.size(); ++i) key += (i ? "+" : "") + names[i];
  return key;
}

// ----------------------------------------------------------------- ModelConfig JSON

json vision_json(const VisionConfig& v) {
  return {{"hidden", v.hidden},
          {"intermediate", v.intermediate},
          {"layers", v.layers},
          {"heads", v.heads},
          {"image_size", v.image_size},
          {"patch_size", v.patch_size},
          {"channels", v.channels},
          {"ln_eps", v.ln_eps},
          {"hidden_act", v.hidden_act},
          {"select_layer", v.select_layer},
          {"select_feature", v.select_feature},
          {"image_mean", v.image_mean},
          {"image_std", v.image_std},
          {"pad_background", v.pad_background},
          {"resize_shortest_edge", v.resize_shortest_edge},
          {"crop_size", v.crop_size}};
}

template <class T>
void get(const json& j, const char* key, T& out) {
  if (!j.contains(key)) throw std::runtime_error(std::string("missing key '") + key + "'");
  j.at(key).get_to(out);
}

}  // namespace

std::string model_config_to_json(const ModelConfig& c) {
  json j;
  j["layout"] = static_cast<int>(c.layout);
  j["family"] = family_spec(c.family).name;
  j["has_vision"] = c.has_vision;
  j["has_text"] = c.has_text;
  j["vision"] = vision_json(c.vision);
  j["text"] = text_config_json(c.text);
  j["projector"] = {{"type", c.projector.type},
                    {"in", c.projector.in},
                    {"hidden", c.projector.hidden},
                    {"out", c.projector.out}};
  j["generation"] = {{"bos_token_id", c.generation.bos_token_id},
                     {"eos_token_ids", c.generation.eos_token_ids}};
  j["names"] = {{"vision_prefix", c.names.vision_prefix},
                {"text_prefix", c.names.text_prefix},
                {"lm_head", c.names.lm_head},
                {"proj1_prefix", c.names.proj1_prefix},
                {"proj2_prefix", c.names.proj2_prefix}};
  j["image_token_index"] = c.image_token_index;
  j["text_dtype"] = c.text_dtype;
  j["architecture"] = c.architecture;
  j["vision_tower_source"] = c.vision_tower_source;
  j["vision_config_source"] = c.vision_config_source;
  j["preprocessor_source"] = c.preprocessor_source;
  j["source_weights_dir"] = c.weights_dir;
  return j.dump();
}

ModelConfig model_config_from_json(const std::string& text, const std::string& source) {
  ModelConfig c;
  try {
    const json j = json::parse(text);
    int layout = 0;
    get(j, "layout", layout);
    if (layout < 0 || layout > static_cast<int>(Layout::ClipFull)) throw std::runtime_error("bad layout");
    c.layout = static_cast<Layout>(layout);
    // Caches written before the family was stored are of their layout's family.
    set_model_family(c, j.contains("family") ? parse_model_family(j.at("family").get<std::string>())
                                             : family_for_layout(c.layout));
    get(j, "has_vision", c.has_vision);
    get(j, "has_text", c.has_text);
    const json& v = j.at("vision");
    VisionConfig& vc = c.vision;
    get(v, "hidden", vc.hidden);
    get(v, "intermediate", vc.intermediate);
    get(v, "layers", vc.layers);
    get(v, "heads", vc.heads);
    get(v, "image_size", vc.image_size);
    get(v, "patch_size", vc.patch_size);
    get(v, "channels", vc.channels);
    get(v, "ln_eps", vc.ln_eps);
    get(v, "hidden_act", vc.hidden_act);
    get(v, "select_layer", vc.select_layer);
    get(v, "select_feature", vc.select_feature);
    get(v, "image_mean", vc.image_mean);
    get(v, "image_std", vc.image_std);
    get(v, "pad_background", vc.pad_background);
    get(v, "resize_shortest_edge", vc.resize_shortest_edge);
    get(v, "crop_size", vc.crop_size);
    const json& t = j.at("text");
    TextConfig& tc = c.text;
    get(t, "hidden", tc.hidden);
    get(t, "intermediate", tc.intermediate);
    get(t, "layers", tc.layers);
    get(t, "heads", tc.heads);
    get(t, "kv_heads", tc.kv_heads);
    get(t, "head_dim", tc.head_dim);
    get(t, "vocab", tc.vocab);
    get(t, "rms_eps", tc.rms_eps);
    get(t, "rope_theta", tc.rope_theta);
    get(t, "max_position", tc.max_position);
    get(t, "tie_embeddings", tc.tie_embeddings);
    const json& p = j.at("projector");
    get(p, "type", c.projector.type);
    get(p, "in", c.projector.in);
    get(p, "hidden", c.projector.hidden);
    get(p, "out", c.projector.out);
    get(j.at("generation"), "bos_token_id", c.generation.bos_token_id);
    get(j.at("generation"), "eos_token_ids", c.generation.eos_token_ids);
    const json& n = j.at("names");
    get(n, "vision_prefix", c.names.vision_prefix);
    get(n, "text_prefix", c.names.text_prefix);
    get(n, "lm_head", c.names.lm_head);
    get(n, "proj1_prefix", c.names.proj1_prefix);
    get(n, "proj2_prefix", c.names.proj2_prefix);
    get(j, "image_token_index", c.image_token_index);
    get(j, "text_dtype", c.text_dtype);
    get(j, "architecture", c.architecture);
    get(j, "vision_tower_source", c.vision_tower_source);
    get(j, "vision_config_source", c.vision_config_source);
    get(j, "preprocessor_source", c.preprocessor_source);
  } catch (const std::exception& e) {
    throw ConfigError(source + ": metadata recap.config is malformed: " + e.what());
  }
  return c;
}

// ----------------------------------------------------------------- reading

bool is_quantized_cache(const std::string& dir) {
  std::error_code ec;
  return !dir.empty() && fs::is_regular_file(fs::path(dir) / kQuantizedCacheFile, ec);
}

std::string quantized_cache_header_hash(const std::string& dir) {
  if (dir.empty()) return "";
  const std::string path = (fs::path(dir) / kQuantizedCacheFile).string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string header;
  uint8_t len8[8];
  if (::pread(fd, len8, 8, 0) == 8) {
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(len8[i]) << (8 * i);
    if (len > 0 && len < (uint64_t{1} << 30)) {
      header.assign(8 + len, '\0');
      std::memcpy(header.data(), len8, 8);
      if (::pread(fd, header.data() + 8, len, 8) != static_cast<ssize_t>(len)) header.clear();
    }
  }
  ::close(fd);
  if (header.empty()) return "";
  try {
    auto h = json::parse(header.substr(8));
    const auto& md = h.at("__metadata__");
    if (!md.contains(kQuantizedCacheContentHashKey)) return "";
    const std::string v = md.at(kQuantizedCacheContentHashKey).get<std::string>();
    if (v.size() != 16 || v == std::string(16, '0')) return "";  // never finished writing it
  } catch (...) {
    return "";
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(header.data(), header.size())));
  return buf;
}

std::string quantized_cache_precision(const Checkpoint& ckpt) {
  if (!ckpt.text_store || !is_quantized_cache_store(*ckpt.text_store)) return "";
  auto it = ckpt.text_store->metadata().find("recap.precision");
  return it == ckpt.text_store->metadata().end() ? "" : it->second;
}

bool is_quantized_cache_store(const io::WeightStore& store) {
  if (store.files().empty()) return false;
  auto it = store.metadata().find("recap.format");
  return it != store.metadata().end() && it->second == kQuantizedCacheMarker;
}

Checkpoint open_quantized_cache(const std::string& dir) {
  const std::string path = (fs::path(dir) / kQuantizedCacheFile).string();
  auto store = std::make_shared<io::WeightStore>(io::WeightStore::open(path));
  const auto& md = store->metadata();
  auto field = [&](const char* key) -> const std::string& {
    auto it = md.find(key);
    if (it == md.end())
      throw ConfigError(path + ": not a recap quantized cache (metadata lacks " + key + ")");
    return it->second;
  };
  if (field("recap.format") != kQuantizedCacheMarker)
    throw ConfigError(path + ": unsupported cache format '" + field("recap.format") + "' (expected " +
                      kQuantizedCacheMarker + ")");
  Checkpoint ck;
  ck.config = model_config_from_json(field("recap.config"), path);
  ck.config.weights_dir = dir;
  ck.config.vision_weights_dir = dir;
  ck.config.vision_tower_source = "quantized cache " + path;
  // Validates the matrix table against the tensors (sizes, presence) once, here.
  QuantizedCacheWeightSource check(store);
  (void)check;
  ck.text_store = store;
  ck.vision_store = store;
  return ck;
}

QuantizedCacheWeightSource::QuantizedCacheWeightSource(std::shared_ptr<const io::WeightStore> store)
    : store_(std::move(store)) {
  const std::string file = store_->files().empty() ? store_->root() : store_->files()[0]->path();
  const auto& md = store_->metadata();
  auto it = md.find("recap.precision");
  auto mt = md.find("recap.matrices");
  if (!is_quantized_cache_store(*store_) || it == md.end() || mt == md.end())
    throw ConfigError(file + ": not a recap quantized cache (metadata recap.format/precision/matrices)");
  try {
    precision_ = kernels::parse_weight_format(it->second);
  } catch (const std::exception&) {
    throw ConfigError(file + ": metadata recap.precision '" + it->second + "' is not f32|bf16|int8|int4");
  }
  json m;
  try {
    m = json::parse(mt->second);
  } catch (const std::exception& e) {
    throw ConfigError(file + ": metadata recap.matrices is not JSON: " + e.what());
  }
  if (!m.is_object()) throw ConfigError(file + ": metadata recap.matrices is not an object");
  for (auto e = m.begin(); e != m.end(); ++e) {
    Entry en{};
    try {
      en.format = kernels::parse_weight_format(e.value().at("format").get<std::string>());
      en.n = e.value().at("n").get<int64_t>();
      en.k = e.value().at("k").get<int64_t>();
    } catch (const std::exception& ex) {
      throw ConfigError(file + ": recap.matrices entry '" + e.key() + "' is malformed: " + ex.what());
    }
    if (en.n <= 0 || en.k <= 0)
      throw ConfigError(file + ": recap.matrices entry '" + e.key() + "' has n/k <= 0");
    const io::TensorInfo* t = store_->find(e.key());
    if (!t)
      throw ConfigError(file + ": packed matrix '" + e.key() + "' is listed in recap.matrices but missing");
    const size_t need = PackedWeight::packed_bytes(en.format, en.n, en.k);
    if (t->dtype != io::DType::U8 || t->nbytes != need)
      throw ConfigError(file + ": packed matrix '" + e.key() + "' holds " + std::to_string(t->nbytes) +
                        " bytes of " + io::dtype_name(t->dtype) + ", expected " + std::to_string(need) +
                        " bytes of U8 for " + kernels::weight_format_name(en.format) + " [" +
                        std::to_string(en.n) + "," + std::to_string(en.k) + "]");
    if (reinterpret_cast<uintptr_t>(t->data) % 64 != 0)
      throw ConfigError(file + ": packed matrix '" + e.key() + "' is not 64-byte aligned in the file");
    entries_.emplace_back(e.key(), en);
  }
  std::sort(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

PackedWeight QuantizedCacheWeightSource::matrix(const std::vector<std::string>& names,
                                                const std::vector<int64_t>& rows, int64_t k,
                                                WeightFormat format, bool /*flatten_trailing*/) {
  const std::string key = join_key(names);
  const std::string file = store_->files()[0]->path();
  auto it = std::lower_bound(entries_.begin(), entries_.end(), key,
                             [](const auto& e, const std::string& k2) { return e.first < k2; });
  if (it == entries_.end() || it->first != key)
    throw ConfigError(file + ": packed matrix '" + key + "' is not in the cache");
  const Entry& e = it->second;
  int64_t n = 0;
  for (int64_t r : rows) n += r;
  if (e.format != format)
    throw ConfigError(file + ": the cache holds " + kernels::weight_format_name(e.format) + " weights but " +
                      kernels::weight_format_name(format) + " was requested; run with --precision " +
                      kernels::weight_format_name(e.format));
  if (e.n != n || e.k != k)
    throw ConfigError(file + ": packed matrix '" + key + "' is [" + std::to_string(e.n) + "," +
                      std::to_string(e.k) + "], expected [" + std::to_string(n) + "," + std::to_string(k) +
                      "]");
  const io::TensorInfo& t = store_->get(key);
  return PackedWeight::view(e.format, e.n, e.k, t.data, t.nbytes);
}

std::vector<float> QuantizedCacheWeightSource::vector(const std::string& name,
                                                      const std::vector<int64_t>& shape) {
  const io::TensorInfo& t = store_->get(name);
  expect_shape(t, shape);
  return io::read_f32(t);
}

// ----------------------------------------------------------------- writing

namespace {

// Read-only anonymous zero pages: stand-in bytes for matrices during the planning pass
// (never touched, so they cost address space only).
struct ZeroMapping {
  void* p = nullptr;
  size_t size = 0;
  ~ZeroMapping() {
    if (p) munmap(p, size);
  }
};

struct MatrixPlan {
  std::string key;
  std::vector<std::string> names;
  std::vector<int64_t> rows;
  int64_t k = 0;
  WeightFormat format = WeightFormat::F32;
  bool flatten = false;
  WeightSource* source = nullptr;
  size_t bytes = 0;
  uint64_t offset = 0;
};
struct VectorPlan {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  uint64_t offset = 0;
};

// Records what LlavaModel::load_from asks for; hands out zero views for matrices and the real
// (small) vectors.
class PlanningSource : public WeightSource {
 public:
  PlanningSource(WeightSource* inner, std::vector<MatrixPlan>* mats, std::vector<VectorPlan>* vecs,
                 std::vector<std::unique_ptr<ZeroMapping>>* zeros)
      : inner_(inner), mats_(mats), vecs_(vecs), zeros_(zeros) {}
  PackedWeight matrix(const std::vector<std::string>& names, const std::vector<int64_t>& rows, int64_t k,
                      WeightFormat format, bool flatten) override {
    MatrixPlan p;
    p.key = join_key(names);
    p.names = names;
    p.rows = rows;
    p.k = k;
    p.format = format;
    p.flatten = flatten;
    p.source = inner_;
    int64_t n = 0;
    for (int64_t r : rows) n += r;
    p.bytes = PackedWeight::packed_bytes(format, n, k);
    bool seen = false;
    for (const MatrixPlan& q : *mats_)
      if (q.key == p.key) {
        if (q.format != p.format || q.bytes != p.bytes || q.k != p.k)
          throw std::runtime_error("quantize: matrix '" + p.key +
                                   "' is requested twice with different formats");
        seen = true;
      }
    if (!seen) mats_->push_back(p);
    auto z = std::make_unique<ZeroMapping>();
    z->size = std::max<size_t>(p.bytes, 1);
    z->p = mmap(nullptr, z->size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (z->p == MAP_FAILED) {
      z->p = nullptr;
      throw std::runtime_error("quantize: mmap of " + std::to_string(z->size) + " bytes failed");
    }
    PackedWeight w = PackedWeight::view(format, n, k, z->p, p.bytes);
    zeros_->push_back(std::move(z));
    return w;
  }
  std::vector<float> vector(const std::string& name, const std::vector<int64_t>& shape) override {
    std::vector<float> v = inner_->vector(name, shape);
    bool seen = false;
    for (const VectorPlan& q : *vecs_) seen = seen || q.name == name;
    if (!seen) vecs_->push_back(VectorPlan{name, shape, v, 0});
    return v;
  }
  using WeightSource::matrix;

 private:
  WeightSource* inner_;
  std::vector<MatrixPlan>* mats_;
  std::vector<VectorPlan>* vecs_;
  std::vector<std::unique_ptr<ZeroMapping>>* zeros_;
};

void pwrite_all(int fd, const void* data, size_t n, uint64_t off, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

constexpr uint64_t kAlign = 64;
uint64_t align_up(uint64_t v) {
  return (v + kAlign - 1) / kAlign * kAlign;
}

}  // namespace

QuantizeStats write_quantized_cache(
    const ModelConfig& config, WeightSource* vision, WeightSource* text, WeightFormat precision,
    const std::string& out_dir, const std::string& copy_from_dir,
    const std::function<void(int64_t, int64_t, const std::string&)>& progress) {
  // Pass 1: plan (which matrices, fused how, in which format; the f32 vectors).
  std::vector<MatrixPlan> mats;
  std::vector<VectorPlan> vecs;
  {
    std::vector<std::unique_ptr<ZeroMapping>> zeros;
    std::unique_ptr<PlanningSource> pv, pt;
    if (vision) pv = std::make_unique<PlanningSource>(vision, &mats, &vecs, &zeros);
    if (text) pt = std::make_unique<PlanningSource>(text, &mats, &vecs, &zeros);
    ModelOptions mo;
    mo.precision = precision;
    mo.load_vision = vision != nullptr;
    mo.load_text = text != nullptr;
    auto plan_model = LlavaModel::load_from(config, pv.get(), pt.get(), mo);
    plan_model.reset();  // drops the views before the zero mappings go
  }

  // Layout: matrices then vectors, every tensor at a 64-byte aligned offset.
  json header;
  json matrices = json::object();
  uint64_t off = 0;
  QuantizeStats st;
  for (MatrixPlan& m : mats) {
    m.offset = off;
    int64_t n = 0;
    for (int64_t r : m.rows) n += r;
    header[m.key] = {{"dtype", "U8"}, {"shape", {m.bytes}}, {"data_offsets", {off, off + m.bytes}}};
    matrices[m.key] = {{"format", kernels::weight_format_name(m.format)}, {"n", n}, {"k", m.k}};
    off = align_up(off + m.bytes);
    st.largest_matrix_bytes = std::max<uint64_t>(st.largest_matrix_bytes, m.bytes);
  }
  for (VectorPlan& v : vecs) {
    v.offset = off;
    const uint64_t b = v.data.size() * sizeof(float);
    header[v.name] = {{"dtype", "F32"}, {"shape", v.shape}, {"data_offsets", {off, off + b}}};
    off = align_up(off + b);
  }
  header["__metadata__"] = {{"recap.format", kQuantizedCacheMarker},
                            {"recap.precision", kernels::weight_format_name(precision)},
                            {"recap.config", model_config_to_json(config)},
                            {"recap.matrices", matrices.dump()},
                            // A placeholder of the final width: the hash of the data is known only
                            // after it is written, and then overwrites these digits in place.
                            {kQuantizedCacheContentHashKey, std::string(16, '0')}};
  std::string h = header.dump();
  const std::string placeholder =
      std::string("\"") + kQuantizedCacheContentHashKey + "\":\"" + std::string(16, '0') + "\"";
  const size_t placeholder_at = h.find(placeholder);
  if (placeholder_at == std::string::npos)
    throw std::logic_error("quantize: content hash placeholder not found");
  while ((8 + h.size()) % kAlign != 0) h.push_back(' ');
  const uint64_t data_start = 8 + h.size();

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw std::runtime_error(out_dir + ": cannot create directory: " + ec.message());
  const std::string final_path = (fs::path(out_dir) / kQuantizedCacheFile).string();
  const std::string tmp_path = final_path + ".tmp." + std::to_string(getpid());
  // Read-write: the data is read back for its content hash.
  int fd = ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(tmp_path + ": cannot create: " + std::strerror(errno));
  try {
    uint64_t hl = h.size();
    uint8_t len8[8];
    for (int i = 0; i < 8; ++i) len8[i] = static_cast<uint8_t>(hl >> (8 * i));
    pwrite_all(fd, len8, 8, 0, tmp_path);
    pwrite_all(fd, h.data(), h.size(), 8, tmp_path);
    // Pass 2: pack one matrix, write it, drop it.
    for (size_t i = 0; i < mats.size(); ++i) {
      const MatrixPlan& m = mats[i];
      if (progress) progress(static_cast<int64_t>(i), static_cast<int64_t>(mats.size()), m.key);
      PackedWeight w = m.source->matrix(m.names, m.rows, m.k, m.format, m.flatten);
      if (w.data.size() != m.bytes)
        throw std::runtime_error("quantize: matrix '" + m.key + "' packed to " +
                                 std::to_string(w.data.size()) + " bytes, planned " +
                                 std::to_string(m.bytes));
      pwrite_all(fd, w.data.data(), m.bytes, data_start + m.offset, tmp_path);
      st.matrices++;
    }
    for (const VectorPlan& v : vecs) {
      pwrite_all(fd, v.data.data(), v.data.size() * sizeof(float), data_start + v.offset, tmp_path);
      st.vectors++;
    }
    if (ftruncate(fd, static_cast<off_t>(data_start + off)) != 0)
      throw std::runtime_error(tmp_path + ": truncate failed: " + std::strerror(errno));
    // The content hash: every byte after the header, read back from the file as written.
    {
      XXH3_state_t* xs = XXH3_createState();
      XXH3_64bits_reset(xs);
      std::vector<char> buf(4 << 20);
      for (uint64_t pos = data_start, end = data_start + off; pos < end;) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
        const ssize_t got = ::pread(fd, buf.data(), want, static_cast<off_t>(pos));
        if (got <= 0) {
          XXH3_freeState(xs);
          throw std::runtime_error(tmp_path + ": read back failed: " + std::strerror(errno));
        }
        XXH3_64bits_update(xs, buf.data(), static_cast<size_t>(got));
        pos += static_cast<uint64_t>(got);
      }
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits_digest(xs)));
      XXH3_freeState(xs);
      const size_t digits_at = placeholder_at + placeholder.size() - 17;
      h.replace(digits_at, 16, hex);
      pwrite_all(fd, h.data(), h.size(), 8, tmp_path);
    }
    if (fsync(fd) != 0) throw std::runtime_error(tmp_path + ": fsync failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp_path.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp_path.c_str());
    throw std::runtime_error(final_path + ": rename failed: " + err);
  }
  st.file_bytes = data_start + off;

  if (!copy_from_dir.empty()) {
    for (const char* f : {"config.json", "generation_config.json", "preprocessor_config.json",
                          "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      const fs::path src = fs::path(copy_from_dir) / f;
      if (!fs::is_regular_file(src, ec)) continue;
      fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing, ec);
      if (ec) throw std::runtime_error(src.string() + ": copy failed: " + ec.message());
    }
  }
  return st;
}

}  // namespace recap::models
