#include "engine/sources.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "io/fileutil.h"
#include "io/keys.h"

namespace recap::engine {

using nlohmann::ordered_json;

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::vector<std::string> expand_all(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (auto& p : patterns) {
    try {
      auto v = io::expand_pattern(p);
      out.insert(out.end(), v.begin(), v.end());
    } catch (const io::ListError& e) {
      throw InputError(e.what());
    }
  }
  return out;
}

std::string shard_name(int64_t id) {
  std::string s = std::to_string(id);
  if (s.size() < 5) s.insert(0, 5 - s.size(), '0');
  return s;
}
}  // namespace

// ---------------------------------------------------------------- counting list records

int64_t count_list_records(const std::string& path, const io::ListColumns& columns) {
  // The parser's own tokenizer, passing over records without parsing or keeping them: the
  // count is the parser's by construction (quoted CSV records, JSON arrays, malformed files).
  try {
    io::ListReader reader(path, columns);
    while (reader.skip()) {
    }
    return reader.position();
  } catch (const io::ListError& e) {
    throw InputError(e.what());
  }
}

std::vector<ShardSpec> plan_shards(const InputOptions& opts, std::vector<std::string>* warnings) {
  if (opts.samples_per_shard < 1) throw InputError("--samples-per-shard must be at least 1");
  std::vector<ShardSpec> shards;
  int64_t shard_id = 0;
  for (auto& path : expand_all(opts.lists)) {
    // Only counted here: the rows are parsed by the worker that opens one of the shards.
    const int64_t n = count_list_records(path, opts.columns);
    if (n == 0 && warnings) warnings->push_back(path + ": no samples");
    for (int64_t first = 0; first < n; first += opts.samples_per_shard) {
      ShardSpec s;
      s.name = shard_name(shard_id);
      s.shard_id = shard_id++;
      s.path = path;
      s.first_record = first;
      s.n_records = std::min(opts.samples_per_shard, n - first);
      shards.push_back(s);
    }
  }
  std::set<std::string> names;
  for (auto& path : expand_all(opts.tars)) {
    if (!io::file_exists(path)) throw InputError(path + ": no such input tar");
    std::string base = io::base_name(path);
    if (ends_with(base, ".tar")) base.resize(base.size() - 4);
    if (!names.insert(base).second)
      throw InputError("two input tars share the name '" + base + "' (output shards are named after them)");
    ShardSpec s;
    s.name = base;
    s.is_tar = true;
    s.path = path;
    s.shard_id = shard_id++;
    s.n_records = -1;
    shards.push_back(s);
  }
  if (opts.lists.empty() && opts.tars.empty())
    throw InputError("no input: pass --list FILE or --input PATTERN");
  return shards;
}

namespace {

// The records [first_record, first_record + n_records) of a list, read when the shard is
// opened: the reader stops after the range and keeps only its rows, so memory is one shard's
// rows whatever the list's size. Consecutive shards usually come from the same list: the reader
// left after one shard is kept and, when the next shard of that list starts at or after it,
// continues from there instead of reading the file again from the start.
class ListStream : public SampleStream {
 public:
  ListStream(const ShardSpec& spec, const InputOptions& opts) : spec_(spec), opts_(opts) {
    std::unique_ptr<io::ListReader> reader = take_cached_reader(spec, opts.columns);
    FileId id;
    const bool have_id = file_id(spec.path, &id);
    try {
      if (!reader) reader = std::make_unique<io::ListReader>(spec.path, opts.columns);
      dir_ = reader->dir();
      while (reader->position() < spec.first_record)
        if (!reader->skip())
          throw InputError(spec.path + ": the list changed since it was read (fewer records)");
      records_.reserve(static_cast<size_t>(std::min<int64_t>(spec.n_records, 1 << 16)));
      io::ListRecord r;
      while (static_cast<int64_t>(records_.size()) < spec.n_records) {
        if (!reader->next(&r))
          throw InputError(spec.path + ": the list changed since it was read (fewer records)");
        records_.push_back(std::move(r));
      }
    } catch (const io::ListError& e) {
      throw InputError(e.what());
    }
    if (have_id) put_cached_reader(std::move(reader), id);
  }

  bool next(SampleInput* out) override {
    if (pos_ >= spec_.n_records) return false;
    auto& r = records_[static_cast<size_t>(pos_)];
    SampleInput s;
    s.index = pos_;
    s.url = std::move(r.url);
    s.caption = std::move(r.caption);
    s.extra = std::move(r.extra);
    s.base_dir = dir_;
    s.parse_error = std::move(r.error);
    s.source = spec_.path + ":" + std::to_string(r.line);
    if (!r.key_given) {
      s.key = io::compute_key(pos_, spec_.shard_id, opts_.samples_per_shard);
    } else if (std::string problem = io::key_problem(r.key); !problem.empty()) {
      // A key names tar members and files: a bad one fails its sample (never written), shown
      // in printable form so that control bytes reach neither the sidecar nor a terminal.
      s.key = io::printable_key(r.key);
      if (s.parse_error.empty())
        s.parse_error = spec_.path + ":" + std::to_string(r.line) + ": key '" + s.key +
                        "' cannot name a sample: " + problem;
    } else {
      s.key = std::move(r.key);
    }
    // Two samples with one key would be two tar members with one name: the first record of the
    // shard to carry a key keeps it, a later one fails.
    if (s.parse_error.empty()) {
      auto [it, fresh] = key_lines_.emplace(s.key, r.line);
      if (!fresh)
        s.parse_error = spec_.path + ":" + std::to_string(r.line) + ": key '" + s.key +
                        "' repeats the key of line " + std::to_string(it->second) + " in this shard";
    }
    r = io::ListRecord{};  // the row is not needed again
    *out = std::move(s);
    ++pos_;
    return true;
  }

