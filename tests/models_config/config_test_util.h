// Helpers shared by the config and inspect tests: temp dirs, copies of the tiny checkpoints
// with an edited config.json or edited tensors, a sharded re-write.
#pragma once
#include <unistd.h>

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

}  // namespace recap::testutil
