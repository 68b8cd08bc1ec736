// Attention kernels (kernels/attention.h): every dispatched ISA against a naive full-matrix
// softmax(QK^T)V computed in double from the same (cache-rounded) K/V: GQA 8/2 and 4/4,
// paging over shuffled non-contiguous blocks of size 16 and 7, lengths 1, 7, 577, 700, full
// prefill, chunked prefill (n_q > 1 at start_pos > 0) and single-token decode, f32/bf16/f16
// caches; the batched call (attention_paged_causal_batch) bit-identical to one call per
// sequence on mixed batches; dense bidirectional attention at T = 1, 17, 577. Error bound:
// docs/NUMERICS.md.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/attention.h"
#include "kernels/isa.h"
#include "ops_test_util.h"

namespace recap::kernels {
namespace {

using test::is_junk;
using test::IsaGuard;
using test::isas_to_test;
using test::junk;
using test::kU;
using test::random_rows;

// Independent rounding of f32 to the cache dtype (round to nearest even, computed with
// frexp/ldexp in double, not with bit tricks as the kernels do).
float round_to_bits(float x, int mantissa_bits, int min_exp) {
  if (!std::isfinite(x) || x == 0.0f) return x;
  int e;
  std::frexp(double(x), &e);  // x = f * 2^e, 0.5 <= |f| < 1
  const int exp = std::max(e, min_exp);
  const double scale = std::ldexp(1.0, mantissa_bits - exp);
  return float(std::nearbyint(double(x) * scale) / scale);  // default rounding mode: to nearest even
}
float round_bf16(float x) {
  return round_to_bits(x, 8, -125);
}
float round_f16(float x) {
  const float r = round_to_bits(x, 11, -13);
  return std::fabs(r) > 65504.0f ? std::copysign(INFINITY, r) : r;
}
float round_cache(float x, KvDType t) {
  return t == KvDType::F32 ? x : t == KvDType::BF16 ? round_bf16(x) : round_f16(x);
}

// out[i][h] = softmax_j<=limit(i) (scale q_ih . k_j,kvh) v_j,kvh in double, plus the error
// bound of an f32 tiled online-softmax implementation of it (docs/NUMERICS.md):
//   |err| <= [ 2 (hd + 4) u max_j scale |q| . |k_j|  +  (n_keys + 8) u ] * max_j |v_j[d]|-ish
// where the first term is the f32 dot products perturbing the probabilities (relative
// perturbation of every weight by delta moves a convex combination by <= 2 delta max|v|)
// and the second the f32 accumulation of n_keys weighted values and of the denominator.
struct NaiveResult {
  std::vector<double> out;  // [n_q][n_heads*hd]
  std::vector<double> tol;
};

NaiveResult naive_attention(const std::vector<float>& q, int64_t ldq, int64_t n_q, int64_t start_pos,
                            int64_t n_heads, int64_t n_kv, int64_t hd, const std::vector<float>& k,
                            const std::vector<float>& v, int64_t ldkv, float scale, bool causal,
                            int64_t n_keys_total) {
  NaiveResult r;
  r.out.assign(size_t(n_q * n_heads * hd), 0.0);
  r.tol.assign(r.out.size(), 0.0);
  const int64_t group = n_heads / n_kv;
  std::vector<double> s(static_cast<size_t>(n_keys_total));
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t kvh = h / group;
      const int64_t n_keys = causal ? start_pos + i + 1 : n_keys_total;
      const float* qr = q.data() + i * ldq + h * hd;
      double mx = -INFINITY, max_abs_dot = 0;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float* kr = k.data() + j * ldkv + kvh * hd;
        double dot = 0, abs_dot = 0;
        for (int64_t d = 0; d < hd; ++d)
          dot += double(qr[d]) * kr[d], abs_dot += std::fabs(double(qr[d]) * kr[d]);
        s[size_t(j)] = dot * scale;
        mx = std::max(mx, s[size_t(j)]);
        max_abs_dot = std::max(max_abs_dot, abs_dot * std::fabs(scale));
      }
      double denom = 0;
      for (int64_t j = 0; j < n_keys; ++j) denom += (s[size_t(j)] = std::exp(s[size_t(j)] - mx));
      const double weight_err = 2.0 * (2.0 * double(hd + 4) * kU * max_abs_dot + 8.0 * kU);
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0, vmax = 0;
        for (int64_t j = 0; j < n_keys; ++j) {
          const double vv = v[size_t(j * ldkv + kvh * hd + d)];
          acc += s[size_t(j)] * vv;
          vmax = std::max(vmax, std::fabs(vv));
        }
        const size_t o = size_t(i * n_heads * hd + h * hd + d);
        r.out[o] = acc / denom;
        r.tol[o] = (weight_err + double(n_keys + 8) * kU) * vmax + 1e-30;
      }
    }
  return r;
}

