#include "io/lists.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "io/fileutil.h"

namespace recap::io {

// ---------------------------------------------------------------- brace expansion

namespace {

// At most this many names from one pattern (a million shards of 10,000 samples is ten billion
// samples): bounds the time and memory of expanding a hostile pattern.
constexpr size_t kMaxExpansion = 1'000'000;

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  size_t i = (s[0] == '-') ? 1 : 0;
  if (i == s.size()) return false;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = s[0] == '-' ? -v : v;
  return true;
}

// A pattern is parsed into a tree first and its names are counted; they are materialized
// once, at the end, each name built once. (Expanding level by level built every name again at
// each nesting level: a pattern of 800,000 names nested four deep took seconds.)
//
// One (sub)pattern: literal `prefix`, then (when has_group) one brace group whose
// alternatives each continue with `rest`, the pattern after the group.
struct BraceNode;

// One alternative of a group: a number of a range, a literal (a body without a top-level
// comma stays "{body}"), or a comma part, itself a pattern.
struct BraceAlt {
  enum Kind { kRange, kLiteral, kPart } kind = kLiteral;
  int64_t from = 0, to = 0;  // kRange: from..to inclusive, either direction
  size_t width = 0;          // kRange: zero padding
  std::string literal;       // kLiteral
  std::unique_ptr<BraceNode> part;
  uint64_t count = 1;
};

struct BraceNode {
  std::string prefix;
  bool has_group = false;
  std::vector<BraceAlt> alts;
  std::unique_ptr<BraceNode> rest;
  uint64_t count = 1;  // names this pattern expands to (<= kMaxExpansion)
};

std::unique_ptr<BraceNode> parse_braces(const std::string& pattern);

// The alternatives of one brace group body (without the braces) and their total count.
// Errors and their order as the names are made: a range or the group over the limit.
uint64_t parse_group(const std::string& body, const std::string& pattern, std::vector<BraceAlt>* alts) {
  size_t dots = body.find("..");
  int64_t a = 0, b = 0;
  if (dots != std::string::npos && parse_int(body.substr(0, dots), &a) &&
      parse_int(body.substr(dots + 2), &b)) {
    std::string as = body.substr(0, dots);
    std::string bs = body.substr(dots + 2);
    BraceAlt r;
    r.kind = BraceAlt::kRange;
    r.from = a;
    r.to = b;
    // Zero padding: a leading zero on either end pads every number to the longer width.
    if ((as.size() > 1 && as[0] == '0') || (bs.size() > 1 && bs[0] == '0'))
      r.width = std::max(as.size(), bs.size());
    const uint64_t n = static_cast<uint64_t>(a <= b ? b - a : a - b) + 1;
    if (n > kMaxExpansion)
      throw ListError("brace range {" + body + "} in '" + pattern + "' names more than 1,000,000 items");
    r.count = n;
    alts->push_back(std::move(r));
    return n;
  }
  // Comma alternatives (nested braces inside an alternative are parsed recursively).
  std::vector<std::string> parts;
  int depth = 0;
  std::string cur;
  for (char c : body) {
    if (c == '{') depth++;
    if (c == '}') depth--;
    if (c == ',' && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  parts.push_back(cur);
  if (parts.size() == 1) {  // not a group: literal braces
    BraceAlt l;
    l.literal = "{" + body + "}";
    alts->push_back(std::move(l));
    return 1;
  }
  uint64_t total = 0;
  for (auto& p : parts) {
    BraceAlt alt;
    alt.kind = BraceAlt::kPart;
    alt.part = parse_braces(p);
    alt.count = alt.part->count;
    // The alternatives together are bounded too, not only each one.
    if (total + alt.count > kMaxExpansion)
      throw ListError("brace group {" + body + "} in '" + pattern + "' names more than 1,000,000 items");
    total += alt.count;
    alts->push_back(std::move(alt));
  }
  return total;
}

std::unique_ptr<BraceNode> parse_braces(const std::string& pattern) {
  auto node = std::make_unique<BraceNode>();
  size_t open = pattern.find('{');
  if (open == std::string::npos) {
    if (pattern.find('}') != std::string::npos)
      throw ListError("unbalanced '}' in pattern '" + pattern + "'");
    node->prefix = pattern;
    return node;
  }
  int depth = 0;
  size_t close = std::string::npos;
  for (size_t i = open; i < pattern.size(); ++i) {
    if (pattern[i] == '{') depth++;
    if (pattern[i] == '}' && --depth == 0) {
      close = i;
      break;
    }
  }
  if (close == std::string::npos) throw ListError("unbalanced '{' in pattern '" + pattern + "'");
  node->prefix = pattern.substr(0, open);
  if (node->prefix.find('}') != std::string::npos)
    throw ListError("unbalanced '}' in pattern '" + pattern + "'");
  node->has_group = true;
  const uint64_t alts = parse_group(pattern.substr(open + 1, close - open - 1), pattern, &node->alts);
  node->rest = parse_braces(pattern.substr(close + 1));
  // Both factors are <= kMaxExpansion: the product cannot overflow.
  if (alts * node->rest->count > kMaxExpansion)
    throw ListError("pattern '" + pattern + "' names more than 1,000,000 items");
  node->count = alts * node->rest->count;
  return node;
}

// Appends every name of `node` followed by every name of the patterns on `after` (innermost
// last) to `out`, each built once in `buf`.
void emit_braces(const BraceNode& node, std::string& buf, std::vector<const BraceNode*>& after,
                 std::vector<std::string>& out);

void emit_after(std::string& buf, std::vector<const BraceNode*>& after, std::vector<std::string>& out) {
  if (after.empty()) {
    out.push_back(buf);
    return;
  }
  const BraceNode* next = after.back();
  after.pop_back();
  emit_braces(*next, buf, after, out);
  after.push_back(next);
}

void emit_braces(const BraceNode& node, std::string& buf, std::vector<const BraceNode*>& after,
                 std::vector<std::string>& out) {
  const size_t mark = buf.size();
  buf += node.prefix;
  if (!node.has_group) {
    emit_after(buf, after, out);
    buf.resize(mark);
    return;
  }
  const size_t group_mark = buf.size();
  after.push_back(node.rest.get());
  for (const BraceAlt& alt : node.alts) {
    switch (alt.kind) {
      case BraceAlt::kLiteral:
        buf += alt.literal;
        emit_after(buf, after, out);
        break;
      case BraceAlt::kPart:
        emit_braces(*alt.part, buf, after, out);
        break;
      case BraceAlt::kRange: {
        const int64_t step = alt.from <= alt.to ? 1 : -1;
        for (int64_t v = alt.from;; v += step) {
          std::string s = std::to_string(v < 0 ? -v : v);
          if (s.size() < alt.width) s.insert(0, alt.width - s.size() - (v < 0 ? 1 : 0), '0');
          if (v < 0) s.insert(0, "-");
          buf += s;
          emit_after(buf, after, out);
          buf.resize(group_mark);
          if (v == alt.to) break;
        }
        break;
      }
    }
    buf.resize(group_mark);
  }
  after.pop_back();
  buf.resize(mark);
}

}  // namespace

size_t count_braces(const std::string& pattern) {
  return static_cast<size_t>(parse_braces(pattern)->count);
}

std::vector<std::string> expand_braces(const std::string& pattern) {
  const std::unique_ptr<BraceNode> root = parse_braces(pattern);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(root->count));
  std::string buf;
  std::vector<const BraceNode*> after;
  emit_braces(*root, buf, after, out);
  return out;
}

// ---------------------------------------------------------------- glob patterns

std::vector<std::string> expand_pattern(const std::string& pattern) {
  std::vector<std::string> out;
  for (auto& name : expand_braces(pattern)) {
    if (name.find_first_of("*?[") == std::string::npos || file_exists(name)) {
      out.push_back(name);
      continue;
    }
    glob_t g{};
    // GLOB_NOSORT: sorted below bytewise, not by the locale's collation, so that every worker
    // (whatever its environment) numbers the shards alike. No GLOB_NOCHECK: no match is an error.
    const int rc = ::glob(name.c_str(), GLOB_NOSORT, nullptr, &g);
    std::vector<std::string> matches;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH)
      throw ListError("cannot expand the pattern '" + name + "' (glob error)");
    if (matches.empty())
      throw ListError(name == pattern
                          ? "no file matches the pattern '" + pattern + "'"
                          : "no file matches the pattern '" + name + "' (from '" + pattern + "')");
    std::sort(matches.begin(), matches.end());
    out.insert(out.end(), matches.begin(), matches.end());
  }
  return out;
}