 private:
  // The file a reader was opened on, to tell whether the path still names it (a list rewritten
  // between two runs in one process must be read afresh).
  struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileId&) const = default;
  };
  static bool file_id(const std::string& path, FileId* id) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return false;
    *id = FileId{st.st_dev, st.st_ino, st.st_size,
                 static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
    return true;
  }
  struct Cache {
    std::mutex mu;
    std::unique_ptr<io::ListReader> reader;
    FileId id;
  };
  static Cache& cache() {
    static Cache c;
    return c;
  }
  static bool same_columns(const io::ListColumns& a, const io::ListColumns& b) {
    return a.url == b.url && a.caption == b.caption && a.key == b.key && a.strict == b.strict;
  }
  static std::unique_ptr<io::ListReader> take_cached_reader(const ShardSpec& spec,
                                                            const io::ListColumns& cols) {
    std::lock_guard<std::mutex> lk(cache().mu);
    auto& c = cache();
    FileId now;
    if (c.reader && c.reader->path() == spec.path && same_columns(c.reader->columns(), cols) &&
        c.reader->position() <= spec.first_record && file_id(spec.path, &now) && now == c.id)
      return std::move(c.reader);
    return nullptr;
  }
  // `id` is taken before the reader opens the file: if the file is replaced in between, `id` is
  // the old file's, the next take fails and the next shard reads afresh (never mixed data).
  static void put_cached_reader(std::unique_ptr<io::ListReader> reader, const FileId& id) {
    std::lock_guard<std::mutex> lk(cache().mu);
    cache().reader = std::move(reader);
    cache().id = id;
  }

  ShardSpec spec_;
  InputOptions opts_;
  std::string dir_;
  std::vector<io::ListRecord> records_;
  std::unordered_map<std::string, int64_t> key_lines_;  // key -> line of its first record
  int64_t pos_ = 0;
};

// Groups consecutive members with the same webdataset key.
class TarStream : public SampleStream {
 public:
  explicit TarStream(const ShardSpec& spec) : spec_(spec) {
    try {
      reader_ = std::make_unique<io::TarReader>(spec.path);
    } catch (const io::TarError& e) {
      throw InputError(e.what());
    }
  }
  bool next(SampleInput* out) override {
    std::map<std::string, std::string> members;  // ext -> bytes
    std::string key;
    for (;;) {
      if (!have_pending_) {
        try {
          if (!reader_->next(&pending_)) {
            eof_ = true;
          } else {
            have_pending_ = true;
          }
        } catch (const io::TarError& e) {
          throw InputError(e.what());
        }
      }
      if (eof_ && !have_pending_) break;
      std::string k, ext;
      io::split_wds_name(pending_.name, &k, &ext);
      if (key.empty()) key = k;
      if (k != key) break;  // next sample begins
      members[ext] = std::move(pending_.data);
      have_pending_ = false;
    }
    if (key.empty()) return false;
    SampleInput s;
    s.index = index_++;
    s.key = key;
    s.source = spec_.path;
    s.base_dir = io::dir_name(spec_.path);
    for (const char* e : {"jpg", "jpeg", "png", "webp"}) {
      auto it = members.find(e);
      if (it != members.end()) {
        s.has_inline_image = true;
        s.image_bytes = std::move(it->second);
        s.image_ext = e;
        break;
      }
    }
    if (auto it = members.find("txt"); it != members.end()) s.caption = it->second;
    if (auto it = members.find("json"); it != members.end()) {
      try {
        auto j = ordered_json::parse(it->second);
        if (j.is_object()) {
          if (j.contains("url") && j["url"].is_string()) s.url = j["url"].get<std::string>();
          if (s.caption.empty() && j.contains("caption") && j["caption"].is_string())
            s.caption = j["caption"].get<std::string>();
          // Pass through what the downloader recorded, except what we recompute.
          static const std::set<std::string> ours{"url",           "caption",    "key",    "status",
                                                  "error_message", "width",      "height", "re_caption",
                                                  "re_captions",   "fingerprint"};
          for (auto it2 = j.begin(); it2 != j.end(); ++it2)
            if (!ours.count(it2.key())) s.extra[it2.key()] = it2.value();
        }
      } catch (const std::exception&) {
        s.parse_error = spec_.path + ": " + key + ".json is not valid JSON";
      }
    }
    if (!s.has_inline_image && s.parse_error.empty()) {
      std::string exts;
      for (auto& [e, b] : members) exts += (exts.empty() ? "" : ", ") + e;
      s.parse_error = spec_.path + ": sample " + key + " has no image member (found: " + exts + ")";
    }
    *out = std::move(s);
    return true;
  }

 private:
  ShardSpec spec_;
  std::unique_ptr<io::TarReader> reader_;
  io::TarMember pending_;
  bool have_pending_ = false, eof_ = false;
  int64_t index_ = 0;
};

}  // namespace

std::unique_ptr<SampleStream> open_shard(const ShardSpec& spec, const InputOptions& opts) {
  if (spec.is_tar) return std::make_unique<TarStream>(spec);
  return std::make_unique<ListStream>(spec, opts);
}

}  // namespace recap::engine
