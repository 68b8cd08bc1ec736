#include "io/lists.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "io/fileutil.h"

namespace recap::io {

// ---------------------------------------------------------------- brace expansion

namespace {

constexpr size_t kMaxExpansion = 10'000'000;

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

// Alternatives of one brace group body (without the braces).
std::vector<std::string> group_alternatives(const std::string& body, const std::string& pattern) {
  size_t dots = body.find("..");
  int64_t a = 0, b = 0;
  if (dots != std::string::npos && parse_int(body.substr(0, dots), &a) &&
      parse_int(body.substr(dots + 2), &b)) {
    std::string as = body.substr(0, dots);
    std::string bs = body.substr(dots + 2);
    // Zero padding: a leading zero on either end pads every number to the longer width.
    size_t width = 0;
    if ((as.size() > 1 && as[0] == '0') || (bs.size() > 1 && bs[0] == '0'))
      width = std::max(as.size(), bs.size());
    int64_t n = (a <= b ? b - a : a - b) + 1;
    if (static_cast<size_t>(n) > kMaxExpansion)
      throw ListError("brace range {" + body + "} in '" + pattern + "' names more than 10,000,000 items");
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(n));
    int64_t step = a <= b ? 1 : -1;
    for (int64_t v = a;; v += step) {
      std::string s = std::to_string(v < 0 ? -v : v);
      if (s.size() < width) s.insert(0, width - s.size() - (v < 0 ? 1 : 0), '0');
      if (v < 0) s.insert(0, "-");
      out.push_back(std::move(s));
      if (v == b) break;
    }
    return out;
  }
  // Comma alternatives (nested braces inside an alternative are expanded recursively).
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
  if (parts.size() == 1) return {"{" + body + "}"};  // not a group: literal braces
  std::vector<std::string> out;
  for (auto& p : parts) {
    auto sub = expand_braces(p);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  size_t open = pattern.find('{');
  if (open == std::string::npos) {
    if (pattern.find('}') != std::string::npos)
      throw ListError("unbalanced '}' in pattern '" + pattern + "'");
    return {pattern};
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
  std::string prefix = pattern.substr(0, open);
  if (prefix.find('}') != std::string::npos) throw ListError("unbalanced '}' in pattern '" + pattern + "'");
  auto alts = group_alternatives(pattern.substr(open + 1, close - open - 1), pattern);
  auto rests = expand_braces(pattern.substr(close + 1));
  if (alts.size() * rests.size() > kMaxExpansion)
    throw ListError("pattern '" + pattern + "' names more than 10,000,000 items");
  std::vector<std::string> out;
  out.reserve(alts.size() * rests.size());
  for (auto& a : alts)
    for (auto& r : rests) out.push_back(prefix + a + r);
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
  throw ListError(path + ": unknown list format (expected .jsonl, .tsv, .csv or .txt, optionally .gz)");
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

std::vector<std::string> split_tsv(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t t = line.find('\t', start);
    if (t == std::string::npos) {
      out.push_back(line.substr(start));
      return out;
    }
    out.push_back(line.substr(start, t - start));
    start = t + 1;
  }
}

// RFC 4180 fields on one line (quoted fields may contain commas and doubled quotes; a
// record spanning lines is not supported and is reported as malformed).
bool split_csv(const std::string& line, std::vector<std::string>* out, std::string* err) {
  out->clear();
  std::string cur;
  size_t i = 0;
  for (;;) {
    cur.clear();
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size()) {
          *err = "unterminated quoted field";
          return false;
        }
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cur.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        cur.push_back(line[i++]);
      }
      if (i < line.size() && line[i] != ',') {
        *err = "characters after a closing quote";
        return false;
      }
    } else {
      while (i < line.size() && line[i] != ',') cur.push_back(line[i++]);
    }
    out->push_back(cur);
    if (i >= line.size()) return true;
    ++i;  // the comma
  }
}

std::string json_scalar_text(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

}  // namespace