// ---------------------------------------------------------------- reading

ListFormat list_format_from_name(const std::string& path) {
  std::string name = base_name(path);
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) name.resize(name.size() - 3);
  auto ends = [&](const char* ext) {
    size_t n = std::strlen(ext);
    return name.size() > n && name.compare(name.size() - n, n, ext) == 0;
  };
  if (ends(".jsonl") || ends(".json") || ends(".ndjson")) return ListFormat::Jsonl;
  if (ends(".tsv")) return ListFormat::Tsv;
  if (ends(".csv")) return ListFormat::Csv;
  if (ends(".txt")) return ListFormat::Text;
  throw ListError(path +
                  ": unknown list format (expected .jsonl, .json, .tsv, .csv or .txt, optionally .gz)");
}

std::string read_maybe_gzip(const std::string& path) {
  std::string raw;
  try {
    raw = read_file(path);
  } catch (const IoError& e) {
    throw ListError(e.what());
  }
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b)
    return raw;
  std::string out;
  z_stream zs{};
  // 16+MAX_WBITS: gzip wrapper; concatenated members are handled by the reset loop below.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw ListError(path + ": zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  char buf[1 << 16];
  for (;;) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);  // next gzip member
      continue;
    }
    if (rc != Z_OK) {
      std::string msg = zs.msg ? zs.msg : "invalid data";
      inflateEnd(&zs);
      throw ListError(path + ": corrupt gzip stream (" + msg + ")");
    }
    if (zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      throw ListError(path + ": truncated gzip stream");
    }
  }
  inflateEnd(&zs);
  return out;
}

