#include "engine/sources.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

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
      auto v = io::expand_braces(p);
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

namespace {

// A list file's bytes in chunks, gunzipped when it starts with the gzip magic (whatever its
// name, like io::read_maybe_gzip; concatenated members included), without holding the file.
class ChunkReader {
 public:
  explicit ChunkReader(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw InputError("cannot open " + path + ": " + std::strerror(errno));
    raw_.resize(1 << 20);
    fill();
    if (raw_len_ >= 2 && static_cast<unsigned char>(raw_[0]) == 0x1f &&
        static_cast<unsigned char>(raw_[1]) == 0x8b) {
      gzip_ = true;
      if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw InputError(path + ": zlib init failed");
      zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
      zs_.avail_in = static_cast<uInt>(raw_len_);
      out_.resize(1 << 20);
    }
  }
  ~ChunkReader() {
    if (gzip_) inflateEnd(&zs_);
    ::close(fd_);
  }
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;

  // The next chunk of (decompressed) text; false at the end. Throws InputError.
  bool next(const char** data, size_t* n) {
    if (!gzip_) {
      if (!first_done_) {
        first_done_ = true;
      } else {
        fill();
      }
      *data = raw_.data();
      *n = raw_len_;
      return raw_len_ > 0;
    }
    while (!ended_) {
      if (zs_.avail_in == 0) {
        fill();
        if (raw_len_ == 0) throw InputError(path_ + ": truncated gzip stream");
        zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
        zs_.avail_in = static_cast<uInt>(raw_len_);
      }
      zs_.next_out = reinterpret_cast<Bytef*>(out_.data());
      zs_.avail_out = static_cast<uInt>(out_.size());
      int rc = inflate(&zs_, Z_NO_FLUSH);
      const size_t got = out_.size() - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        // Another member may follow, in this buffer or the next read.
        if (zs_.avail_in == 0) {
          fill();
          zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
          zs_.avail_in = static_cast<uInt>(raw_len_);
        }
        if (zs_.avail_in == 0)
          ended_ = true;
        else
          inflateReset(&zs_);
      } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs_.avail_in == 0)) {
        throw InputError(path_ + ": corrupt gzip stream (" + (zs_.msg ? zs_.msg : "invalid data") + ")");
      }
      if (got > 0) {
        *data = out_.data();
        *n = got;
        return true;
      }
    }
    return false;
  }

 private:
  void fill() {
    for (;;) {
      ssize_t r = ::read(fd_, raw_.data(), raw_.size());
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw InputError("cannot read " + path_ + ": " + std::strerror(errno));
      raw_len_ = static_cast<size_t>(r);
      return;
    }
  }

  std::string path_;
  int fd_ = -1;
  std::string raw_, out_;
  size_t raw_len_ = 0;
  bool gzip_ = false, first_done_ = false, ended_ = false;
  z_stream zs_{};
};

// io::read_list_file's header check (the url column must exist), as an InputError.
void check_list_header(const std::string& path, io::ListFormat format, int64_t line_no,
                       const std::string& line, const io::ListColumns& columns) {
  try {
    io::check_list_header(format, line, columns, path + ":" + std::to_string(line_no) + ": ");
  } catch (const io::ListError& e) {
    throw InputError(e.what());
  }
}

}  // namespace

int64_t count_list_records(const std::string& path, const io::ListColumns& columns) {
  io::ListFormat format;
  try {
    format = io::list_format_from_name(path);
  } catch (const io::ListError& e) {
    throw InputError(e.what());
  }
  const bool has_header = format == io::ListFormat::Tsv || format == io::ListFormat::Csv;
  ChunkReader reader(path);
  // io::read_list_file's lines: split at '\n', one trailing '\r' dropped, blank when only
  // spaces and tabs remain. Per line: has a character other than space or tab been seen
  // (`content`), and is the last one seen a '\r' that only counts if more follows (`cr`).
  int64_t records = 0, line_no = 1;
  bool content = false, cr = false, header_seen = !has_header;
  std::string header;  // the header line, while it is being read
  auto end_line = [&] {
    if (content) {
      if (header_seen) {
        ++records;
      } else {
        check_list_header(path, format, line_no, header, columns);
        header_seen = true;
      }
    }
    header.clear();
    content = cr = false;
    ++line_no;
  };
  const char* data;
  size_t n;
  while (reader.next(&data, &n)) {
    const char* p = data;
    const char* const end = data + n;
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const char* stop = nl ? nl : end;
      if (!header_seen) header.append(p, static_cast<size_t>(stop - p));
      // Once a line has content the rest of it need not be looked at.
      for (const char* q = p; q < stop && !content; ++q) {
        if (*q == '\r') {
          content = cr;  // a '\r' followed by anything is content
          cr = true;
        } else if (*q == ' ' || *q == '\t') {
          content = cr;
          cr = false;
        } else {
          content = true;
        }
      }
      if (!nl) break;
      if (!header_seen && !header.empty() && header.back() == '\r') header.pop_back();
      end_line();
      p = nl + 1;
    }
  }
  if (!header_seen && !header.empty() && header.back() == '\r') header.pop_back();
  end_line();  // a last line without '\n' (nothing happens for an empty one)
  return records;
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
    // The output shard of x.tar, x.tar.gz, x.tgz ... is x.
    std::string base = io::base_name(path);
    for (const char* suf : {".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
                            ".tar.zst", ".tzst", ".tar.lz4", ".tar.lz", ".tar.Z", ".taz"}) {
      if (ends_with(base, suf) && base.size() > std::strlen(suf)) {
        base.resize(base.size() - std::strlen(suf));
        break;
      }
    }
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

class ListStream : public SampleStream {
 public:
  ListStream(const ShardSpec& spec, const InputOptions& opts) : spec_(spec), opts_(opts) {
    // Consecutive shards usually come from the same (possibly large) list: keep the last
    // parsed file instead of reading it again for each shard.
    static std::mutex cache_mu;
    static std::shared_ptr<const io::ListFile> cache;
    {
      std::lock_guard<std::mutex> lk(cache_mu);
      if (cache && cache->path == spec.path) lf_ = cache;
    }
    if (!lf_) {
      try {
        lf_ = std::make_shared<const io::ListFile>(io::read_list_file(spec.path, opts.columns));
      } catch (const io::ListError& e) {
        throw InputError(e.what());
      }
      std::lock_guard<std::mutex> lk(cache_mu);
      cache = lf_;
    }
    if (static_cast<int64_t>(lf_->records.size()) < spec.first_record + spec.n_records)
      throw InputError(spec.path + ": the list changed since it was read (fewer lines)");
  }
  bool next(SampleInput* out) override {
    if (pos_ >= spec_.n_records) return false;
    const auto& r = lf_->records[static_cast<size_t>(spec_.first_record + pos_)];
    SampleInput s;
    s.index = pos_;
    s.key = !r.key.empty() ? r.key : io::compute_key(pos_, spec_.shard_id, opts_.samples_per_shard);
    s.url = r.url;
    s.caption = r.caption;
    s.extra = r.extra;
    s.base_dir = lf_->dir;
    s.parse_error = r.error;
    s.source = spec_.path + ":" + std::to_string(r.line);
    *out = std::move(s);
    ++pos_;
    return true;
  }

 private:
  ShardSpec spec_;
  InputOptions opts_;
  std::shared_ptr<const io::ListFile> lf_;
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
