// Input shards and the samples in them.
//
// List inputs (--list, brace and glob patterns, io::expand_pattern): each list file is cut into
// shards of --samples-per-shard records, numbered globally in input order (img2dataset style:
// names "00000", "00001", ...; keys from the key column, else img2dataset's compute_key).
// A malformed record keeps its position and key and becomes a failed sample; so does a record
// whose key is not usable (io::key_problem) or repeats an earlier key of its shard. Planning
// only counts records; a shard's rows (only those) are read when it is opened (open_shard).
// Tar inputs (--input, webdataset shards, plain or compressed): one output shard per input
// tar, named after the input's basename without .tar/.tar.gz/.tgz/...; members are grouped
// into samples exactly as webdataset groups them (see TarStream in sources.cpp and
// docs/CAPTION.md); keys are preserved, bad and duplicate keys fail their sample.
// With both kinds, list shard numbers skip every name a tar input uses, so no two shards
// share a name (plan_shards).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/lists.h"
#include "io/tar.h"

namespace recap::engine {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A member of a webdataset sample carried to the output unchanged (tar inputs).
struct CarriedMember {
  std::string suffix;  // as written after "{key}." in the input (case kept: "seg.jpg", "NPY")
  std::string bytes;
};

struct SampleInput {
  int64_t index = 0;    // position in its shard
  std::string key;      // tar inputs with a bad key: io::printable_key() of it (the sample fails)
  std::string url;      // list inputs: as written; tar inputs: from the member json, if any
  std::string caption;  // original caption
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // pass-through columns
  std::string base_dir;           // relative image paths are resolved against it
  std::string parse_error;        // malformed list line ("file:line: ...") or tar sample
  std::string input_status;       // with parse_error: the status to record ("" = failed_to_parse)
  bool has_inline_image = false;  // tar inputs carry the bytes
  std::string image_bytes;
  std::string image_ext;  // tar inputs: the image member's suffix as written ("JPEG" stays "JPEG")
  // Tar inputs: the sample's {key}.txt (kept in the output json as org_caption), and every
  // member other than the image, .txt and .json, in input order.
  bool has_caption_member = false;
  std::vector<CarriedMember> carried;
  std::string source;  // "list.jsonl:12" or "shard.tar" for messages
};

struct ShardSpec {
  std::string name;  // output shard name
  bool is_tar = false;
  std::string path;          // list file or tar
  int64_t shard_id = 0;      // for compute_key
  int64_t first_record = 0;  // list: first record of the file in this shard
  int64_t n_records = 0;     // list: records in this shard (tar: unknown, -1)
};

struct InputOptions {
  std::vector<std::string> lists;  // patterns
  std::vector<std::string> tars;   // patterns
  io::ListColumns columns;
  int64_t samples_per_shard = 10000;
  // Tar inputs: the largest member read (the image: --max-image-bytes); a sample's members
  // together may hold 4 times as much. Larger ones are skipped unread, failing their sample.
  uint64_t max_member_bytes = 64ull << 20;
};

// Expands patterns (a glob matching nothing is an InputError naming it), counts each list's
// records (count_list_records: no row is parsed or kept, so planning 10,000 lists costs one read
// of each, not a parse) and returns every shard in input order. Throws InputError (missing
// list/tar, bad list header, corrupt .gz, a refused .json, duplicate tar names, no input).
std::vector<ShardSpec> plan_shards(const InputOptions& opts, std::vector<std::string>* warnings);

// The number of records io::read_list_file(path, columns) returns (not blank, malformed ones
// included; the header of a TSV/CSV is checked, not counted), found by io::ListReader::skip,
// the reader's own tokenizer, keeping no rows. Throws InputError where read_list_file throws
// ListError (missing file, corrupt or truncated .gz, header without the url column, a .json
// that is neither a JSON array of objects nor JSONL).
int64_t count_list_records(const std::string& path, const io::ListColumns& columns);

// Iterates the samples of one shard in order.
class SampleStream {
 public:
  virtual ~SampleStream() = default;
  // False at the end. Throws InputError when the input turns out unreadable midway (a
  // corrupt tar); samples returned before remain valid.
  virtual bool next(SampleInput* out) = 0;
  // Warnings about input skipped while reading (members without a suffix, directories,
  // links: "file: offset N: ..."), taken by the caller after each next().
  std::vector<std::string> take_warnings() {
    std::vector<std::string> w;
    w.swap(warnings_);
    return w;
  }

 protected:
  std::vector<std::string> warnings_;
};

std::unique_ptr<SampleStream> open_shard(const ShardSpec& spec, const InputOptions& opts);

}  // namespace recap::engine
