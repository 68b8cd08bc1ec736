// Sample lists: JSONL, a JSON array of objects (.json), TSV/CSV with a header line (RFC 4180
// quoting), or plain text (one URL per line), each optionally gzip-compressed (detected by
// content, inflated in bounded chunks as it is read, never whole), and patterns naming many
// files (braces "lists/{00000..00099}.jsonl", globs "lists/*.jsonl"). A malformed record never
// stops a run: it becomes a ListRecord with `error` set ("file:line: what is wrong"), so it
// keeps its position (and the key derived from it) and is counted and reported downstream.
//
// Records. One tokenizer (ListReader) serves the parser and the record counter of the planner,
// so both always agree on how many records a file holds, malformed files included:
//   - JSONL and .txt: one record per line ('\n', one trailing '\r' dropped).
//   - TSV/CSV: RFC 4180 records: a field starting with '"' is quoted and may hold the separator,
//     doubled quotes and line breaks; a quote elsewhere in a field is literal. TSV follows the
//     same rules with a tab separator, because pandas (to_csv, QUOTE_MINIMAL) and pyarrow write
//     TSV that way and img2dataset reads TSV with pyarrow's CSV reader (quote_char '"',
//     double_quote). A quote still open at the end of the file makes the rest of the file one
//     malformed record ("unterminated quoted field").
//   - .json starting with '[' (first byte that is not white space): each element of the array
//     is a record; otherwise the file is read as JSONL. Either way its first record must be a
//     JSON object, and the array must be well formed (closed, elements separated by commas,
//     nothing after it), else the file is refused (ListError) rather than misread.
// Records that hold only spaces and tabs are skipped. A UTF-8 byte order mark at the start of
// the (decompressed) file is skipped. `line` is the line where a record starts. A record longer
// than kMaxListRecordBytes is malformed; its bytes are skipped, never held, so a hostile list
// cannot exhaust memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
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
// or a pattern, range or group naming more than 1,000,000 names.
std::vector<std::string> expand_braces(const std::string& pattern);
// How many names expand_braces(pattern) returns, without building them (a shard count for a
// plan or a check); throws exactly what expand_braces throws.
size_t count_braces(const std::string& pattern);

// Braces first (expand_braces), then each name holding '*', '?' or '[' is globbed (glob(3)
// rules, matches sorted bytewise so every worker numbers shards alike). A name that exists as
// written is kept as is; a glob that matches nothing throws ListError naming the pattern. Names
// without glob characters are returned as written (a missing file is the reader's error).
std::vector<std::string> expand_pattern(const std::string& pattern);

// The longest list record (a line, a CSV/TSV record, a JSON array element) that is read;
// longer ones are malformed records.
inline constexpr size_t kMaxListRecordBytes = size_t(1) << 20;

// Column names. When a configured name is absent from a file, well-known img2dataset /
// DataComp spellings are tried (url: URL, image_url, img_url, link, image; caption: TEXT,
// text, org_caption, alt, alt_text, title; key: id, sample_id, uid) unless `strict` is set.
struct ListColumns {
  std::string url = "url";
  std::string caption = "caption";
  std::string key = "key";
  bool strict = false;
};

enum class ListFormat { Jsonl, Tsv, Csv, Text, JsonArray };
// From the name (".gz" stripped): .jsonl/.json/.ndjson, .tsv, .csv, .txt. Throws ListError.
// Never JsonArray: a .json file's content decides that (ListReader::format).
ListFormat list_format_from_name(const std::string& path);

struct ListRecord {
  int64_t line = 0;        // 1-based line number in the (decompressed) file
  std::string url;         // as written (relative paths are relative to the list's directory)
  std::string caption;     // original caption ("" when the column is absent)
  std::string key;         // the key column's value ("" when absent or empty)
  bool key_given = false;  // the record has the key column (not JSON null), even if empty
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // every other column, passed through
  std::string error;  // non-empty: malformed line, "file:line: reason"
};

struct ListFile {
  std::string path;
  std::string dir;  // directory of the list file, base for relative image paths
  ListFormat format = ListFormat::Jsonl;
  std::vector<ListRecord> records;  // every data record (blank ones skipped), malformed included
  int64_t malformed = 0;
};

// Reads a list one record at a time, holding one record and one chunk of the file. The
// constructor opens the file and reads the TSV/CSV header. Throws ListError for a
// missing/unreadable file, a corrupt or truncated gzip stream (when reading reaches it), a
// TSV/CSV without the url column, a .json that is neither a JSON array of objects nor JSONL;
// per-record problems become records with `error`.
class ListReader {
 public:
  explicit ListReader(const std::string& path, const ListColumns& columns = {});
  ~ListReader();
  ListReader(const ListReader&) = delete;
  ListReader& operator=(const ListReader&) = delete;

  const std::string& path() const;
  const std::string& dir() const;
  const ListColumns& columns() const;
  ListFormat format() const;  // JsonArray for a .json file holding an array
  // Records returned or skipped so far (the index of the next one).
  int64_t position() const;
  // The next record, parsed. False at the end of the file.
  bool next(ListRecord* out);
  // Passes over the next record without parsing or keeping it. False at the end.
  bool skip();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every record of a list (ListReader to the end).
ListFile read_list_file(const std::string& path, const ListColumns& columns = {});

// The TSV/CSV header check of ListReader: splits the header record `line` (RFC 4180 quoting,
// tab or comma) and requires the url column (the configured name, else an img2dataset alias
// unless columns.strict). Throws ListError prefixed with `where` ("path:line: ") otherwise.
// Returns the column names.
std::vector<std::string> check_list_header(ListFormat format, const std::string& line,
                                           const ListColumns& columns, const std::string& where);

// Decompresses (if gzip) a whole file. Throws ListError naming the file. Lists are never
// read this way (ListReader streams them); kept for small files.
std::string read_maybe_gzip(const std::string& path);

// img2dataset's key: shard_id * 10^oom_samples + index, zero padded to oom_samples +
// oom_shards digits, with oom_samples = ceil(log10(samples_per_shard)).
std::string compute_key(int64_t index_in_shard, int64_t shard_id, int64_t samples_per_shard,
                        int oom_shard_count = 5);
int oom_of(int64_t n);  // ceil(log10(n)), 0 for n <= 1

}  // namespace recap::io
