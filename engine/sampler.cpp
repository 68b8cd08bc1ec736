#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace recap::engine {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}
}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t hash64(const std::string& s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t sample_seed(uint64_t base_seed, const std::string& key, int caption_index) {
  uint64_t h = hash64(key, 1469598103934665603ull ^ base_seed);
  h ^= static_cast<uint64_t>(caption_index) * 0x9e3779b97f4a7c15ull;
  uint64_t x = h;
  return splitmix64(x);
}

int32_t argmax_lowest(const float* logits, int64_t n) {
  int32_t best = -1;
  float bv = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    float v = logits[i];
    if (std::isnan(v)) continue;
    if (best < 0 || v > bv) {
      best = static_cast<int32_t>(i);
      bv = v;
    }
  }
  if (best < 0) throw std::runtime_error("sampler: every logit is NaN");
  return best;
}

int32_t sample_token(const float* logits, int64_t vocab_limit, const SamplingParams& p, Rng& rng,
                     std::vector<std::pair<float, int32_t>>* scratch) {
  if (vocab_limit <= 0) throw std::invalid_argument("sampler: empty vocabulary");
  if (p.greedy()) return argmax_lowest(logits, vocab_limit);
  auto& c = *scratch;
  c.clear();
  for (int64_t i = 0; i < vocab_limit; ++i)
    if (!std::isnan(logits[i])) c.emplace_back(logits[i], static_cast<int32_t>(i));
  if (c.empty()) throw std::runtime_error("sampler: every logit is NaN");
  auto desc = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t keep = c.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(c.begin(), c.begin() + static_cast<long>(keep), c.end(), desc);
    c.resize(keep);
  } else {
    std::sort(c.begin(), c.end(), desc);
  }
  // Softmax of logits / T in double, max-subtracted.
  const double inv_t = 1.0 / static_cast<double>(p.temperature);
  const double mx = static_cast<double>(c[0].first) * inv_t;
  std::vector<double> probs(c.size());
  double sum = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(c[i].first) * inv_t - mx);
    sum += probs[i];
  }
  if (p.top_p > 0.f && p.top_p < 1.f) {
    // Smallest prefix whose mass reaches top_p (the token crossing the threshold is kept).
    double cum = 0;
    size_t n = 0;
    while (n < c.size()) {
      cum += probs[n] / sum;
      ++n;
      if (cum >= static_cast<double>(p.top_p)) break;
    }
    sum = 0;
    for (size_t i = 0; i < n; ++i) sum += probs[i];
    probs.resize(n);
  }
  double u = rng.uniform() * sum;
  double acc = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    acc += probs[i];
    if (u < acc) return c[i].second;
  }
  return c[probs.size() - 1].second;
}

}  // namespace recap::engine