namespace {

const std::vector<std::string>& url_aliases() {
  static const std::vector<std::string> v{"url", "URL", "image_url", "img_url", "link", "image"};
  return v;
}
const std::vector<std::string>& caption_aliases() {
  static const std::vector<std::string> v{"caption", "TEXT",     "text", "org_caption",
                                          "alt",     "alt_text", "title"};
  return v;
}
const std::vector<std::string>& key_aliases() {
  static const std::vector<std::string> v{"key", "id", "sample_id", "uid"};
  return v;
}

// The column to use: the configured one if present, else the first alias present.
template <class Has>
std::string pick_column(const std::string& configured, const std::vector<std::string>& aliases, bool strict,
                        Has has) {
  if (has(configured)) return configured;
  if (strict) return "";
  for (auto& a : aliases)
    if (has(a)) return a;
  return "";
}

// The fields of one complete RFC 4180 record (the tokenizer below found where it ends, so a
// quoted field may hold line breaks): a field starting with '"' runs to the next single '"'
// ("" is a quote), and must end there; a quote elsewhere is a plain character.
bool split_delimited(const std::string& record, char sep, std::vector<std::string>* out, std::string* err) {
  out->clear();
  std::string cur;
  size_t i = 0;
  for (;;) {
    cur.clear();
    if (i < record.size() && record[i] == '"') {
      ++i;
      for (;;) {
        if (i >= record.size()) {
          *err = "unterminated quoted field";
          return false;
        }
        if (record[i] == '"') {
          if (i + 1 < record.size() && record[i + 1] == '"') {
            cur.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        cur.push_back(record[i++]);
      }
      if (i < record.size() && record[i] != sep) {
        *err = "characters after a closing quote";
        return false;
      }
    } else {
      size_t end = record.find(sep, i);
      if (end == std::string::npos) end = record.size();
      cur.assign(record, i, end - i);
      i = end;
    }
    out->push_back(cur);
    if (i >= record.size()) return true;
    ++i;  // the separator
  }
}

std::string json_scalar_text(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

bool is_json_name(const std::string& path) {
  std::string name = base_name(path);
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) name.resize(name.size() - 3);
  return name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
}

// A list file's bytes in chunks, gunzipped when it starts with the gzip magic (whatever its
// name; concatenated members included), a leading UTF-8 BOM dropped. Holds one compressed and
// one decompressed chunk, never the file.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw ListError("cannot open " + path + ": " + std::strerror(errno));
    raw_.resize(kChunk);
    fill_raw();
    if (raw_len_ >= 2 && static_cast<unsigned char>(raw_[0]) == 0x1f &&
        static_cast<unsigned char>(raw_[1]) == 0x8b) {
      gzip_ = true;
      if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) {
        ::close(fd_);
        throw ListError(path + ": zlib init failed");
      }
      zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
      zs_.avail_in = static_cast<uInt>(raw_len_);
      out_.resize(kChunk);
    }
  }
  ~ByteSource() {
    if (gzip_) inflateEnd(&zs_);
    ::close(fd_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // The next chunk of (decompressed) text; false at the end. Throws ListError.
  bool next(const char** data, size_t* n) {
    if (!bom_checked_) {
      bom_checked_ = true;
      // The first chunk, made at least 3 bytes long (or the whole file) to see a BOM.
      std::string first;
      const char* d;
      size_t k;
      while (first.size() < 3 && next_raw(&d, &k)) first.append(d, k);
      if (first.size() >= 3 && first.compare(0, 3, "\xEF\xBB\xBF") == 0) first.erase(0, 3);
      if (first.empty()) return next(data, n);
      first_ = std::move(first);
      *data = first_.data();
      *n = first_.size();
      return true;
    }
    return next_raw(data, n);
  }

 private:
  static constexpr size_t kChunk = size_t(1) << 18;

  bool next_raw(const char** data, size_t* n) {
    if (!gzip_) {
      if (!raw_given_) {
        raw_given_ = true;
      } else {
        fill_raw();
      }
      *data = raw_.data();
      *n = raw_len_;
      return raw_len_ > 0;
    }
    while (!ended_) {
      if (zs_.avail_in == 0) {
        fill_raw();
        if (raw_len_ == 0) throw ListError(path_ + ": truncated gzip stream");
        zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
        zs_.avail_in = static_cast<uInt>(raw_len_);
      }
      zs_.next_out = reinterpret_cast<Bytef*>(out_.data());
      zs_.avail_out = static_cast<uInt>(out_.size());
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      const size_t got = out_.size() - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        // Another member may follow, in this buffer or the next read.
        if (zs_.avail_in == 0) {
          fill_raw();
          zs_.next_in = reinterpret_cast<Bytef*>(raw_.data());
          zs_.avail_in = static_cast<uInt>(raw_len_);
        }
        if (zs_.avail_in == 0)
          ended_ = true;
        else
          inflateReset(&zs_);
      } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs_.avail_in == 0)) {
        throw ListError(path_ + ": corrupt gzip stream (" + (zs_.msg ? zs_.msg : "invalid data") + ")");
      }
      if (got > 0) {
        *data = out_.data();
        *n = got;
        return true;
      }
    }
    return false;
  }

  void fill_raw() {
    for (;;) {
      const ssize_t r = ::read(fd_, raw_.data(), raw_.size());
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw ListError("cannot read " + path_ + ": " + std::strerror(errno));
      raw_len_ = static_cast<size_t>(r);
      return;
    }
  }

  std::string path_;
  int fd_ = -1;
  std::string raw_, out_, first_;
  size_t raw_len_ = 0;
  bool gzip_ = false, raw_given_ = false, ended_ = false, bom_checked_ = false;
  z_stream zs_{};
};