struct PagedCase {
  int64_t n_heads, n_kv, hd, block_size, total_len, n_q;  // n_q queries end at total_len
  KvDType dtype;
};

std::string describe(const PagedCase& c) {
  return "heads=" + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) + " hd=" + std::to_string(c.hd) +
         " bs=" + std::to_string(c.block_size) + " len=" + std::to_string(c.total_len) +
         " n_q=" + std::to_string(c.n_q) + " dtype=" + std::to_string(int(c.dtype));
}

// Builds a paged cache with shuffled block ids (and spare junk-filled blocks), writes the
// sequence's K/V with kv_cache_write (prefix first, then the query chunk, as an engine does),
// runs the dispatched attention for the last n_q positions and compares with naive.
void run_paged_case(const PagedCase& c, uint32_t seed) {
  const int64_t hd = c.hd, L = c.total_len, start_pos = L - c.n_q;
  const int64_t n_blocks = (L + c.block_size - 1) / c.block_size;
  const int64_t pool_blocks = 2 * n_blocks + 3;
  std::vector<int32_t> ids(static_cast<size_t>(pool_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  std::vector<int32_t> block_table(ids.begin(), ids.begin() + n_blocks);

  const int64_t esize = c.dtype == KvDType::F32 ? 4 : 2;
  const int64_t block_stride = c.n_kv * c.block_size * hd + 5;  // a gap between blocks too
  std::vector<uint8_t> k_pool(size_t(pool_blocks * block_stride * esize)), v_pool(k_pool.size());
  // Junk everywhere: f32 NaN pattern, or 16-bit NaN 0x7fa5 (bf16 NaN; f16 NaN too).
  if (esize == 4) {
    const float j = junk();
    for (size_t i = 0; i < k_pool.size(); i += 4)
      std::memcpy(&k_pool[i], &j, 4), std::memcpy(&v_pool[i], &j, 4);
  } else {
    const uint16_t j = 0x7fa5;
    for (size_t i = 0; i < k_pool.size(); i += 2)
      std::memcpy(&k_pool[i], &j, 2), std::memcpy(&v_pool[i], &j, 2);
  }
  KvCacheView cache;
  cache.dtype = c.dtype;
  cache.n_kv_heads = c.n_kv;
  cache.head_dim = hd;
  cache.block_size = c.block_size;
  cache.k_base = k_pool.data();
  cache.v_base = v_pool.data();
  cache.block_stride = block_stride;

  const int64_t ldkv = c.n_kv * hd + 3;
  const auto k = random_rows(L, c.n_kv * hd, ldkv, seed + 1, -1.0f, 1.0f);
  const auto v = random_rows(L, c.n_kv * hd, ldkv, seed + 2, -1.0f, 1.0f);
  const int64_t ldq = c.n_heads * hd + 7, ldo = c.n_heads * hd + 2;
  // Queries scaled up so the softmax is peaked (not a plain average).
  const auto q = random_rows(c.n_q, c.n_heads * hd, ldq, seed + 3, -3.0f, 3.0f);
  if (start_pos > 0) kv_cache_write(cache, block_table.data(), 0, start_pos, k.data(), ldkv, v.data(), ldkv);
  kv_cache_write(cache, block_table.data(), start_pos, c.n_q, k.data() + start_pos * ldkv, ldkv,
                 v.data() + start_pos * ldkv, ldkv);

  std::vector<float> k_rounded(k.size()), v_rounded(v.size());
  for (size_t i = 0; i < k.size(); ++i)
    k_rounded[i] = round_cache(k[i], c.dtype), v_rounded[i] = round_cache(v[i], c.dtype);
  const float scale = 1.0f / std::sqrt(float(hd));
  const auto expect = naive_attention(q, ldq, c.n_q, start_pos, c.n_heads, c.n_kv, hd, k_rounded, v_rounded,
                                      ldkv, scale, true, L);

  std::vector<float> out(size_t(c.n_q * ldo), junk());
  attention_paged_causal(q.data(), ldq, c.n_q, start_pos, c.n_heads, cache, block_table.data(), scale,
                         out.data(), ldo);
  for (int64_t i = 0; i < c.n_q; ++i) {
    for (int64_t d = c.n_heads * hd; d < ldo; ++d)
      ASSERT_TRUE(is_junk(out[size_t(i * ldo + d)])) << "padding written";
    for (int64_t e = 0; e < c.n_heads * hd; ++e) {
      const size_t o = size_t(i * c.n_heads * hd + e);
      ASSERT_NEAR(out[size_t(i * ldo + e)], expect.out[o], expect.tol[o])
          << isa_name(active_isa()) << " " << describe(c) << " query " << i << " elem " << e;
    }
  }
}

TEST(KernelsAttention, KvCacheWriteRoundsLikeReference) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (KvDType dt : {KvDType::F32, KvDType::BF16, KvDType::F16})
      for (int64_t hd : {1, 7, 16, 37, 64}) {
        const int64_t n_kv = 3, bs = 5, L = 23, n_blocks = 5;
        const int64_t esize = dt == KvDType::F32 ? 4 : 2, stride = n_kv * bs * hd;
        std::vector<uint8_t> kp(size_t(n_blocks * stride * esize)), vp(kp.size()), kr(kp.size()),
            vr(kp.size());
        std::vector<int32_t> bt = {3, 0, 4, 1, 2};
        KvCacheView c{dt, n_kv, hd, bs, kp.data(), vp.data(), stride};
        KvCacheView cr{dt, n_kv, hd, bs, kr.data(), vr.data(), stride};
        // Values spanning the f16 range edges: subnormals, ties, overflow.
        auto k = random_rows(L, n_kv * hd, n_kv * hd, uint32_t(hd), -70000.0f, 70000.0f);
        auto v = random_rows(L, n_kv * hd, n_kv * hd, uint32_t(hd + 9), -1e-4f, 1e-4f);
        k[0] = 65520.0f, k[1] = -65519.0f, k[2] = 1.0f + 1.0f / 2048, v[0] = 5.96e-8f, v[1] = 2.98e-8f,
        v[2] = NAN;
        kv_cache_write(c, bt.data(), 0, L, k.data(), n_kv * hd, v.data(), n_kv * hd);
        ref::kv_cache_write(cr, bt.data(), 0, L, k.data(), n_kv * hd, v.data(), n_kv * hd);
        ASSERT_EQ(0, std::memcmp(kp.data(), kr.data(), kp.size())) << isa_name(isa) << " dtype " << int(dt);
        ASSERT_EQ(0, std::memcmp(vp.data(), vr.data(), vp.size())) << isa_name(isa) << " dtype " << int(dt);
        // Stored values equal the independent rounding (NaN stays NaN).
        for (int64_t p = 0; p < L; ++p)
          for (int64_t h = 0; h < n_kv; ++h)
            for (int64_t d = 0; d < hd; ++d) {
              const int64_t elem = bt[size_t(p / bs)] * stride + (h * bs + p % bs) * hd + d;
              for (int kv = 0; kv < 2; ++kv) {
                const uint8_t* pool = kv == 0 ? kp.data() : vp.data();
                const float src = (kv == 0 ? k : v)[size_t(p * n_kv * hd + h * hd + d)];
                float got;
                if (dt == KvDType::F32) {
                  std::memcpy(&got, pool + elem * 4, 4);
                } else {
                  uint16_t bits;
                  std::memcpy(&bits, pool + elem * 2, 2);
                  if (dt == KvDType::BF16) {
                    const uint32_t b32 = uint32_t(bits) << 16;
                    std::memcpy(&got, &b32, 4);
                  } else {
                    // decode binary16 in double
                    const int e = (bits >> 10) & 31, m = bits & 1023;
                    const double mag = e == 31  ? (m ? NAN : INFINITY)
                                       : e == 0 ? std::ldexp(double(m), -24)
                                                : std::ldexp(double(m | 1024), e - 25);
                    got = float((bits & 0x8000) ? -mag : mag);
                  }
                }
                const float want = round_cache(src, dt);
                if (std::isnan(want))
                  ASSERT_TRUE(std::isnan(got));
                else
                  ASSERT_EQ(got, want) << "dtype " << int(dt) << " src " << src;
              }
            }
      }
  }
}

