// Ops and attention kernels at the model's real shapes, once per ISA this CPU can run (or only
// RECAP_FORCE_ISA's). Counters: GB/s of the bytes each call must read + write (the limit for
// these memory-bound kernels), GFLOP/s for attention (4 * heads * query-key pairs * head_dim).
//   bench_ops --benchmark_filter=Attention     # attention only
//   bench_ops --benchmark_filter=AttentionDecodeBatch16   # one batched call vs a call per sequence
// Shapes: LLaMA-3-8B (4096 hidden, 32 heads / 8 KV heads x 128, 14336 FFN, prefill 640 tokens),
// CLIP-ViT-L/14-336 (577 tokens, 1024 hidden, 16 heads x 64, 4096 MLP), projector (576 x 4096).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/isa.h"
#include "kernels/ops.h"

namespace rk = recap::kernels;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void set_counters(benchmark::State& st, double bytes_per_iter, double flops_per_iter = 0) {
  st.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (flops_per_iter > 0)
    st.counters["GFLOP/s"] =
        benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

const char* kv_name(rk::KvDType t) {
  return t == rk::KvDType::F32 ? "f32" : t == rk::KvDType::BF16 ? "bf16" : "f16";
}

// A paged cache holding `len` positions of one layer in shuffled blocks of 16.
struct PagedCache {
  std::vector<uint8_t> k, v;
  std::vector<int32_t> block_table;
  rk::KvCacheView view;
  PagedCache(int64_t n_kv, int64_t hd, int64_t len, rk::KvDType dt) {
    const int64_t bs = 16, n_blocks = (len + bs - 1) / bs, esize = dt == rk::KvDType::F32 ? 4 : 2;
    k.resize(size_t(n_blocks * n_kv * bs * hd * esize));
    v.resize(k.size());
    block_table.resize(size_t(n_blocks));
    std::iota(block_table.begin(), block_table.end(), 0);
    std::shuffle(block_table.begin(), block_table.end(), std::mt19937(7));
    view = rk::KvCacheView{dt, n_kv, hd, bs, k.data(), v.data(), n_kv * bs * hd};
    const auto kv = random_floats(size_t(len * n_kv * hd), 3);
    rk::kv_cache_write(view, block_table.data(), 0, len, kv.data(), n_kv * hd, kv.data(), n_kv * hd);
  }
};

// LLaMA-3-8B attention: n_q queries ending at position context-1 (decode: n_q = 1).
void bm_attention_paged(benchmark::State& st, rk::Isa isa, rk::KvDType dt, int64_t context, int64_t n_q) {
  rk::set_active_isa(isa);
  const int64_t n_heads = 32, n_kv = 8, hd = 128;
  PagedCache cache(n_kv, hd, context, dt);
  const auto q = random_floats(size_t(n_q * n_heads * hd), 5, -2.0f, 2.0f);
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(float(hd));
  for (auto _ : st) {
    rk::attention_paged_causal(q.data(), n_heads * hd, n_q, context - n_q, n_heads, cache.view,
                               cache.block_table.data(), scale, out.data(), n_heads * hd);
    benchmark::DoNotOptimize(out.data());
  }
  const double esize = dt == rk::KvDType::F32 ? 4 : 2;
  const double kv_bytes = 2.0 * double(context) * double(n_kv * hd) * esize;
  double pairs = 0;  // causal query-key pairs
  for (int64_t i = 0; i < n_q; ++i) pairs += double(context - n_q + i + 1);
  set_counters(st, kv_bytes + 2.0 * double(q.size()) * 4, 4.0 * double(n_heads) * pairs * double(hd));
}

// A LLaMA-3-8B decode step's attention at batch n_seqs: one query per sequence, each sequence
// `context` positions long in its own blocks of one pool, either in one
// attention_paged_causal_batch call (batched, as the forward does) or in one
// attention_paged_causal call per sequence (looped: one thread fork/join per sequence).
void bm_attention_decode_batch(benchmark::State& st, rk::Isa isa, rk::KvDType dt, int64_t context,
                               int64_t n_seqs, bool batched) {
  rk::set_active_isa(isa);
  const int64_t n_heads = 32, n_kv = 8, hd = 128, row = n_heads * hd;
  // One pool holding every sequence back to back: sequence s's table is the slice of the
  // cache's table for positions s*context .. (context a multiple of the block size 16).
  PagedCache cache(n_kv, hd, context * n_seqs, dt);
  const int64_t blocks_per_seq = context / 16;
  const auto q = random_floats(size_t(n_seqs * row), 5, -2.0f, 2.0f);
  std::vector<float> out(q.size());
  std::vector<rk::PagedAttnSeq> seqs;
  for (int64_t s = 0; s < n_seqs; ++s)
    seqs.push_back(rk::PagedAttnSeq{q.data() + s * row, row, 1, context - 1,
                                    cache.block_table.data() + s * blocks_per_seq, out.data() + s * row,
                                    row});
  const float scale = 1.0f / std::sqrt(float(hd));
  for (auto _ : st) {
    if (batched)
      rk::attention_paged_causal_batch(seqs.data(), n_seqs, n_heads, cache.view, scale);
    else
      for (const rk::PagedAttnSeq& s : seqs)
        rk::attention_paged_causal(s.q, s.ldq, s.n_q, s.start_pos, n_heads, cache.view, s.block_table, scale,
                                   s.out, s.ldo);
    benchmark::DoNotOptimize(out.data());
  }
  const double esize = dt == rk::KvDType::F32 ? 4 : 2;
  const double kv_bytes = 2.0 * double(context * n_seqs) * double(n_kv * hd) * esize;
  set_counters(st, kv_bytes + 2.0 * double(q.size()) * 4,
               4.0 * double(n_heads) * double(context * n_seqs) * double(hd));
}

// CLIP-ViT-L/14-336: dense attention, 577 tokens, 16 heads x 64.
void bm_attention_vit(benchmark::State& st, rk::Isa isa) {
  rk::set_active_isa(isa);
  const int64_t T = 577, n_heads = 16, hd = 64, row = n_heads * hd;
  const auto q = random_floats(size_t(T * row), 1, -2.0f, 2.0f), k = random_floats(size_t(T * row), 2),
             v = random_floats(size_t(T * row), 3);
  std::vector<float> out(q.size());
  for (auto _ : st) {
    rk::attention_dense(q.data(), row, k.data(), row, v.data(), row, T, n_heads, hd, 0.125f, out.data(), row);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, 4.0 * double(T * row) * 4, 4.0 * double(n_heads) * double(T) * double(T) * double(hd));
}

void bm_rmsnorm(benchmark::State& st, rk::Isa isa, int64_t rows, int64_t dim) {
  rk::set_active_isa(isa);
  const auto x = random_floats(size_t(rows * dim), 1), w = random_floats(size_t(dim), 2);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    rk::rmsnorm(x.data(), dim, w.data(), y.data(), dim, rows, dim, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, double(2 * rows * dim + dim) * 4);
}

void bm_layernorm(benchmark::State& st, rk::Isa isa, int64_t rows, int64_t dim) {
  rk::set_active_isa(isa);
  const auto x = random_floats(size_t(rows * dim), 1), w = random_floats(size_t(dim), 2),
             b = random_floats(size_t(dim), 3);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    rk::layernorm(x.data(), dim, w.data(), b.data(), y.data(), dim, rows, dim, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, double(2 * rows * dim + 2 * dim) * 4);
}

template <void (*Op)(float*, int64_t)>
void bm_activation(benchmark::State& st, rk::Isa isa, int64_t n) {
  rk::set_active_isa(isa);
  const auto x0 = random_floats(size_t(n), 1, -4.0f, 4.0f);
  auto x = x0;
  for (auto _ : st) {
    Op(x.data(), n);  // in place; values stay in range (|gelu(x)| <= |x|), no reset needed
    benchmark::DoNotOptimize(x.data());
  }
  set_counters(st, double(2 * n) * 4);
}

void bm_silu_mul(benchmark::State& st, rk::Isa isa, int64_t rows, int64_t n) {
  rk::set_active_isa(isa);
  const auto g = random_floats(size_t(rows * n), 1, -4.0f, 4.0f), u = random_floats(size_t(rows * n), 2);
  std::vector<float> o(g.size());
  for (auto _ : st) {
    rk::silu_mul(g.data(), n, u.data(), n, o.data(), n, rows, n);
    benchmark::DoNotOptimize(o.data());
  }
  set_counters(st, double(3 * rows * n) * 4);
}

void bm_softmax(benchmark::State& st, rk::Isa isa, int64_t rows, int64_t n) {
  rk::set_active_isa(isa);
  const auto x0 = random_floats(size_t(rows * n), 1, -8.0f, 8.0f);
  auto x = x0;
  for (auto _ : st) {
    rk::softmax(x.data(), n, rows, n);
    benchmark::DoNotOptimize(x.data());
  }
  set_counters(st, double(2 * rows * n) * 4);
}

void bm_rope(benchmark::State& st, rk::Isa isa, int64_t n_tokens, int64_t n_heads) {
  rk::set_active_isa(isa);
  const int64_t hd = 128, max_pos = 2048;
  std::vector<float> c(size_t(max_pos * hd / 2)), s(c.size());
  rk::build_rope_table(max_pos, hd, 500000.0f, c.data(), s.data());
  auto x = random_floats(size_t(n_tokens * n_heads * hd), 1);
  std::vector<int32_t> pos(static_cast<size_t>(n_tokens));
  std::iota(pos.begin(), pos.end(), 0);
  for (auto _ : st) {
    rk::rope_apply(x.data(), n_heads * hd, n_tokens, n_heads, hd, pos.data(), c.data(), s.data());
    benchmark::DoNotOptimize(x.data());
  }
  set_counters(st, double(2 * n_tokens * n_heads * hd + 2 * n_tokens * hd / 2) * 4);
}

std::vector<rk::Isa> isas_to_bench() {
  const char* forced = std::getenv("RECAP_FORCE_ISA");
  if (forced && *forced) return {rk::parse_isa(forced)};
  std::vector<rk::Isa> out = {rk::Isa::Ref};
  if (rk::best_isa() >= rk::Isa::Avx2) out.push_back(rk::Isa::Avx2);
  if (rk::best_isa() >= rk::Isa::Avx512) out.push_back(rk::Isa::Avx512);
  return out;
}

void register_all() {
  for (rk::Isa isa : isas_to_bench()) {
    const std::string tag = std::string("/") + rk::isa_name(isa);
    for (rk::KvDType dt : {rk::KvDType::F32, rk::KvDType::BF16, rk::KvDType::F16}) {
      benchmark::RegisterBenchmark(("AttentionDecode/ctx640/" + std::string(kv_name(dt)) + tag).c_str(),
                                   bm_attention_paged, isa, dt, int64_t(640), int64_t(1))
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
    for (bool batched : {true, false})
      benchmark::RegisterBenchmark(
          ("AttentionDecodeBatch16/ctx640/bf16/" + std::string(batched ? "batched" : "looped") + tag).c_str(),
          bm_attention_decode_batch, isa, rk::KvDType::BF16, int64_t(640), int64_t(16), batched)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    for (rk::KvDType dt : {rk::KvDType::F32, rk::KvDType::BF16}) {
      benchmark::RegisterBenchmark(("AttentionPrefill/640/" + std::string(kv_name(dt)) + tag).c_str(),
                                   bm_attention_paged, isa, dt, int64_t(640), int64_t(640))
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
    benchmark::RegisterBenchmark(("AttentionViT/577x16x64" + tag).c_str(), bm_attention_vit, isa)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    for (int64_t rows : {1, 640})
      benchmark::RegisterBenchmark(("RmsNorm/" + std::to_string(rows) + "x4096" + tag).c_str(), bm_rmsnorm,
                                   isa, rows, int64_t(4096))
          ->UseRealTime();
    benchmark::RegisterBenchmark(("LayerNorm/577x1024" + tag).c_str(), bm_layernorm, isa, int64_t(577),
                                 int64_t(1024))
        ->UseRealTime();
    benchmark::RegisterBenchmark(("GeluErf/576x4096" + tag).c_str(), bm_activation<rk::gelu_erf>, isa,
                                 int64_t(576 * 4096))
        ->UseRealTime();
    benchmark::RegisterBenchmark(("QuickGelu/577x4096" + tag).c_str(), bm_activation<rk::quick_gelu>, isa,
                                 int64_t(577 * 4096))
        ->UseRealTime();
    for (int64_t rows : {1, 640})
      benchmark::RegisterBenchmark(("SiluMul/" + std::to_string(rows) + "x14336" + tag).c_str(), bm_silu_mul,
                                   isa, rows, int64_t(14336))
          ->UseRealTime();
    benchmark::RegisterBenchmark(("Softmax/16x128256" + tag).c_str(), bm_softmax, isa, int64_t(16),
                                 int64_t(128256))
        ->UseRealTime();
    benchmark::RegisterBenchmark(("Rope/640x40heads" + tag).c_str(), bm_rope, isa, int64_t(640), int64_t(40))
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
