// Sample lists: JSONL, TSV/CSV with a header line, or plain text (one URL per line), each
// optionally gzip-compressed (.gz, read through zlib), and brace patterns naming many files
// ("lists/{00000..00099}.jsonl"). A malformed line never stops a run: it becomes a
// ListRecord with `error` set ("file:line: what is wrong"), so it keeps its position (and the
// key derived from it) and is counted and reported downstream.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace recap::io {

struct ListError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Expands every {A..B} range (zero padding kept when A is written with leading zeros, e.g.
// {00000..00099}) and {a,b,c} alternative group, left to right, into the list of names in
// order. A string without braces expands to itself. Throws ListError on an unbalanced brace
// or a range with more than 10,000,000 names.
std::vector<std::string> expand_braces(const std::string& pattern);

// Column names. When a configured name is absent from a file, well-known img2dataset /
// DataComp spellings are tried (url: URL, image_url, img_url, link, image; caption: TEXT,
// text, org_caption, alt, alt_text, title; key: id, sample_id, uid) unless `strict` is set.
struct ListColumns {
  std::string url = "url";
  std::string caption = "caption";
  std::string key = "key";
  bool strict = false;
};

enum class ListFormat { Jsonl, Tsv, Csv, Text };
// From the name (".gz" stripped): .jsonl/.json/.ndjson, .tsv, .csv, .txt. Throws ListError.
ListFormat list_format_from_name(const std::string& path);

struct ListRecord {
  int64_t line = 0;     // 1-based line number in the (decompressed) file
  std::string url;      // as written (relative paths are relative to the list's directory)
  std::string caption;  // original caption ("" when the column is absent)
  std::string key;      // "" when the file has no key column
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // every other column, passed through
  std::string error;  // non-empty: malformed line, "file:line: reason"
};

struct ListFile {
  std::string path;
  std::string dir;  // directory of the list file, base for relative image paths
  ListFormat format = ListFormat::Jsonl;
  std::vector<ListRecord> records;  // every data line (blank lines skipped), malformed included
  int64_t malformed = 0;
};

// Reads a whole list (gzip detected by magic bytes, whatever the name). Throws ListError for
// a missing/unreadable file, a corrupt gzip stream, or a TSV/CSV without the url column;
// per-line problems become records with `error`.
ListFile read_list_file(const std::string& path, const ListColumns& columns = {});

// The TSV/CSV header check of read_list_file, for callers that count records without
// parsing them: splits `line` (CSV quoting rules for Csv) and requires the url column (the
// configured name, else an img2dataset alias unless columns.strict). Throws ListError
// prefixed with `where` ("path:line: ") otherwise. Returns the column names.
std::vector<std::string> check_list_header(ListFormat format, const std::string& line,
                                           const ListColumns& columns, const std::string& where);

// Decompresses (if gzip) a whole file. Throws ListError naming the file.
std::string read_maybe_gzip(const std::string& path);

// img2dataset's key: shard_id * 10^oom_samples + index, zero padded to oom_samples +
// oom_shards digits, with oom_samples = ceil(log10(samples_per_shard)).
std::string compute_key(int64_t index_in_shard, int64_t shard_id, int64_t samples_per_shard,
                        int oom_shard_count = 5);
int oom_of(int64_t n);  // ceil(log10(n)), 0 for n <= 1

}  // namespace recap::io