// One record as the tokenizer cuts it, before any parsing.
struct RawRecord {
  int64_t line = 0;           // where it starts
  std::string text;           // without the line end; empty when too_long or not kept
  bool too_long = false;      // longer than kMaxListRecordBytes (text dropped)
  bool unterminated = false;  // CSV/TSV: a quoted field still open at the end of the file
};

// Cuts the byte stream into records (see the header for the rules). One byte at a time
// through a small state machine, except that lines are found with memchr. Blank records are
// skipped here, so every caller sees the same sequence.
class Tokenizer {
 public:
  enum class Mode { Lines, Delimited, JsonArray };

  explicit Tokenizer(const std::string& path) : path_(path), src_(path) {}

  // Consumes white space (advancing lines); returns the next byte without consuming it, or -1
  // at the end of the file.
  int skip_space() {
    for (;;) {
      if (!fill()) return -1;
      const char c = *cur_;
      if (c == '\n') {
        ++line_;
      } else if (c != ' ' && c != '\t' && c != '\r') {
        return static_cast<unsigned char>(c);
      }
      ++cur_;
    }
  }
  void consume() { ++cur_; }  // after skip_space returned a byte
  int64_t line() const { return line_; }

  void set_mode(Mode m, char sep = ',') {
    mode_ = m;
    sep_ = sep;
  }

