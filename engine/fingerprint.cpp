#include "engine/fingerprint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "engine/sampler.h"
#include "io/fileutil.h"

namespace recap::engine {

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string head_hash(const std::string& path, size_t limit) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "";
  std::string buf(limit, '\0');
  size_t n = std::fread(buf.data(), 1, limit, f);
  std::fclose(f);
  buf.resize(n);
  return hex64(hash64(buf));
}
}  // namespace

nlohmann::ordered_json directory_identity(const std::string& dir) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return j;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (ends_with(n, ".safetensors") || ends_with(n, ".json")) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    std::string p = io::join_path(dir, n);
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) continue;
    j[n] = {{"size", static_cast<int64_t>(st.st_size)}, {"head", head_hash(p, 1 << 20)}};
  }
  return j;
}

std::string file_hash(const std::string& path) {
  try {
    return hex64(hash64(io::read_file(path)));
  } catch (...) {
    return "";
  }
}

std::string fingerprint_of(const nlohmann::ordered_json& material) {
  return hex64(hash64(material.dump()));
}

}  // namespace recap::engine
