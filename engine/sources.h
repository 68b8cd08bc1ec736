// Input shards and the samples in them.
//
// List inputs (--list, brace patterns allowed): each list file is cut into shards of
// --samples-per-shard data lines, numbered globally in input order (img2dataset style:
// names "00000", "00001", ...; keys from the key column, else img2dataset's compute_key).
// A malformed line keeps its position and key and becomes a failed sample. Planning only
// counts records; a list's rows are parsed when a shard of it is opened (open_shard).
// Tar inputs (--input, webdataset shards): one output shard per input tar, named after the
// input's basename (without .tar/.tar.gz/.tgz); members are grouped into samples by key; keys
// are preserved. With both kinds, list shard numbers skip every name a tar input uses, so
// no two shards share a name (plan_shards).
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

struct SampleInput {
  int64_t index = 0;  // position in its shard
  std::string key;
  std::string url;      // list inputs: as written; tar inputs: from the member json, if any
  std::string caption;  // original caption
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // pass-through columns
  std::string base_dir;           // relative image paths are resolved against it
  std::string parse_error;        // malformed list line ("file:line: ...")
  bool has_inline_image = false;  // tar inputs carry the bytes
  std::string image_bytes;
  std::string image_ext;
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
};

// Expands patterns, counts each list's records (count_list_records: no row is parsed or
// kept, so planning 10,000 lists costs one read of each, not a parse) and returns every shard
// in input order. Throws InputError (missing list/tar, bad list header, corrupt .gz,
// duplicate tar names, no input at all).
std::vector<ShardSpec> plan_shards(const InputOptions& opts, std::vector<std::string>* warnings);

// The number of records io::read_list_file(path, columns) would return (data lines that are
// not blank, malformed ones included; the header line of a TSV/CSV is checked, not counted),
// found with a byte scan of the (decompressed) file. Throws InputError where read_list_file
// throws ListError.
int64_t count_list_records(const std::string& path, const io::ListColumns& columns);

// Iterates the samples of one shard in order.
class SampleStream {
 public:
  virtual ~SampleStream() = default;
  // False at the end. Throws InputError when the input turns out unreadable midway (a
  // corrupt tar); samples returned before remain valid.
  virtual bool next(SampleInput* out) = 0;
};

std::unique_ptr<SampleStream> open_shard(const ShardSpec& spec, const InputOptions& opts);

}  // namespace recap::engine