TEST(KernelsAttention, PagedCausalF32) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    uint32_t seed = 1;
    for (auto [nh, nkv] : {std::pair<int64_t, int64_t>{8, 2}, {4, 4}})
      for (int64_t bs : {16, 7})
        for (int64_t len : {1, 7, 577, 700})
          for (int64_t n_q : {len, int64_t(1), std::min<int64_t>(len, 13), (len + 1) / 2}) {
            if (isa == Isa::Ref && len > 100 && n_q > 13) continue;  // scalar ref: keep the run short
            run_paged_case({nh, nkv, 64, bs, len, n_q, KvDType::F32}, seed++);
          }
  }
}

TEST(KernelsAttention, PagedCausalHalfCaches) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    uint32_t seed = 100;
    for (KvDType dt : {KvDType::BF16, KvDType::F16})
      for (int64_t bs : {16, 7})
        for (int64_t len : {1, 7, 577})
          for (int64_t n_q : {len, int64_t(1), std::min<int64_t>(len, 13)}) {
            if (isa == Isa::Ref && len > 100 && n_q > 13) continue;
            run_paged_case({8, 2, 64, bs, len, n_q, dt}, seed++);
          }
  }
}

TEST(KernelsAttention, PagedCausalOddHeadDims) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    uint32_t seed = 300;
    for (int64_t hd : {1, 5, 12, 20, 33, 128})
      for (KvDType dt : {KvDType::F32, KvDType::BF16, KvDType::F16})
        for (int64_t n_q : {1, 9, 70}) run_paged_case({6, 2, hd, 7, 70, n_q, dt}, seed++);
    // Group larger than the 16-row work item target, and a 32/8 LLaMA-3-shaped decode.
    run_paged_case({32, 1, 16, 16, 40, 3, KvDType::F32}, seed++);
    run_paged_case({32, 8, 128, 16, 200, 1, KvDType::BF16}, seed++);
  }
}

