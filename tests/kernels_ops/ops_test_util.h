// Shared helpers of the ops/attention kernel tests: the ISAs to test, seeded random data,
// and junk-filled buffers whose padding must come back untouched.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/isa.h"

namespace recap::kernels::test {

// RECAP_FORCE_ISA set: just that ISA (CI runs the suite once per forced ISA). Otherwise every
// ISA this CPU and OS can run, so a plain `ctest` run covers all paths.
inline std::vector<Isa> isas_to_test() {
  const char* forced = std::getenv("RECAP_FORCE_ISA");
  if (forced && *forced) return {parse_isa(forced)};
  std::vector<Isa> out = {Isa::Ref};
  const Isa best = best_isa();
  if (best >= Isa::Avx2) out.push_back(Isa::Avx2);
  if (best >= Isa::Avx512) out.push_back(Isa::Avx512);
  return out;
}

// Restores the ISA active before the test on scope exit.
struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_active_isa(saved); }
};

// Junk pattern for padding/unused memory: a signalling-looking NaN with a payload, so any
// read of it poisons results and any write over it is detected bit-exactly.
inline float junk() {
  const uint32_t bits = 0x7fa5a5a5u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline bool is_junk(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits == 0x7fa5a5a5u;
}

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// rows x dim matrix with row stride ld >= dim; the ld - dim padding holds junk.
inline std::vector<float> random_rows(int64_t rows, int64_t dim, int64_t ld, uint32_t seed, float lo = -1.0f,
                                      float hi = 1.0f) {
  std::vector<float> m(size_t(rows * ld), junk());
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim; ++i) m[size_t(r * ld + i)] = dist(rng);
  return m;
}

constexpr double kU = 1.0 / (1 << 24);  // unit roundoff of f32 (half an ulp of 1)

}  // namespace recap::kernels::test
