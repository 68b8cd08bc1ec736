#include "engine/fingerprint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include "io/fileutil.h"
#include "models/quantized_cache.h"

namespace recap::engine {

using nlohmann::ordered_json;

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};
}  // namespace

std::string file_xxh3(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  std::unique_ptr<XXH3_state_t, StateDeleter> st(XXH3_createState());
  XXH3_64bits_reset(st.get());
  // Sequential 4 MiB reads: the kernel's readahead keeps a 16 GB checkpoint streaming, and
  // nothing beyond the buffer is held.
  std::vector<char> buf(4 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    XXH3_64bits_update(st.get(), buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return hex64(XXH3_64bits_digest(st.get()));
}

ordered_json directory_identity(const std::string& dir) {
  ordered_json j = ordered_json::object();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return j;  // the checkpoint was opened before: a vanished dir fails later, loudly
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (ends_with(n, ".safetensors") || ends_with(n, ".json")) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  const std::string cache_header = models::quantized_cache_header_hash(dir);
  for (auto& n : names) {
    std::string p = io::join_path(dir, n);
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (n == models::kQuantizedCacheFile && !cache_header.empty())
      j[n] = {{"size", static_cast<int64_t>(st.st_size)}, {"header_xxh3", cache_header}};
    else
      j[n] = {{"size", static_cast<int64_t>(st.st_size)}, {"xxh3", file_xxh3(p)}};
  }
  return j;
}

std::string file_hash(const std::string& path) {
  try {
    return file_xxh3(path);
  } catch (...) {
    return "";
  }
}

std::string fingerprint_of(const ordered_json& material) {
  const std::string s = material.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return hex64(XXH3_64bits(s.data(), s.size()));
}

namespace {
// Leaf fields in document order: (dotted name, compact JSON value).
using Fields = std::vector<std::pair<std::string, std::string>>;
void flatten(const ordered_json& j, const std::string& prefix, Fields* out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
    return;
  }
  out->emplace_back(prefix.empty() ? "(material)" : prefix,
                    j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string shorten(const std::string& v) {
  return v.size() <= 80 ? v : v.substr(0, 60) + "...(" + std::to_string(v.size()) + " chars)";
}
}  // namespace

std::string describe_material_change(const ordered_json& was, const ordered_json& now, size_t max_fields) {
  Fields fa, fb;
  flatten(was, "", &fa);
  flatten(now, "", &fb);
  const std::map<std::string, std::string> a(fa.begin(), fa.end()), b(fb.begin(), fb.end());
  std::vector<std::string> phrases;
  // In the order of the new material's fields, then fields only the old one had.
  std::vector<std::string> keys;
  for (auto& [k, v] : fb) keys.push_back(k);
  for (auto& [k, v] : fa)
    if (!b.count(k)) keys.push_back(k);
  for (auto& k : keys) {
    auto ia = a.find(k);
    auto ib = b.find(k);
    if (ia != a.end() && ib != b.end() && ia->second == ib->second) continue;
    std::string p = k + " was " + (ia == a.end() ? std::string("absent") : shorten(ia->second)) + ", now " +
                    (ib == b.end() ? std::string("absent") : shorten(ib->second));
    phrases.push_back(p);
  }
  std::string s;
  for (size_t i = 0; i < phrases.size() && i < max_fields; ++i) s += (i ? "; " : "") + phrases[i];
  if (phrases.size() > max_fields)
    s += "; and " + std::to_string(phrases.size() - max_fields) + " more field(s)";
  return s;
}

}  // namespace recap::engine