// A row's result does not depend on how the queries are chunked into calls, on the other rows
// of its work item, or on the thread count: every row is computed by one thread over the same
// 64-key tiles, and tiles a row cannot see add exact zeros. The engine relies on this for
// batch invariance (prefill in one call == chunked prefill == prefill + decode steps).
TEST(KernelsAttention, ChunkingAndThreadInvariance) {
  IsaGuard guard;
  const int saved_threads = omp_get_max_threads();
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (KvDType dt : {KvDType::F32, KvDType::BF16}) {
      const int64_t n_heads = 8, n_kv = 2, hd = 64, bs = 16, L = 150, row = n_heads * hd;
      const int64_t n_blocks = (L + bs - 1) / bs, esize = dt == KvDType::F32 ? 4 : 2;
      std::vector<int32_t> bt(static_cast<size_t>(n_blocks));
      std::iota(bt.begin(), bt.end(), 0);
      std::shuffle(bt.begin(), bt.end(), std::mt19937(5));
      std::vector<uint8_t> kp(size_t(n_blocks * n_kv * bs * hd * esize)), vp(kp.size());
      KvCacheView c{dt, n_kv, hd, bs, kp.data(), vp.data(), n_kv * bs * hd};
      const auto k = random_rows(L, n_kv * hd, n_kv * hd, 11), v = random_rows(L, n_kv * hd, n_kv * hd, 12);
      kv_cache_write(c, bt.data(), 0, L, k.data(), n_kv * hd, v.data(), n_kv * hd);
      const auto q = random_rows(L, row, row, 13, -3.0f, 3.0f);
      std::vector<float> whole(size_t(L * row)), chunked(whole.size()), one_thread(whole.size());
      const float scale = 0.125f;
      omp_set_num_threads(2);
      attention_paged_causal(q.data(), row, L, 0, n_heads, c, bt.data(), scale, whole.data(), row);
      // Chunks 37 + 1 + 1 + 61 + 50: a prefill, two decode steps, more prefill chunks.
      int64_t pos = 0;
      for (int64_t n : {37, 1, 1, 61, 50}) {
        attention_paged_causal(q.data() + pos * row, row, n, pos, n_heads, c, bt.data(), scale,
                               chunked.data() + pos * row, row);
        pos += n;
      }
      omp_set_num_threads(1);
      attention_paged_causal(q.data(), row, L, 0, n_heads, c, bt.data(), scale, one_thread.data(), row);
      omp_set_num_threads(saved_threads);
      ASSERT_EQ(0, std::memcmp(whole.data(), chunked.data(), whole.size() * 4))
          << isa_name(isa) << " dtype " << int(dt);
      ASSERT_EQ(0, std::memcmp(whole.data(), one_thread.data(), whole.size() * 4)) << isa_name(isa);
    }
  }
}