  // The next non-blank record; false at the end of the file. `keep`: fill r->text.
  bool next(RawRecord* r, bool keep) {
    if (mode_ == Mode::JsonArray) return next_array_element(r, keep);
    for (;;) {
      bool any = false;
      const bool nonblank = mode_ == Mode::Lines ? next_line(r, keep, &any) : next_delimited(r, keep, &any);
      if (!any) return false;
      if (nonblank) return true;
    }
  }

 private:
  bool fill() {
    if (cur_ < end_) return true;
    if (eof_) return false;
    const char* d;
    size_t n;
    if (!src_.next(&d, &n)) {
      eof_ = true;
      return false;
    }
    cur_ = d;
    end_ = d + n;
    return true;
  }

  void start(RawRecord* r) {
    r->line = line_;
    r->text.clear();
    r->too_long = false;
    r->unterminated = false;
    len_ = 0;
  }
  void append(RawRecord* r, bool keep, const char* p, size_t n) {
    len_ += n;
    if (r->too_long) return;
    if (len_ > kMaxListRecordBytes) {
      r->too_long = true;
      r->text.clear();
      r->text.shrink_to_fit();
      return;
    }
    if (keep) r->text.append(p, n);
  }
  // A trailing '\r' (before the '\n' or the end of the file) is not part of the record.
  void drop_final_cr(RawRecord* r, bool keep, bool last_is_cr) {
    if (!last_is_cr) return;
    --len_;
    if (keep && !r->too_long && !r->text.empty()) r->text.pop_back();
  }

  // One line. Returns whether it is not blank (only spaces and tabs, after dropping one
  // trailing '\r'); *any: a line was there at all.
  bool next_line(RawRecord* r, bool keep, bool* any) {
    start(r);
    bool content = false, pending_cr = false;
    for (;;) {
      if (!fill()) {
        drop_final_cr(r, keep, pending_cr);
        return content;
      }
      *any = true;
      const char* nl = static_cast<const char*>(std::memchr(cur_, '\n', static_cast<size_t>(end_ - cur_)));
      const char* stop = nl ? nl : end_;
      for (const char* q = cur_; q < stop && !content; ++q) {
        if (*q == '\r') {
          content = pending_cr;  // a '\r' followed by anything is content
          pending_cr = true;
        } else if (*q == ' ' || *q == '\t') {
          content = pending_cr;
          pending_cr = false;
        } else {
          content = true;
        }
      }
      if (stop > cur_) {
        append(r, keep, cur_, static_cast<size_t>(stop - cur_));
        pending_cr = stop[-1] == '\r';
      }
      cur_ = stop;
      if (nl) {
        ++cur_;
        ++line_;
        drop_final_cr(r, keep, pending_cr);
        return content;
      }
    }
  }

