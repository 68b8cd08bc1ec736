// The run fingerprint: a 16-hex-digit hash over everything that changes what a caption
// looks like (engine version, weights identity, precision, KV dtype, tokenizer, template,
// prompt, sampling, max tokens, captions per image, post-processing). Batch size, threads
// and I/O settings are excluded: they must not change outputs (batch invariance).
//
// Weights identity is cheap on purpose (checkpoints are 16 GB): every *.safetensors and
// *.json file's name, size and the hash of its first 1 MiB (the safetensors header with all
// names, dtypes, shapes and offsets, plus the start of the data).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace recap::engine {

std::string hex64(uint64_t v);
// Identity of a checkpoint directory as JSON (file -> {size, head_hash}).
nlohmann::ordered_json directory_identity(const std::string& dir);
// Hash of a file's whole content ("" when unreadable).
std::string file_hash(const std::string& path);
std::string fingerprint_of(const nlohmann::ordered_json& material);

}  // namespace recap::engine