// A batch of sequences in one paged pool, as the engine's forward has them: every sequence's
// q rows one after another in one buffer (row stride ldq), outputs likewise, block tables of
// shuffled non-contiguous blocks, some sequences sharing whole prefix blocks with another.
struct BatchSeqSpec {
  int64_t start_pos, n_q;
  int shares_prefix_of = -1;  // index of an earlier sequence whose first whole blocks it shares
};

struct PagedBatch {
  int64_t n_heads = 0, n_kv = 0, hd = 0, bs = 0, ldq = 0, ldo = 0;
  KvDType dtype = KvDType::F32;
  std::vector<uint8_t> k_pool, v_pool;
  KvCacheView cache;
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<float>> k_rows, v_rows;  // per sequence: [positions][n_kv*hd]
  std::vector<float> q;
  std::vector<int64_t> first_row;  // per sequence: its first row in q and out
  int64_t total_rows = 0;

  std::vector<PagedAttnSeq> seqs(const std::vector<BatchSeqSpec>& spec, float* out) const {
    std::vector<PagedAttnSeq> v;
    for (size_t s = 0; s < spec.size(); ++s) {
      const bool empty = spec[s].n_q == 0;  // n_q = 0: nothing to do, q and out may be null
      v.push_back(PagedAttnSeq{empty ? nullptr : q.data() + first_row[s] * ldq, ldq, spec[s].n_q,
                               spec[s].start_pos, tables[s].data(),
                               empty ? nullptr : out + first_row[s] * ldo, ldo});
    }
    return v;
  }
};

