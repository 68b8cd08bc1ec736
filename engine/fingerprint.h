// The fingerprint of a shard: a 16-hex-digit hash over everything that decides the shard's
// content, and the MATERIAL it is computed from (a JSON object of named fields), which is
// recorded beside the hash in the shard's partial log header and its {shard}_stats.json, so
// that a rerun with any change can say which field changed ("samples_per_shard was 4, now 8").
//
// The material of a shard = the run's material (engine version, weights content, precision,
// KV dtype, tokenizer, template and prompt, generation and post-processing settings) plus
// the shard's own plan (input file and its identity, first record, record count,
// samples-per-shard, columns, shard number). Batch size, threads and I/O settings are
// excluded: they must not change outputs (batch invariance).
//
// Weights content covers every byte: XXH3-64 streamed over each *.safetensors and *.json
// file of the directory. A quantized cache written by `recap-engine quantize` records the
// XXH3-64 of its data section in its header (models/quantized_cache.h); for it the hash of
// the header (which holds that content hash) stands for the file, so the cache is not reread.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace recap::engine {

std::string hex64(uint64_t v);
// XXH3-64 of a whole file, streamed (never held in memory), as 16 hex digits. Throws
// std::runtime_error naming the file when it cannot be read.
std::string file_xxh3(const std::string& path);
// Identity of a checkpoint directory as JSON: every *.safetensors and *.json file ->
// {"size", "xxh3"} (a quantized cache file: {"size", "header_xxh3"}). Throws
// std::runtime_error naming a file that cannot be read.
nlohmann::ordered_json directory_identity(const std::string& dir);
// XXH3-64 of a file's whole content ("" when unreadable).
std::string file_hash(const std::string& path);
// The hash of a material object (its compact JSON dump).
std::string fingerprint_of(const nlohmann::ordered_json& material);

// The differences between two materials as "field was OLD, now NEW" phrases joined by "; "
// (nested objects give dotted field names, e.g. "weights.model.safetensors.xxh3"; a field
// only on one side reads "was absent" / "now absent"). At most `max_fields` phrases, then
// "and N more field(s)". Long values are shortened. "" when they are equal.
std::string describe_material_change(const nlohmann::ordered_json& was, const nlohmann::ordered_json& now,
                                     size_t max_fields = 4);

}  // namespace recap::engine