  // One RFC 4180 record.
  bool next_delimited(RawRecord* r, bool keep, bool* any) {
    enum State { FieldStart, Unquoted, Quoted, QuoteInQuoted };
    start(r);
    State st = FieldStart;
    bool content = false, pending_cr = false;
    // The state change a byte makes outside a line end ('\r' is an ordinary byte unless a '\n'
    // follows it).
    auto step = [&](char c) {
      switch (st) {
        case FieldStart:
          st = c == '"' ? Quoted : (c == sep_ ? FieldStart : Unquoted);
          break;
        case Unquoted:
          if (c == sep_) st = FieldStart;
          break;
        case Quoted:
          if (c == '"') st = QuoteInQuoted;
          break;
        case QuoteInQuoted:
          st = c == '"' ? Quoted : (c == sep_ ? FieldStart : Unquoted);
          break;
      }
    };
    for (;;) {
      if (!fill()) {
        r->unterminated = *any && st == Quoted;
        if (st != Quoted) drop_final_cr(r, keep, pending_cr);
        return content;
      }
      *any = true;
      const char c = *cur_++;
      if (c == '\n') {
        ++line_;
        if (st != Quoted) {
          drop_final_cr(r, keep, pending_cr);
          return content;
        }
      }
      if (pending_cr) {
        pending_cr = false;
        content = true;
        step('\r');
      }
      append(r, keep, &c, 1);
      if (c == '\n') {
        content = true;
        continue;
      }
      if (c == '\r' && st != Quoted) {
        pending_cr = true;
        continue;
      }
      if (c != ' ' && c != '\t') content = true;
      step(c);
    }
  }

  // One element of a JSON array (the '[' was consumed when the file was opened).
  bool next_array_element(RawRecord* r, bool keep) {
    if (array_done_) return false;
    auto where = [&] { return path_ + ":" + std::to_string(line_) + ": "; };
    int c = skip_space();
    if (elements_ > 0) {
      if (c == ',') {
        consume();
        c = skip_space();
        if (c == ']') throw ListError(where() + "not a JSON array of objects: ',' before the closing ']'");
      } else if (c != ']') {
        throw ListError(where() +
                        (c < 0 ? "not a JSON array of objects: the file ends before the closing ']'"
                               : "not a JSON array of objects: ',' or ']' expected after an element"));
      }
    }
    if (c < 0) throw ListError(where() + "not a JSON array of objects: the file ends before the closing ']'");
    if (c == ']') {
      consume();
      array_done_ = true;
      if (skip_space() >= 0)
        throw ListError(where() + "not a JSON array of objects: text after the closing ']'");
      return false;
    }
    start(r);
    ++elements_;
    // The element ends after the bracket or quote that closes it, or, for a bare number or
    // literal, before the ',', ']' or white space that follows it.
    int depth = 0;
    bool in_string = false, escape = false, done = false;
    for (;;) {
      if (!fill()) throw ListError(where() + "not a JSON array of objects: the file ends inside an element");
      const char* p = cur_;
      for (; p < end_ && !done; ++p) {
        const char ch = *p;
        if (in_string) {
          if (escape) {
            escape = false;
          } else if (ch == '\\') {
            escape = true;
          } else if (ch == '"') {
            in_string = false;
            done = depth == 0;
          }
        } else if (ch == '"') {
          in_string = true;
        } else if (ch == '{' || ch == '[') {
          ++depth;
        } else if (ch == '}' || ch == ']') {
          if (depth == 0) break;  // the array's ']' (a stray '}' is refused by the caller)
          done = --depth == 0;
        } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')) {
          break;
        }
        if (ch == '\n') ++line_;
      }
      append(r, keep, cur_, static_cast<size_t>(p - cur_));
      cur_ = p;
      if (done || p < end_) break;
    }
    return true;
  }

  std::string path_;
  ByteSource src_;
  const char* cur_ = nullptr;
  const char* end_ = nullptr;
  bool eof_ = false;
  int64_t line_ = 1;
  size_t len_ = 0;
  Mode mode_ = Mode::Lines;
  char sep_ = ',';
  int64_t elements_ = 0;
  bool array_done_ = false;
};

}  // namespace

std::vector<std::string> check_list_header(ListFormat format, const std::string& line,
                                           const ListColumns& columns, const std::string& where) {
  std::vector<std::string> header;
  std::string err;
  if (!split_delimited(line, format == ListFormat::Csv ? ',' : '\t', &header, &err))
    throw ListError(where + "malformed header (" + err + ")");
  auto has = [&](const std::string& c) {
    return !c.empty() && std::find(header.begin(), header.end(), c) != header.end();
  };
  if (pick_column(columns.url, url_aliases(), columns.strict, has).empty()) {
    std::string names;
    for (auto& h : header) {
      if (!names.empty()) names += ", ";
      names += h;
    }
    throw ListError(where + "header has no '" + columns.url + "' column (columns: " + names + ")");
  }
  return header;
}