PagedBatch make_paged_batch(int64_t n_heads, int64_t n_kv, int64_t hd, int64_t bs, KvDType dt,
                            const std::vector<BatchSeqSpec>& spec, uint32_t seed) {
  PagedBatch b;
  b.n_heads = n_heads, b.n_kv = n_kv, b.hd = hd, b.bs = bs, b.dtype = dt;
  b.ldq = n_heads * hd + 3, b.ldo = n_heads * hd + 5;  // junk padding between rows
  int64_t pool_blocks = 3;                             // spares, never in a table
  for (const BatchSeqSpec& s : spec) pool_blocks += (s.start_pos + s.n_q + bs - 1) / bs;
  std::vector<int32_t> ids(static_cast<size_t>(pool_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  size_t next_id = 0;
  const int64_t ldkv = n_kv * hd;
  for (size_t s = 0; s < spec.size(); ++s) {
    const int64_t len = spec[s].start_pos + spec[s].n_q, n_blocks = (len + bs - 1) / bs;
    std::vector<int32_t> table;
    auto k = random_rows(len, ldkv, ldkv, seed + 10 * uint32_t(s) + 1);
    auto v = random_rows(len, ldkv, ldkv, seed + 10 * uint32_t(s) + 2);
    if (spec[s].shares_prefix_of >= 0) {
      // The whole blocks before this sequence's first query position, as fork_table shares them.
      const size_t src = size_t(spec[s].shares_prefix_of);
      const int64_t shared = std::min(spec[s].start_pos, spec[src].start_pos + spec[src].n_q) / bs;
      for (int64_t j = 0; j < shared; ++j) table.push_back(b.tables[src][size_t(j)]);
      std::copy(b.k_rows[src].begin(), b.k_rows[src].begin() + shared * bs * ldkv, k.begin());
      std::copy(b.v_rows[src].begin(), b.v_rows[src].begin() + shared * bs * ldkv, v.begin());
    }
    while (int64_t(table.size()) < n_blocks) table.push_back(ids[next_id++]);
    b.tables.push_back(table);
    b.k_rows.push_back(k);
    b.v_rows.push_back(v);
    b.first_row.push_back(b.total_rows);
    b.total_rows += spec[s].n_q;
  }
  const int64_t esize = dt == KvDType::F32 ? 4 : 2;
  const int64_t block_stride = n_kv * bs * hd + 3;
  b.k_pool.resize(size_t(pool_blocks * block_stride * esize));
  b.v_pool.resize(b.k_pool.size());
  for (size_t i = 0; i < b.k_pool.size(); i += 2) {  // junk: 16-bit NaN halves (an f32 NaN too)
    const uint16_t j = 0x7fa5;
    std::memcpy(&b.k_pool[i], &j, 2), std::memcpy(&b.v_pool[i], &j, 2);
  }
  b.cache = KvCacheView{dt, n_kv, hd, bs, b.k_pool.data(), b.v_pool.data(), block_stride};
  for (size_t s = 0; s < spec.size(); ++s) {
    const int64_t len = spec[s].start_pos + spec[s].n_q;
    kv_cache_write(b.cache, b.tables[s].data(), 0, len, b.k_rows[s].data(), ldkv, b.v_rows[s].data(), ldkv);
  }
  b.q = random_rows(b.total_rows, n_heads * hd, b.ldq, seed + 7, -3.0f, 3.0f);
  return b;
}

// The batch call gives every sequence exactly the bytes of a call for it alone (padding
// between rows untouched too), whatever its neighbours, under every ISA and with threads
// (the single calls are mostly too small to thread, the batch is not); and it is within the
// error bound of the naive double attention, so within twice that of the scalar reference.
TEST(KernelsAttention, PagedCausalBatchBitIdenticalToPerSequence) {
  IsaGuard guard;
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  // Decodes (n_q = 1) at different positions, a prefill from 0, chunked prefills (one long
  // enough for the larger prefill work items), a position-0 decode, an empty sequence, and
  // sequences sharing another's prefix blocks.
  const std::vector<BatchSeqSpec> spec = {{96, 1}, {0, 23},    {37, 1, 1}, {50, 17},    {0, 1}, {130, 1, 0},
                                          {0, 0},  {64, 9, 3}, {9, 1},     {111, 1, 0}, {5, 70}};
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    uint32_t seed = 900;
    for (int64_t group : {1, 2, 4})
      for (int64_t hd : {20, 37})
        for (KvDType dt : {KvDType::F32, KvDType::BF16, KvDType::F16}) {
          const int64_t n_kv = 2, n_heads = n_kv * group, bs = hd == 20 ? 7 : 16;
          const PagedBatch b = make_paged_batch(n_heads, n_kv, hd, bs, dt, spec, seed++);
          const std::string what = std::string(isa_name(isa)) + " group=" + std::to_string(group) +
                                   " hd=" + std::to_string(hd) + " dtype=" + std::to_string(int(dt));
          const float scale = 1.0f / std::sqrt(float(hd));
          std::vector<float> batch_out(size_t(b.total_rows * b.ldo), junk()), single_out(batch_out);
          const auto seqs = b.seqs(spec, batch_out.data());
          attention_paged_causal_batch(seqs.data(), int64_t(seqs.size()), n_heads, b.cache, scale);
          for (size_t s = 0; s < spec.size(); ++s)
            if (spec[s].n_q > 0)
              attention_paged_causal(b.q.data() + b.first_row[s] * b.ldq, b.ldq, spec[s].n_q,
                                     spec[s].start_pos, n_heads, b.cache, b.tables[s].data(), scale,
                                     single_out.data() + b.first_row[s] * b.ldo, b.ldo);
          ASSERT_EQ(0, std::memcmp(batch_out.data(), single_out.data(), batch_out.size() * 4)) << what;

          std::vector<float> ref_out(batch_out.size(), junk());
          ref::attention_paged_causal_batch(b.seqs(spec, ref_out.data()).data(), int64_t(spec.size()),
                                            n_heads, b.cache, scale);
          for (size_t s = 0; s < spec.size(); ++s) {
            if (spec[s].n_q == 0) continue;
            std::vector<float> k_rounded(b.k_rows[s]), v_rounded(b.v_rows[s]);
            for (float& x : k_rounded) x = round_cache(x, dt);
            for (float& x : v_rounded) x = round_cache(x, dt);
            const std::vector<float> q_seq(b.q.begin() + b.first_row[s] * b.ldq,
                                           b.q.begin() + (b.first_row[s] + spec[s].n_q) * b.ldq);
            const auto expect =
                naive_attention(q_seq, b.ldq, spec[s].n_q, spec[s].start_pos, n_heads, n_kv, hd, k_rounded,
                                v_rounded, n_kv * hd, scale, true, spec[s].start_pos + spec[s].n_q);
            for (int64_t i = 0; i < spec[s].n_q; ++i)
              for (int64_t e = 0; e < n_heads * hd; ++e) {
                const size_t o = size_t((b.first_row[s] + i) * b.ldo + e), x = size_t(i * n_heads * hd + e);
                ASSERT_NEAR(batch_out[o], expect.out[x], expect.tol[x])
                    << what << " sequence " << s << " query " << i << " elem " << e;
                ASSERT_NEAR(batch_out[o], ref_out[o], 2 * expect.tol[x])
                    << what << " sequence " << s << " query " << i << " elem " << e;
              }
          }
        }
    // LLaMA-3 shaped decode batch (32 heads over 8, head_dim 128), 16 sequences forked from
    // one prompt as the engine decodes them.
    std::vector<BatchSeqSpec> decode;
    decode.push_back({0, 70});
    for (int s = 0; s < 16; ++s) decode.push_back({70 + s, 1, 0});
    const PagedBatch b = make_paged_batch(32, 8, 128, 16, KvDType::BF16, decode, seed++);
    std::vector<float> batch_out(size_t(b.total_rows * b.ldo), junk()), single_out(batch_out);
    const auto seqs = b.seqs(decode, batch_out.data());
    attention_paged_causal_batch(seqs.data(), int64_t(seqs.size()), 32, b.cache, 0.088f);
    for (const PagedAttnSeq& s : b.seqs(decode, single_out.data()))
      attention_paged_causal(s.q, s.ldq, s.n_q, s.start_pos, 32, b.cache, s.block_table, 0.088f, s.out,
                             s.ldo);
    ASSERT_EQ(0, std::memcmp(batch_out.data(), single_out.data(), batch_out.size() * 4)) << isa_name(isa);
  }
  omp_set_num_threads(saved_threads);
}

// Each sequence is checked as attention_paged_causal checks its arguments, all before any
// output is written; the message names the sequence.
TEST(KernelsAttention, PagedCausalBatchBadArgumentsNameTheSequence) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    std::vector<float> buf(4096, 0.5f), out(256, junk());
    std::vector<int32_t> bt = {0, 1, 2}, bad_bt = {0, -1};
    const KvCacheView c{KvDType::F32, 2, 8, 4, buf.data(), buf.data(), 64};
    auto message = [&](const std::vector<PagedAttnSeq>& seqs, int64_t n_seqs, int64_t n_heads) {
      try {
        attention_paged_causal_batch(seqs.empty() ? nullptr : seqs.data(), n_seqs, n_heads, c, 1.0f);
      } catch (const std::invalid_argument& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    };
    const PagedAttnSeq good{buf.data(), 32, 1, 4, bt.data(), out.data(), 32};
    PagedAttnSeq bad_table = good, bad_ld = good, null_q = good, negative = good, no_table = good;
    bad_table.start_pos = 5;
    bad_table.block_table = bad_bt.data();
    bad_ld.n_q = 2;
    bad_ld.ldq = 24;
    null_q.q = nullptr;
    negative.start_pos = -1;
    no_table.block_table = nullptr;
    const std::string k = "recap::kernels::attention_paged_causal_batch: ";
    EXPECT_EQ(message({good, good, bad_table}, 3, 4), k + "sequence 2: block_table[1] = -1 is negative");
    EXPECT_EQ(message({good, bad_ld, bad_table}, 3, 4),
              k + "sequence 1: ldq/ldo (24/32) < n_heads*head_dim = 32");
    EXPECT_EQ(message({null_q}, 1, 4), k + "sequence 0: q or out is null");
    EXPECT_EQ(message({good, good, good, negative}, 4, 4), k + "sequence 3: negative start_pos or n_q");
    EXPECT_EQ(message({good, no_table}, 2, 4), k + "sequence 1: block_table is null");
    EXPECT_EQ(message({good}, 1, 7), k + "n_heads 7 is not a positive multiple of n_kv_heads 2");
    EXPECT_EQ(message({}, -1, 4), k + "negative n_seqs -1");
    EXPECT_EQ(message({}, 2, 4), k + "seqs is null");
    EXPECT_EQ(message({}, 0, 4), "no error");  // nothing to do
    // Nothing was computed for the good sequences before the bad one was found.
    for (float x : out) ASSERT_TRUE(is_junk(x)) << isa_name(isa);
    // The same sequences, all good, do compute.
    PagedAttnSeq good_too = good;
    good_too.out = out.data() + 64;
    EXPECT_EQ(message({good, good_too}, 2, 4), "no error");
    EXPECT_FALSE(is_junk(out[0]));
    EXPECT_FALSE(is_junk(out[64]));
  }
}