std::vector<std::string> check_list_header(ListFormat format, const std::string& line,
                                           const ListColumns& columns, const std::string& where) {
  std::vector<std::string> header;
  if (format == ListFormat::Csv) {
    std::string err;
    if (!split_csv(line, &header, &err)) throw ListError(where + "malformed header (" + err + ")");
  } else {
    header = split_tsv(line);
  }
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

ListFile read_list_file(const std::string& path, const ListColumns& columns) {
  ListFile lf;
  lf.path = path;
  lf.dir = dir_name(path);
  lf.format = list_format_from_name(path);
  std::string text = read_maybe_gzip(path);

  // Split into lines (LF or CRLF). Line numbers are 1-based over the decompressed text.
  std::vector<std::pair<int64_t, std::string>> lines;
  {
    int64_t ln = 0;
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      size_t end = nl == std::string::npos ? text.size() : nl;
      ++ln;
      std::string line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.emplace_back(ln, std::move(line));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  auto where = [&](int64_t ln) { return path + ":" + std::to_string(ln) + ": "; };
  auto blank = [](const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; };

  if (lf.format == ListFormat::Jsonl) {
    for (auto& [ln, line] : lines) {
      if (blank(line)) continue;
      ListRecord r;
      r.line = ln;
      nlohmann::ordered_json j;
      try {
        j = nlohmann::ordered_json::parse(line);
      } catch (const std::exception& e) {
        r.error = where(ln) + "invalid JSON (" + std::string(e.what()) + ")";
      }
      if (r.error.empty() && !j.is_object()) r.error = where(ln) + "a JSON object was expected";
      if (r.error.empty()) {
        auto has = [&](const std::string& c) { return !c.empty() && j.contains(c); };
        std::string uc = pick_column(columns.url, url_aliases(), columns.strict, has);
        std::string cc = pick_column(columns.caption, caption_aliases(), columns.strict, has);
        std::string kc = pick_column(columns.key, key_aliases(), columns.strict, has);
        if (uc.empty()) {
          r.error = where(ln) + "no '" + columns.url + "' column";
        } else if (!j[uc].is_string() || j[uc].get<std::string>().empty()) {
          r.error = where(ln) + "column '" + uc + "' is not a non-empty string";
        } else {
          r.url = j[uc].get<std::string>();
          if (!cc.empty()) r.caption = json_scalar_text(j[cc]);
          if (!kc.empty()) r.key = json_scalar_text(j[kc]);
          for (auto it = j.begin(); it != j.end(); ++it) {
            if (it.key() == uc || it.key() == cc || it.key() == kc) continue;
            r.extra[it.key()] = it.value();
          }
        }
      }
      if (!r.error.empty()) lf.malformed++;
      lf.records.push_back(std::move(r));
    }
    return lf;
  }

  if (lf.format == ListFormat::Text) {
    for (auto& [ln, line] : lines) {
      if (blank(line)) continue;
      ListRecord r;
      r.line = ln;
      size_t a = line.find_first_not_of(" \t"), b = line.find_last_not_of(" \t");
      r.url = line.substr(a, b - a + 1);
      lf.records.push_back(std::move(r));
    }
    return lf;
  }

  // TSV / CSV: header line first.
  size_t first = 0;
  while (first < lines.size() && blank(lines[first].second)) ++first;
  if (first == lines.size()) return lf;  // empty list
  const bool csv = lf.format == ListFormat::Csv;
  std::string err;
  const std::vector<std::string> header =
      check_list_header(lf.format, lines[first].second, columns, where(lines[first].first));
  auto col_index = [&](const std::string& c) -> int {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == c) return static_cast<int>(i);
    return -1;
  };
  auto has = [&](const std::string& c) { return !c.empty() && col_index(c) >= 0; };
  std::string uc = pick_column(columns.url, url_aliases(), columns.strict, has);
  std::string cc = pick_column(columns.caption, caption_aliases(), columns.strict, has);
  std::string kc = pick_column(columns.key, key_aliases(), columns.strict, has);
  int ui = col_index(uc), ci = cc.empty() ? -1 : col_index(cc), ki = kc.empty() ? -1 : col_index(kc);
  std::vector<std::string> fields;
  for (size_t li = first + 1; li < lines.size(); ++li) {
    auto& [ln, line] = lines[li];
    if (blank(line)) continue;
    ListRecord r;
    r.line = ln;
    bool ok = true;
    if (csv) {
      ok = split_csv(line, &fields, &err);
      if (!ok) r.error = where(ln) + err;
    } else {
      fields = split_tsv(line);
    }
    if (ok && fields.size() != header.size()) {
      r.error = where(ln) + "expected " + std::to_string(header.size()) + " fields, found " +
                std::to_string(fields.size());
      ok = false;
    }
    if (ok && fields[static_cast<size_t>(ui)].empty()) {
      r.error = where(ln) + "empty '" + uc + "' field";
      ok = false;
    }
    if (ok) {
      r.url = fields[static_cast<size_t>(ui)];
      if (ci >= 0) r.caption = fields[static_cast<size_t>(ci)];
      if (ki >= 0) r.key = fields[static_cast<size_t>(ki)];
      for (size_t i = 0; i < header.size(); ++i) {
        if (static_cast<int>(i) == ui || static_cast<int>(i) == ci || static_cast<int>(i) == ki) continue;
        r.extra[header[i]] = fields[i];
      }
    }
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
