#include "engine/sources.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "io/fileutil.h"

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
    for (const char* ext : {".tar.gz", ".tgz", ".tar"})
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