void run_dense_case(int64_t T, int64_t n_heads, int64_t hd, uint32_t seed) {
  const int64_t ld = n_heads * hd + 3, ldo = n_heads * hd + 1;
  const auto q = random_rows(T, n_heads * hd, ld, seed, -3.0f, 3.0f);
  const auto k = random_rows(T, n_heads * hd, ld, seed + 1);
  const auto v = random_rows(T, n_heads * hd, ld, seed + 2);
  const float scale = 1.0f / std::sqrt(float(hd));
  const auto expect = naive_attention(q, ld, T, 0, n_heads, n_heads, hd, k, v, ld, scale, false, T);
  std::vector<float> out(size_t(T * ldo), junk());
  attention_dense(q.data(), ld, k.data(), ld, v.data(), ld, T, n_heads, hd, scale, out.data(), ldo);
  for (int64_t i = 0; i < T; ++i) {
    ASSERT_TRUE(is_junk(out[size_t(i * ldo + ldo - 1)])) << "padding written";
    for (int64_t e = 0; e < n_heads * hd; ++e) {
      const size_t o = size_t(i * n_heads * hd + e);
      ASSERT_NEAR(out[size_t(i * ldo + e)], expect.out[o], expect.tol[o])
          << isa_name(active_isa()) << " T=" << T << " heads=" << n_heads << " hd=" << hd << " i=" << i
          << " e=" << e;
    }
  }
}

