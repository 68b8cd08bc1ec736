// Next-token selection from one row of logits.
//
// Greedy (temperature 0): argmax, ties to the lowest id (torch.argmax semantics).
// Sampling: logits / temperature, then top-k (k > 0), then top-p (nucleus, 0 < p < 1) over
// the probabilities sorted descending (ties by lower id first), then one draw from the
// sequence's own RNG. Every sequence carries its own RNG seeded from (seed, sample key,
// caption index), so a caption does not depend on which other samples share its batch or
// the order in which they run.
//
// Only ids < vocab_limit are ever returned (the model may have more rows than the tokenizer
// has tokens, e.g. 128257 vs 128256); NaN logits are never chosen.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace recap::engine {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  uint64_t seed = 0;
  bool greedy() const { return temperature <= 0.f; }
};

// splitmix64-seeded xoshiro256** (small, fast, reproducible across platforms).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t next();
  double uniform();  // [0, 1)
 private:
  uint64_t s_[4];
};

// Stable 64-bit hash (FNV-1a) used to derive per-sample seeds.
uint64_t hash64(const std::string& s, uint64_t h = 1469598103934665603ull);
uint64_t sample_seed(uint64_t base_seed, const std::string& key, int caption_index);

// Lowest index of the maximum over logits[0, n).
int32_t argmax_lowest(const float* logits, int64_t n);

// Selects the next token from logits[0, vocab_limit). `scratch` is reused between calls.
int32_t sample_token(const float* logits, int64_t vocab_limit, const SamplingParams& p, Rng& rng,
                     std::vector<std::pair<float, int32_t>>* scratch);

}  // namespace recap::engine