struct ListReader::Impl {
  std::string path, dir;
  ListColumns columns;
  ListFormat format = ListFormat::Jsonl;
  Tokenizer tok;
  bool json_name = false;  // .json: its first record must be a JSON object
  bool first_checked = false;
  int64_t position = 0;
  RawRecord raw;
  // TSV/CSV
  std::vector<std::string> header;
  std::string uc, cc, kc;
  int ui = -1, ci = -1, ki = -1;
  std::vector<std::string> fields;

  Impl(const std::string& p, const ListColumns& c) : path(p), dir(dir_name(p)), columns(c), tok(p) {}

  std::string where(int64_t ln) const { return path + ":" + std::to_string(ln) + ": "; }

  // The next raw record, the first record of a .json file checked to be a JSON object (so a
  // file that is neither JSONL nor an array of objects is refused by the counter too).
  bool next_raw(bool keep) {
    if (json_name && !first_checked) {
      first_checked = true;
      if (!tok.next(&raw, true)) return false;
      if (!raw.too_long && !raw.unterminated) {
        bool object = false;
        try {
          object = nlohmann::ordered_json::parse(raw.text).is_object();
        } catch (const std::exception&) {
        }
        if (!object)
          throw ListError(where(raw.line) + "neither a JSON array of objects nor JSON Lines (" +
                          (format == ListFormat::JsonArray ? "the first element" : "the first line") +
                          " is not a JSON object)");
      }
      return true;
    }
    return tok.next(&raw, keep);
  }

  void parse_json(ListRecord* r) {
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(raw.text);
    } catch (const std::exception& e) {
      r->error = where(r->line) + "invalid JSON (" + std::string(e.what()) + ")";
      return;
    }
    if (!j.is_object()) {
      r->error = where(r->line) + "a JSON object was expected";
      return;
    }
    auto has = [&](const std::string& c) { return !c.empty() && j.contains(c); };
    const std::string u = pick_column(columns.url, url_aliases(), columns.strict, has);
    const std::string c = pick_column(columns.caption, caption_aliases(), columns.strict, has);
    const std::string k = pick_column(columns.key, key_aliases(), columns.strict, has);
    if (u.empty()) {
      r->error = where(r->line) + "no '" + columns.url + "' column";
      return;
    }
    if (!j[u].is_string() || j[u].get<std::string>().empty()) {
      r->error = where(r->line) + "column '" + u + "' is not a non-empty string";
      return;
    }
    r->url = j[u].get<std::string>();
    if (!c.empty()) r->caption = json_scalar_text(j[c]);
    if (!k.empty() && !j[k].is_null()) {
      r->key = json_scalar_text(j[k]);
      r->key_given = true;
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == u || it.key() == c || it.key() == k) continue;
      r->extra[it.key()] = it.value();
    }
  }

  void parse_delimited(ListRecord* r) {
    std::string err;
    if (!split_delimited(raw.text, format == ListFormat::Csv ? ',' : '\t', &fields, &err)) {
      r->error = where(r->line) + err;
      return;
    }
    if (fields.size() != header.size()) {
      r->error = where(r->line) + "expected " + std::to_string(header.size()) + " fields, found " +
                 std::to_string(fields.size());
      return;
    }
    if (fields[static_cast<size_t>(ui)].empty()) {
      r->error = where(r->line) + "empty '" + uc + "' field";
      return;
    }
    r->url = fields[static_cast<size_t>(ui)];
    if (ci >= 0) r->caption = fields[static_cast<size_t>(ci)];
    if (ki >= 0) {
      r->key = fields[static_cast<size_t>(ki)];
      r->key_given = true;
    }
    for (size_t i = 0; i < header.size(); ++i) {
      const int ii = static_cast<int>(i);
      if (ii == ui || ii == ci || ii == ki) continue;
      r->extra[header[i]] = fields[i];
    }
  }

  void parse(ListRecord* r) {
    *r = ListRecord{};
    r->line = raw.line;
    if (raw.unterminated) {
      r->error = where(r->line) + "unterminated quoted field (the record runs to the end of the file)";
    } else if (raw.too_long) {
      r->error = where(r->line) + "record longer than " + std::to_string(kMaxListRecordBytes) +
                 " bytes (the limit for one list record)";
    } else if (format == ListFormat::Text) {
      const size_t a = raw.text.find_first_not_of(" \t"), b = raw.text.find_last_not_of(" \t");
      r->url = raw.text.substr(a, b - a + 1);
    } else if (format == ListFormat::Tsv || format == ListFormat::Csv) {
      parse_delimited(r);
    } else {
      parse_json(r);
    }
  }
};