TEST(KernelsAttention, DenseBidirectional) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    uint32_t seed = 500;
    for (int64_t T : {1, 17, 577}) run_dense_case(T, 3, 64, seed++);
    for (int64_t hd : {1, 7, 20}) run_dense_case(17, 2, hd, seed++);
    // head_dim past one register pass of the value step (80: ViT-H, 128), and a key count
    // one past a whole key tile with a single row left over in the last row block.
    for (int64_t hd : {80, 128}) run_dense_case(65, 1, hd, seed++);
  }
}

TEST(KernelsAttention, BadArgumentsThrow) {
  std::vector<float> buf(4096);
  std::vector<int32_t> bt = {0, 1, 2};
  KvCacheView c{KvDType::F32, 2, 8, 4, buf.data(), buf.data(), 64};
  EXPECT_THROW(attention_paged_causal(buf.data(), 24, 2, 0, 6 + 1, c, bt.data(), 1.0f, buf.data(), 56),
               std::invalid_argument);  // 7 heads over 2 kv heads
  KvCacheView small = c;
  small.block_stride = 63;
  EXPECT_THROW(attention_paged_causal(buf.data(), 32, 1, 0, 4, small, bt.data(), 1.0f, buf.data(), 32),
               std::invalid_argument);
  std::vector<int32_t> bad_bt = {0, -1};
  EXPECT_THROW(attention_paged_causal(buf.data(), 32, 1, 5, 4, c, bad_bt.data(), 1.0f, buf.data(), 32),
               std::invalid_argument);
  EXPECT_THROW(kv_cache_write(c, bt.data(), 0, 2, buf.data(), 8, buf.data(), 16),
               std::invalid_argument);  // ldk < 16
  EXPECT_THROW(attention_dense(buf.data(), 8, buf.data(), 8, buf.data(), 8, 4, 2, 8, 1.0f, buf.data(), 16),
               std::invalid_argument);
  try {
    attention_paged_causal(buf.data(), 24, 2, 0, 7, c, bt.data(), 1.0f, buf.data(), 56);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("attention_paged_causal"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace recap::kernels
