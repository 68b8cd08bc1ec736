#include "engine/sources.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
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

// Shard names never collide across --list and --input: tar inputs keep their own names
// (basename without .tar/.tar.gz/.tgz), and list shards are numbered from 0 in input order,
// skipping every number whose zero-padded name a tar input already uses. Tar names are
// therefore settled first; the shards are returned lists first, then tars, in input order.
std::vector<ShardSpec> plan_shards(const InputOptions& opts, std::vector<std::string>* warnings) {
  if (opts.samples_per_shard < 1) throw InputError("--samples-per-shard must be at least 1");
  std::vector<ShardSpec> tar_shards;
  std::set<std::string> tar_names;
  std::map<std::string, std::string> tar_of_name;
  for (auto& path : expand_all(opts.tars)) {
    if (!io::file_exists(path)) throw InputError(path + ": no such input tar");
    std::string base = io::base_name(path);
    // The output shard of x.tar, x.tar.gz, x.tgz ... is x.
    for (const char* ext : {".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
                            ".tar.zst", ".tzst", ".tar.lz4", ".tar.lz", ".tar.Z", ".taz"})
      if (ends_with(base, ext) && base.size() > std::strlen(ext)) {
        base.resize(base.size() - std::strlen(ext));
        break;
      }
    if (!tar_names.insert(base).second)
      throw InputError("two input tars share the name '" + base + "' (" + tar_of_name[base] + " and " + path +
                       "; output shards are named after them)");
    tar_of_name[base] = path;
    ShardSpec s;
    s.name = base;
    s.is_tar = true;
    s.path = path;
    s.shard_id = -1;  // keys come from the tar
    s.n_records = -1;
    tar_shards.push_back(s);
  }
  std::vector<ShardSpec> shards;
  int64_t shard_id = 0;
  for (auto& path : expand_all(opts.lists)) {
    // Only counted here: the rows are parsed by the worker that opens one of the shards.
    const int64_t n = count_list_records(path, opts.columns);
    if (n == 0 && warnings) warnings->push_back(path + ": no samples");
    for (int64_t first = 0; first < n; first += opts.samples_per_shard) {
      while (tar_names.count(shard_name(shard_id))) ++shard_id;  // that name is a tar's
      ShardSpec s;
      s.name = shard_name(shard_id);
      s.shard_id = shard_id++;
      s.path = path;
      s.first_record = first;
      s.n_records = std::min(opts.samples_per_shard, n - first);
      shards.push_back(s);
    }
  }
  shards.insert(shards.end(), tar_shards.begin(), tar_shards.end());
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

// A webdataset tar, sample by sample, grouped as webdataset's group_by_keys groups it:
// consecutive regular members with the same key (io::split_wds_name) form one sample; a
// member whose suffix (compared in lower case, as webdataset does) is already in the sample
// starts a new one. Members without a suffix, directories and links are skipped with a
// warning. A sample fails (failed_to_parse) when its key is bad (io::key_problem), when the
// key was already seen in this tar, when it has no image member or its json is not a JSON
// object, or when a member name holds control bytes; it fails failed_to_download ("too_large")
// when a member is over the limit, which is skipped unread.
class TarStream : public SampleStream {
 public:
  TarStream(const ShardSpec& spec, const InputOptions& opts)
      : spec_(spec), max_member_(opts.max_member_bytes) {
    try {
      reader_ = std::make_unique<io::TarReader>(spec.path);
    } catch (const io::TarError& e) {
      throw InputError(e.what());
    }
  }

  bool next(SampleInput* out) override {
    struct Member {
      std::string suffix, lower, bytes;
    };
    std::vector<Member> members;
    std::set<std::string> suffixes;  // lower case, as webdataset compares them
    std::string key, failure, fail_status;
    uint64_t first_offset = 0;
    uint64_t total = 0;
    bool started = false;
    try {
      for (;;) {
        if (!have_pending_) {
          if (!reader_->next_entry(&pending_)) break;
          have_pending_ = true;
        }
        const io::TarEntry& e = pending_;
        if (!e.regular) {
          warn(reader_->where(e.offset) + ": " + entry_kind(e.type) + " '" + io::printable_key(e.name) +
               "' is not a file, skipped");
          have_pending_ = false;
          continue;
        }
        std::string k, suffix;
        io::split_wds_name(e.name, &k, &suffix);
        if (suffix.empty()) {
          warn(reader_->where(e.offset) + ": member '" + io::printable_key(e.name) +
               "' has no suffix (no '.' in its file name, or nothing after it), skipped");
          have_pending_ = false;
          continue;
        }
        std::string lower = suffix;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (started) {
          // The next sample begins with this member.
          if (k != key || suffixes.count(lower)) break;
        } else {
          started = true;
          key = k;
          first_offset = e.offset;
        }
        have_pending_ = false;
        suffixes.insert(lower);
        for (unsigned char c : suffix)
          if (failure.empty() && (c < 0x20 || c == 0x7f || c == '\\'))
            failure = reader_->where(e.offset) + ": member '" + io::printable_key(e.name) +
                      "': its suffix holds a control byte or '\\' (unsafe as an output name)";
        const uint64_t sample_limit = max_member_ > UINT64_MAX / 4 ? UINT64_MAX : 4 * max_member_;
        if (members.size() >= kMaxMembers) {
          // Hostile or broken: a sample of thousands of members. Its data is not kept.
          if (failure.empty())
            failure = reader_->where(first_offset) + ": sample '" + io::printable_key(key) +
                      "' has more than " + std::to_string(kMaxMembers) + " members";
          reader_->skip_data();
          continue;
        }
        if (e.size > max_member_ || e.size > sample_limit - total) {
          if (fail_status.empty()) {
            fail_status = "failed_to_download";
            failure = reader_->where(e.offset) + ": too_large: member '" + io::printable_key(e.name) +
                      "' of " + std::to_string(e.size) + " bytes exceeds " +
                      (e.size > max_member_ ? "--max-image-bytes " + std::to_string(max_member_)
                                            : "the sample limit of " + std::to_string(sample_limit) +
                                                  " bytes (4 x --max-image-bytes)") +
                      "; skipped unread";
          }
          reader_->skip_data();
          continue;
        }
        Member m{suffix, lower, {}};
        reader_->read_data(&m.bytes);
        total += e.size;
        members.push_back(std::move(m));
      }
    } catch (const io::TarError& err) {
      // The tar is corrupt or truncated here: the sample being read is not returned (it may
      // be incomplete), the samples returned before stay valid, the shard fails.
      throw InputError(err.what());
    }
    if (!started) {
      if (warned_ > kMaxWarnings)
        warnings_.push_back(spec_.path + ": " + std::to_string(warned_ - kMaxWarnings) +
                            " more skipped entries not shown");
      warned_ = 0;
      return false;
    }

    SampleInput s;
    s.index = index_++;
    s.source = spec_.path;
    s.base_dir = io::dir_name(spec_.path);
    const std::string where = reader_->where(first_offset);
    const std::string problem = io::key_problem(key);
    if (!problem.empty()) {
      // Never used for a name: the sample fails, its key is recorded in printable form.
      s.key = io::printable_key(key);
      s.parse_error = where + ": bad key '" + s.key + "': " + problem;
      *out = std::move(s);
      return true;
    }
    s.key = key;
    if (auto [it, fresh] = seen_.emplace(key, first_offset); !fresh) {
      s.parse_error = where + ": duplicate key '" + key + "' (its first sample is at offset " +
                      std::to_string(it->second) + "); this later sample is not written";
      *out = std::move(s);
      return true;
    }
    if (!failure.empty()) {
      s.parse_error = failure;
      s.input_status = fail_status;
    }
    // The image: the first of jpg, jpeg, png, webp present (any case); other image-like
    // members ("seg.jpg", a second image) are carried.
    size_t image = members.size();
    for (const char* ext : {"jpg", "jpeg", "png", "webp"}) {
      for (size_t i = 0; i < members.size() && image == members.size(); ++i)
        if (members[i].lower == ext) image = i;
      if (image != members.size()) break;
    }
    std::string json_text;
    bool has_json = false;
    for (size_t i = 0; i < members.size(); ++i) {
      Member& m = members[i];
      if (i == image) {
        s.has_inline_image = true;
        s.image_bytes = std::move(m.bytes);
        s.image_ext = m.suffix;
      } else if (m.lower == "txt") {
        s.caption = std::move(m.bytes);
        s.has_caption_member = true;
      } else if (m.lower == "json") {
        json_text = std::move(m.bytes);
        has_json = true;
      } else {
        s.carried.push_back({m.suffix, std::move(m.bytes)});
      }
    }
    if (has_json) parse_json(json_text, &s);
    if (!s.has_inline_image && s.parse_error.empty()) {
      std::string found;
      for (auto& m : members) found += (found.empty() ? "" : ", ") + m.suffix;
      s.parse_error = spec_.path + ": sample " + key + " has no image member (found: " + found + ")";
    }
    *out = std::move(s);
    return true;
  }

 private:
  void parse_json(const std::string& text, SampleInput* s) const {
    ordered_json j;
    try {
      j = ordered_json::parse(text);
    } catch (const std::exception&) {
      if (s->parse_error.empty()) s->parse_error = spec_.path + ": " + s->key + ".json is not valid JSON";
      return;
    }
    if (!j.is_object()) {
      if (s->parse_error.empty()) s->parse_error = spec_.path + ": " + s->key + ".json is not a JSON object";
      return;
    }
    if (j.contains("url") && j["url"].is_string()) s->url = j["url"].get<std::string>();
    if (!s->has_caption_member && j.contains("caption") && j["caption"].is_string())
      s->caption = j["caption"].get<std::string>();
    // Pass through what the downloader recorded, except what the engine recomputes.
    static const std::set<std::string> ours{"url",           "caption",     "key",        "status",
                                            "error_message", "width",       "height",     "re_caption",
                                            "re_captions",   "org_caption", "tokens_in",  "tokens_out",
                                            "stop_reason",   "timings_ms",  "fingerprint"};
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!ours.count(it.key())) s->extra[it.key()] = it.value();
  }

  static const char* entry_kind(char type) {
    switch (type) {
      case '1':
        return "hard link";
      case '2':
        return "symbolic link";
      case '5':
        return "directory";
      default:
        return "special entry";
    }
  }

  // The first kMaxWarnings of a tar are said; then one line at the end counts the rest.
  void warn(std::string w) {
    if (++warned_ <= kMaxWarnings) warnings_.push_back(std::move(w));
  }
  static constexpr int64_t kMaxWarnings = 20;
  static constexpr size_t kMaxMembers = 1024;  // per sample

  ShardSpec spec_;
  uint64_t max_member_;
  std::unique_ptr<io::TarReader> reader_;
  io::TarEntry pending_;  // header read, data not yet
  bool have_pending_ = false;
  std::map<std::string, uint64_t> seen_;  // key -> offset of its first sample
  int64_t index_ = 0;
  int64_t warned_ = 0;
};

}  // namespace

std::unique_ptr<SampleStream> open_shard(const ShardSpec& spec, const InputOptions& opts) {
  if (spec.is_tar) return std::make_unique<TarStream>(spec, opts);
  return std::make_unique<ListStream>(spec, opts);
}

}  // namespace recap::engine