ListReader::ListReader(const std::string& path, const ListColumns& columns) {
  const ListFormat named = list_format_from_name(path);
  impl_ = std::make_unique<Impl>(path, columns);
  Impl& m = *impl_;
  m.format = named;
  if (named == ListFormat::Jsonl && is_json_name(path)) {
    m.json_name = true;
    if (m.tok.skip_space() == '[') {
      m.tok.consume();
      m.format = ListFormat::JsonArray;
      m.tok.set_mode(Tokenizer::Mode::JsonArray);
    }
  } else if (named == ListFormat::Tsv || named == ListFormat::Csv) {
    m.tok.set_mode(Tokenizer::Mode::Delimited, named == ListFormat::Csv ? ',' : '\t');
    if (m.tok.next(&m.raw, true)) {
      if (m.raw.too_long)
        throw ListError(m.where(m.raw.line) + "header longer than " + std::to_string(kMaxListRecordBytes) +
                        " bytes");
      m.header = check_list_header(named, m.raw.text, columns, m.where(m.raw.line));
      auto col_index = [&](const std::string& c) -> int {
        for (size_t i = 0; i < m.header.size(); ++i)
          if (m.header[i] == c) return static_cast<int>(i);
        return -1;
      };
      auto has = [&](const std::string& c) { return !c.empty() && col_index(c) >= 0; };
      m.uc = pick_column(columns.url, url_aliases(), columns.strict, has);
      m.cc = pick_column(columns.caption, caption_aliases(), columns.strict, has);
      m.kc = pick_column(columns.key, key_aliases(), columns.strict, has);
      m.ui = col_index(m.uc);
      m.ci = m.cc.empty() ? -1 : col_index(m.cc);
      m.ki = m.kc.empty() ? -1 : col_index(m.kc);
    }
  }
}

ListReader::~ListReader() = default;

const std::string& ListReader::path() const {
  return impl_->path;
}
const std::string& ListReader::dir() const {
  return impl_->dir;
}
const ListColumns& ListReader::columns() const {
  return impl_->columns;
}
ListFormat ListReader::format() const {
  return impl_->format;
}
int64_t ListReader::position() const {
  return impl_->position;
}

bool ListReader::next(ListRecord* out) {
  if (!impl_->next_raw(true)) return false;
  impl_->parse(out);
  ++impl_->position;
  return true;
}

bool ListReader::skip() {
  if (!impl_->next_raw(false)) return false;
  ++impl_->position;
  return true;
}

ListFile read_list_file(const std::string& path, const ListColumns& columns) {
  ListReader reader(path, columns);
  ListFile lf;
  lf.path = path;
  lf.dir = reader.dir();
  lf.format = reader.format();
  ListRecord r;
  while (reader.next(&r)) {
    if (!r.error.empty()) lf.malformed++;
    lf.records.push_back(std::move(r));
  }
  return lf;
}

int oom_of(int64_t n) {
  int k = 0;
  int64_t p = 1;
  while (p < n) {
    p *= 10;
    ++k;
  }
  return k;
}

std::string compute_key(int64_t index_in_shard, int64_t shard_id, int64_t samples_per_shard,
                        int oom_shard_count) {
  int oom = oom_of(samples_per_shard);
  int64_t p = 1;
  for (int i = 0; i < oom; ++i) p *= 10;
  std::string s = std::to_string(shard_id * p + index_in_shard);
  size_t width = static_cast<size_t>(oom + oom_shard_count);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

}  // namespace recap::io
