// Internal to kernels/: the SIMD bodies of the attention kernels (kernels/attention.h),
// written once against a vector-traits class S (SimdAvx2 / SimdAvx512) and instantiated in
// attention_avx2.cpp / attention_avx512.cpp. Internal linkage throughout (see ops_variants.h).
//
// Paged causal attention (LLaMA). A work item is (sequence, KV head, tile of up to kQueryRows/group
// queries, kLongQueryRows/group in prefill chunks): its rows are every (query, query head) pair of that
// sequence that reads that KV head, so for GQA the K/V of a tile are loaded once for the whole group (decode:
// one item per KV head, R = group rows). The items of every sequence of a call are spread over OpenMP threads
// in one parallel region (dynamic schedule, longest first: causal items differ in length). Per item, keys are
// visited in tiles of kKeyTile:
//   scores  S[r][j] = scale * (q_r . k_j)   (lanes over head_dim, W keys at a time, then one
//                                            transpose-add reduction for the W sums)
//   online softmax per row: m' = max(m, max_j S), l = l e^(m-m') + sum_j e^(S-m'),
//                           o = o e^(m-m') + sum_j e^(S-m') v_j   (rank-1 updates, lanes over head_dim)
// and out = o / l at the end. Scratch per thread: R x head_dim accumulators, R x kKeyTile
// scores and the f32 K and V tiles (kKeyTile x head_dim each): O(tile), never O(T^2).
// Causal masking: row r sees keys [0, n_keys_r).
// Dense bidirectional attention (ViT) has its own layout and register tiles: see dense_impl.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm_internal.h"
#include "kernels/ops_variants.h"

namespace recap::kernels {
namespace {

constexpr int64_t kKeyTile = 64;
constexpr int64_t kQueryRows = 16;  // rows (query x head pairs) per work item, target
// ... for a sequence with at least kLongQueries queries (a prefill chunk): more rows share
// each K/V tile's conversion, which is repeated for every item that reads the tile.
constexpr int64_t kLongQueries = 64;
constexpr int64_t kLongQueryRows = 64;

template <class S, KvDType DT>
struct KvLoad;
template <class S>
struct KvLoad<S, KvDType::F32> {
  static typename S::V load(const void* row, int64_t off) {
    return S::load(static_cast<const float*>(row) + off);
  }
  static typename S::V load(const void* row, int64_t off, typename S::M m) {
    return S::load(static_cast<const float*>(row) + off, m);
  }
};
template <class S>
struct KvLoad<S, KvDType::BF16> {
  static typename S::V load(const void* row, int64_t off) {
    return S::load_bf16(static_cast<const uint16_t*>(row) + off);
  }
  static typename S::V load(const void* row, int64_t off, typename S::M m) {
    return S::load_bf16(static_cast<const uint16_t*>(row) + off, m);
  }
};
template <class S>
struct KvLoad<S, KvDType::F16> {
  static typename S::V load(const void* row, int64_t off) {
    return S::load_f16(static_cast<const uint16_t*>(row) + off);
  }
  static typename S::V load(const void* row, int64_t off, typename S::M m) {
    return S::load_f16(static_cast<const uint16_t*>(row) + off, m);
  }
};

struct AttnRow {
  const float* q;
  float* out;
  int64_t n_keys;  // keys [0, n_keys) are visible to this row
};

// Per-thread scratch of one work item.
struct AttnScratch {
  float* o = nullptr;           // [rows][hd_pad] output accumulators
  float* p = nullptr;           // [rows][kKeyTile] scores, then probabilities
  float* m = nullptr;           // [rows] running max
  float* l = nullptr;           // [rows] running sum
  float* kt = nullptr;          // [hd_pad/W][kKeyTile][W] f32 key tile, chunk-major
  float* vt = nullptr;          // [hd_pad/W][kKeyTile][W] f32 value tile, chunk-major
  const void** kptr = nullptr;  // [kKeyTile] key rows of the current tile (cache dtype)
  const void** vptr = nullptr;  // [kKeyTile] value rows of the current tile (cache dtype)
  void* mem = nullptr;
  bool ok = false;

  // Every array starts on a 64-byte line: the K/V tiles are read with full-width vector loads
  // in the inner loops, and a tile straddling lines (as when the rows' arrays before it sum
  // to an odd number of 32-byte halves) costs ~10% of a decode call.
  AttnScratch(int64_t rows, int64_t hd_pad) {
    auto lines = [](int64_t n_floats) { return (n_floats + 15) / 16 * 16; };  // floats, rounded to 64 B
    const int64_t n_o = lines(rows * hd_pad), n_p = lines(rows * kKeyTile), n_ml = lines(rows);
    const int64_t n_tile = lines(kKeyTile * hd_pad);
    const size_t floats = size_t(n_o + n_p + 2 * n_ml + 2 * n_tile);
    const size_t bytes = (floats * sizeof(float) + 2 * kKeyTile * sizeof(void*) + 63) / 64 * 64;
    mem = std::aligned_alloc(64, bytes);
    if (!mem) return;
    ok = true;
    float* f = static_cast<float*>(mem);
    o = f;
    p = o + n_o;
    m = p + n_p;
    l = m + n_ml;
    kt = l + n_ml;
    vt = kt + n_tile;
    kptr = reinterpret_cast<const void**>(vt + n_tile);
    vptr = kptr + kKeyTile;
  }
  ~AttnScratch() { std::free(mem); }
  AttnScratch(const AttnScratch&) = delete;
  AttnScratch& operator=(const AttnScratch&) = delete;
};

// Copies the K or V rows of a tile (cache dtype) into the f32 chunk-major scratch
// dst[c][j][0..W) = row_j[c*W .. c*W+W) (zero past head_dim). Once per tile, shared by all
// rows of the work item; it also takes the strided/paged rows out of L1-aliasing strides and
// gives the inner loops constant offsets.
template <class S, KvDType DT>
void tile_to_chunk_major(const void* const* rows, int64_t nt, int64_t hd, float* dst) {
  using L = KvLoad<S, DT>;
  const int64_t n_full = hd / S::W * S::W;
  const auto m = S::mask(hd - n_full);
  for (int64_t j = 0; j < nt; ++j) {
    float* d = dst + j * S::W;
    int64_t c = 0;
    for (; c < n_full; c += S::W, d += kKeyTile * S::W) S::store(d, L::load(rows[j], c));
    if (n_full < hd) S::store(d, L::load(rows[j], n_full, m));
  }
}

// Scores of every row against the nt keys of a tile: p[r][j] = scale * (q_r . k_j), or -inf
// where key j0 + j is not visible to row r. W keys at a time per row: W accumulators (lanes
// over head_dim), summed horizontally all together by reduce_lanes. Key slots past nt hold
// stale (finite or not) scratch: their lanes are overwritten with -inf.
template <class S>
void tile_scores(const AttnRow* rows, int64_t n_rows, const float* kt, int64_t j0, int64_t nt, int64_t hd,
                 float scale, float* p) {
  using V = typename S::V;
  const int64_t n_full = hd / S::W * S::W;
  const auto m = S::mask(hd - n_full);
  const V vscale = S::set1(scale);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* q = rows[r].q;
    float* pr = p + r * kKeyTile;
    const int64_t visible = rows[r].n_keys - j0 < nt ? rows[r].n_keys - j0 : nt;  // may be <= 0
    for (int64_t jg = 0; jg < nt; jg += S::W) {
      if (jg >= visible) {
        for (int kk = 0; kk < S::W; ++kk) pr[jg + kk] = -INFINITY;
        continue;
      }
      V acc[S::W];
      for (int kk = 0; kk < S::W; ++kk) acc[kk] = S::zero();
      const float* kc = kt + jg * S::W;
      int64_t c = 0;
      for (; c < n_full; c += S::W, kc += kKeyTile * S::W) {
        const V qc = S::load(q + c);
        for (int kk = 0; kk < S::W; ++kk) acc[kk] = S::fmadd(qc, S::load(kc + kk * S::W), acc[kk]);
      }
      if (n_full < hd) {
        const V qc = S::load(q + n_full, m);
        for (int kk = 0; kk < S::W; ++kk) acc[kk] = S::fmadd(qc, S::load(kc + kk * S::W), acc[kk]);
      }
      S::store(pr + jg, S::mul(S::reduce_lanes(acc), vscale));
      for (int64_t kk = visible - jg; kk < S::W; ++kk) pr[jg + kk] = -INFINITY;
    }
  }
}

// o[r] += sum_j p[r][j] v_j for RB rows (o rows are hd_pad long, padded lanes stay 0);
// vt is the chunk-major value tile.
template <class S, int RB>
void tile_accumulate(const float* vt, int64_t nt, int64_t hd_pad, const float* p, float* o) {
  using V = typename S::V;
  for (int64_t c = 0; c < hd_pad; c += S::W) {
    V acc[RB];
    for (int r = 0; r < RB; ++r) acc[r] = S::load(o + r * hd_pad + c);
    const float* vc = vt + c * kKeyTile;
    for (int64_t j = 0; j < nt; ++j) {
      const V v = S::load(vc + j * S::W);
      for (int r = 0; r < RB; ++r) acc[r] = S::fmadd(S::set1(p[r * kKeyTile + j]), v, acc[r]);
    }
    for (int r = 0; r < RB; ++r) S::store(o + r * hd_pad + c, acc[r]);
  }
}

// Runs `fn.template operator()<RB>(first_row)` over n rows in blocks of 8, 4, 2, 1.
template <class F>
void for_row_blocks(int64_t n, F&& fn) {
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) fn.template operator()<8>(r);
  if (r + 4 <= n) {
    fn.template operator()<4>(r);
    r += 4;
  }
  if (r + 2 <= n) {
    fn.template operator()<2>(r);
    r += 2;
  }
  if (r < n) fn.template operator()<1>(r);
}

// Online-softmax update of one row with the scores of a tile (p row, nt entries, -inf =
// masked); leaves the probabilities e^(S - m') in p and rescales the row's accumulator.
template <class S>
void tile_softmax_row(float* p, int64_t nt, float& m_run, float& l_run, float* o, int64_t hd_pad) {
  using V = typename S::V;
  const int64_t n_full = nt / S::W * S::W;
  const auto mk = S::mask(nt - n_full);
  V vmax = S::set1(-INFINITY);
  for (int64_t j = 0; j < n_full; j += S::W) vmax = S::max(vmax, S::load(p + j));
  if (n_full < nt) vmax = S::max(vmax, S::keep_else(S::load(p + n_full, mk), mk, S::set1(-INFINITY)));
  const float tile_max = S::hmax(vmax);
  const float new_max = tile_max > m_run ? tile_max : m_run;
  if (new_max == -INFINITY) {  // nothing visible yet (cannot happen for key 0, kept for safety)
    for (int64_t j = 0; j < nt; ++j) p[j] = 0.0f;
    return;
  }
  const V vm = S::set1(new_max);
  V vsum = S::zero();
  for (int64_t j = 0; j < n_full; j += S::W) {
    const V e = S::exp(S::sub(S::load(p + j), vm));
    S::store(p + j, e);
    vsum = S::add(vsum, e);
  }
  if (n_full < nt) {
    const V e = S::keep(S::exp(S::sub(S::load(p + n_full, mk), vm)), mk);
    S::store(p + n_full, e, mk);
    vsum = S::add(vsum, e);
  }
  const float correction = std::exp(m_run - new_max);  // 0 on the first tile (m_run = -inf)
  if (correction != 1.0f) {
    const V vc = S::set1(correction);
    for (int64_t c = 0; c < hd_pad; c += S::W) S::store(o + c, S::mul(S::load(o + c), vc));
  }
  l_run = l_run * correction + S::hsum(vsum);
  m_run = new_max;
}

// One work item: `n_rows` rows, keys [0, max_keys) (per-row visibility in rows[r].n_keys).
// key_rows(j0, nt, kptr, vptr) fills the K/V row pointers of keys j0 .. j0+nt-1.
template <class S, KvDType DT, class KeyRows>
void attend_rows(const AttnRow* rows, int64_t n_rows, int64_t max_keys, int64_t hd, float scale,
                 AttnScratch& sc, KeyRows key_rows) {
  using V = typename S::V;
  const int64_t hd_pad = (hd + S::W - 1) / S::W * S::W;
  for (int64_t r = 0; r < n_rows; ++r) {
    sc.m[r] = -INFINITY;
    sc.l[r] = 0.0f;
    for (int64_t c = 0; c < hd_pad; c += S::W) S::store(sc.o + r * hd_pad + c, S::zero());
  }
  for (int64_t j0 = 0; j0 < max_keys; j0 += kKeyTile) {
    const int64_t nt = max_keys - j0 < kKeyTile ? max_keys - j0 : kKeyTile;
    key_rows(j0, nt, sc.kptr, sc.vptr);
    tile_to_chunk_major<S, DT>(sc.kptr, nt, hd, sc.kt);
    tile_to_chunk_major<S, DT>(sc.vptr, nt, hd, sc.vt);
    tile_scores<S>(rows, n_rows, sc.kt, j0, nt, hd, scale, sc.p);
    for (int64_t r = 0; r < n_rows; ++r)
      tile_softmax_row<S>(sc.p + r * kKeyTile, nt, sc.m[r], sc.l[r], sc.o + r * hd_pad, hd_pad);
    for_row_blocks(n_rows, [&]<int RB>(int64_t r0) {
      tile_accumulate<S, RB>(sc.vt, nt, hd_pad, sc.p + r0 * kKeyTile, sc.o + r0 * hd_pad);
    });
  }
  const int64_t n_full = hd / S::W * S::W;
  const auto m = S::mask(hd - n_full);
  for (int64_t r = 0; r < n_rows; ++r) {
    const V sum = S::set1(sc.l[r]);
    const float* o = sc.o + r * hd_pad;
    for (int64_t c = 0; c < n_full; c += S::W) S::store(rows[r].out + c, S::div(S::load(o + c), sum));
    if (n_full < hd) S::store(rows[r].out + n_full, S::div(S::load(o + n_full), sum), m);
  }
}

// Threads are worth waking when the item count and work are large enough.
inline bool attention_worth_threading(int64_t n_items, int64_t flops) {
  return n_items >= 2 && flops >= (1 << 20);
}

// One work item of a batched paged causal call: query tile qt of sequence seq, against KV
// head kvh. cost orders the items (longest first) and is only a scheduling hint.
struct PagedItem {
  int64_t seq;
  int64_t qt;
  int64_t kvh;
  int64_t cost;
};

// Fills kp/vp with the K/V rows of KV head kvh for positions j0 .. j0+nt-1 of a sequence
// with the given block table. Walks block and offset incrementally: one division per tile,
// not per key (the divisor is a runtime value). The pointers are those of
// base + (block_table[pos / bs] * block_stride + (kvh * bs + pos % bs) * hd) * esize.
inline void paged_key_rows(const KvCacheView& cache, const int32_t* block_table, int64_t kvh, int64_t esize,
                           int64_t j0, int64_t nt, const void** kp, const void** vp) {
  const int64_t bs = cache.block_size;
  const int64_t row_bytes = cache.head_dim * esize;
  const auto* k_base = static_cast<const uint8_t*>(cache.k_base);
  const auto* v_base = static_cast<const uint8_t*>(cache.v_base);
  int64_t block = j0 / bs;
  int64_t off = j0 - block * bs;
  int64_t j = 0;
  while (j < nt) {
    // Rows of one block (of this KV head) are contiguous: step through them by row_bytes.
    const int64_t head_elem = int64_t(block_table[block]) * cache.block_stride + kvh * bs * cache.head_dim;
    const uint8_t* k_row = k_base + (head_elem + off * cache.head_dim) * esize;
    const uint8_t* v_row = v_base + (head_elem + off * cache.head_dim) * esize;
    const int64_t n_in_block = bs - off < nt - j ? bs - off : nt - j;
    for (int64_t t = 0; t < n_in_block; ++t, ++j, k_row += row_bytes, v_row += row_bytes) {
      kp[j] = k_row;
      vp[j] = v_row;
    }
    ++block;
    off = 0;
  }
}

// Causal GQA over the paged cache for n_seqs sequences in ONE OpenMP parallel region (one
// fork/join and one scratch allocation per thread for the whole batch, instead of per
// sequence). Every sequence is cut into the same work items as it would be alone (query
// tiles of queries_per_item(n_q) queries x KV heads, which depends only on the group size and
// the sequence's own n_q), and an item is computed by one thread with attend_rows over the same 64-key tiles,
// so each output row gets exactly the same operations whatever else is in the batch, whichever thread runs it
// and in whatever order: the batch is bit-identical to one call per sequence.
template <class S, KvDType DT>
void paged_causal_batch_impl(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                             const KvCacheView& cache, float scale) {
  const int64_t hd = cache.head_dim;
  const int64_t n_kv = cache.n_kv_heads;
  const int64_t group = n_heads / n_kv;
  // Queries per work item of a sequence. Only the sequence's own n_q decides it, and an output
  // row's operations do not depend on which other rows share its item, so the batch stays
  // bit-identical to one call per sequence.
  auto queries_per_item = [group](int64_t n_q) {
    const int64_t rows = n_q >= kLongQueries ? kLongQueryRows : kQueryRows;
    return group >= rows ? int64_t{1} : rows / group;
  };
  const int64_t hd_pad = (hd + S::W - 1) / S::W * S::W;
  const int64_t esize = kv_dtype_bytes(cache.dtype);

  // The items of every sequence, longest first: the dynamic schedule then ends on short ones.
  // cost ~ keys x (rows + 2): the score and accumulate work per row plus the K/V tile
  // conversion shared by the rows.
  int64_t n_items = 0, flops = 0, max_q_in_item = 0;
  for (int64_t s = 0; s < n_seqs; ++s) {
    if (seqs[s].n_q <= 0) continue;
    const int64_t q_per_item = queries_per_item(seqs[s].n_q);
    n_items += n_kv * ((seqs[s].n_q + q_per_item - 1) / q_per_item);
    flops += 4 * n_heads * seqs[s].n_q * (seqs[s].start_pos + seqs[s].n_q) * hd;
    const int64_t q_in_item = seqs[s].n_q < q_per_item ? seqs[s].n_q : q_per_item;
    if (q_in_item > max_q_in_item) max_q_in_item = q_in_item;
  }
  if (n_items == 0) return;
  // (std::vector and std::stable_sort only over PagedItem, a type with internal linkage, so
  // their instantiations in this ISA's translation unit stay internal too; ops_variants.h.)
  std::vector<PagedItem> items;
  items.reserve(size_t(n_items));
  for (int64_t s = 0; s < n_seqs; ++s) {
    const int64_t n_q = seqs[s].n_q;
    const int64_t q_per_item = queries_per_item(n_q);
    for (int64_t qt = (n_q + q_per_item - 1) / q_per_item - 1; qt >= 0; --qt) {
      const int64_t i1 = qt * q_per_item + q_per_item < n_q ? qt * q_per_item + q_per_item : n_q;
      const int64_t cost = (seqs[s].start_pos + i1) * ((i1 - qt * q_per_item) * group + 2);
      for (int64_t kvh = 0; kvh < n_kv; ++kvh) items.push_back(PagedItem{s, qt, kvh, cost});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const PagedItem& a, const PagedItem& b) { return a.cost > b.cost; });

  const int64_t rows_max = max_q_in_item * group;
  bool alloc_failed = false;
#pragma omp parallel if (attention_worth_threading(n_items, flops))
  {
    AttnScratch sc(rows_max, hd_pad);
    AttnRow* rows =
        static_cast<AttnRow*>(std::aligned_alloc(64, size_t((rows_max * sizeof(AttnRow) + 63) / 64 * 64)));
    if (!sc.ok || !rows) {
#pragma omp atomic write
      alloc_failed = true;
    }
    // Every thread must reach the worksharing loop or none may: decide together.
#pragma omp barrier
    bool failed;
#pragma omp atomic read
    failed = alloc_failed;
    if (!failed) {
#pragma omp for schedule(dynamic)
      for (int64_t it = 0; it < n_items; ++it) {
        const PagedItem& item = items[size_t(it)];
        const PagedAttnSeq& sq = seqs[item.seq];
        const int64_t kvh = item.kvh;
        const int64_t q_per_item = queries_per_item(sq.n_q);
        const int64_t i0 = item.qt * q_per_item;
        const int64_t i1 = i0 + q_per_item < sq.n_q ? i0 + q_per_item : sq.n_q;
        int64_t n_rows = 0;
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = kvh * group + g;
            rows[n_rows++] =
                AttnRow{sq.q + i * sq.ldq + h * hd, sq.out + i * sq.ldo + h * hd, sq.start_pos + i + 1};
          }
        const int32_t* block_table = sq.block_table;
        attend_rows<S, DT>(rows, n_rows, sq.start_pos + i1, hd, scale, sc,
                           [&](int64_t j0, int64_t nt, const void** kp, const void** vp) {
                             paged_key_rows(cache, block_table, kvh, esize, j0, nt, kp, vp);
                           });
      }
    }
    std::free(rows);
  }
  if (alloc_failed) throw std::bad_alloc();
}

// ---------------------------------------------------------------- dense (ViT) attention
// Every query row of a head reads every key of that head, so the keys and values are laid out
// once per call for the whole head, shared by all its query rows and all threads:
//   kt  [head][key tile][d < hd][kKeyTile]  keys transposed per tile (key j in lane j % kKeyTile;
//                                           keys past T are 0, their scores are never read)
//   vt  [head][j < T][hd_pad]               value rows, zero past hd
// so the scores are a small GEMM with the query element broadcast (lanes over keys):
//   p[r][j] = scale * sum_d q[r][d] kt[d][j]   (sequential fma over d)
// and the value step o[r] += sum_j p[r][j] v_j a broadcast of p[r][j] (lanes over head_dim).
// kRows query rows share every key/value vector loaded; the register tile is kRows x
// kKeyChunks (scores) or kRows x kDimChunks (values) accumulators, plus the loaded chunks and
// one broadcast: 24 + 4 + 1 of 32 zmm, or 8 + 2 + 1 of 16 ymm. The online softmax between them
// is tile_softmax_row, as in the paged path. Scratch: the shared layout, O(T * n_heads * hd),
// reused across calls (detail::scratch slot 1), and per thread O(kRows * (hd + kKeyTile)).
template <class S>
struct DenseTiling {
  static constexpr int kRows = S::W == 16 ? 6 : 4;       // query rows per block
  static constexpr int kKeyChunks = S::W == 16 ? 4 : 2;  // key vectors per row and score pass
  static constexpr int kDimChunks = S::W == 16 ? 4 : 2;  // head_dim vectors per row and value pass
  static constexpr int64_t kBlocksPerItem = 8;           // row blocks per work item
  static_assert(kKeyTile % (kKeyChunks * S::W) == 0, "score passes tile the key tile");
};

// The register tile both dense steps share: acc[r][c] += a[r * lda + t] * b[t * ldb + c * W]
// for t = 0 .. steps-1 in order (one fma per step and lane; every loaded b vector serves the
// RB rows, every broadcast a element the NC vectors).
template <class S, int RB, int NC>
void rank1_updates(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t steps,
                   typename S::V (&acc)[RB][NC]) {
  using V = typename S::V;
  for (int64_t t = 0; t < steps; ++t, b += ldb) {
    V bv[NC];
    for (int c = 0; c < NC; ++c) bv[c] = S::load(b + c * S::W);
    for (int r = 0; r < RB; ++r) {
      const V ab = S::set1(a[r * lda + t]);
      for (int c = 0; c < NC; ++c) acc[r][c] = S::fmadd(ab, bv[c], acc[r][c]);
    }
  }
}

// p[r][0, kKeyTile) = scale * (q_r . k_j) for the RB rows q + r * ldq and the key tile kt
// ([hd][kKeyTile]).
template <class S, int RB, int NC>
void dense_tile_scores(const float* q, int64_t ldq, const float* kt, int64_t hd, float scale, float* p) {
  using V = typename S::V;
  const V vscale = S::set1(scale);
  for (int64_t j0 = 0; j0 < kKeyTile; j0 += NC * S::W) {
    V acc[RB][NC];
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < NC; ++c) acc[r][c] = S::zero();
    rank1_updates<S, RB, NC>(q, ldq, kt + j0, kKeyTile, hd, acc);
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < NC; ++c) S::store(p + r * kKeyTile + j0 + c * S::W, S::mul(acc[r][c], vscale));
  }
}

// o[r][v0, v0 + NC*W) += sum_{j < nt} p[r][j] vt[j][v0 ..] for the RB rows (o rows hd_pad long).
template <class S, int RB, int NC>
void dense_tile_values(const float* vt, int64_t hd_pad, int64_t nt, const float* p, float* o, int64_t v0) {
  typename S::V acc[RB][NC];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NC; ++c) acc[r][c] = S::load(o + r * hd_pad + v0 + c * S::W);
  rank1_updates<S, RB, NC>(p, kKeyTile, vt + v0, hd_pad, nt, acc);
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < NC; ++c) S::store(o + r * hd_pad + v0 + c * S::W, acc[r][c]);
}

// RB query rows (q + r * ldq, out + r * ldo) of one head against all T keys of that head.
template <class S, int RB>
void dense_row_block(const float* q, int64_t ldq, const float* kt, const float* vt, int64_t T, int64_t hd,
                     float scale, float* out, int64_t ldo, AttnScratch& sc) {
  using V = typename S::V;
  using Tl = DenseTiling<S>;
  const int64_t hd_pad = (hd + S::W - 1) / S::W * S::W, n_vec = hd_pad / S::W;
  for (int r = 0; r < RB; ++r) {
    sc.m[r] = -INFINITY;
    sc.l[r] = 0.0f;
    for (int64_t c = 0; c < hd_pad; c += S::W) S::store(sc.o + r * hd_pad + c, S::zero());
  }
  for (int64_t j0 = 0; j0 < T; j0 += kKeyTile, kt += hd * kKeyTile, vt += kKeyTile * hd_pad) {
    const int64_t nt = T - j0 < kKeyTile ? T - j0 : kKeyTile;
    dense_tile_scores<S, RB, Tl::kKeyChunks>(q, ldq, kt, hd, scale, sc.p);
    for (int r = 0; r < RB; ++r)
      tile_softmax_row<S>(sc.p + r * kKeyTile, nt, sc.m[r], sc.l[r], sc.o + r * hd_pad, hd_pad);
    int64_t c = 0;
    for (; c + Tl::kDimChunks <= n_vec; c += Tl::kDimChunks)
      dense_tile_values<S, RB, Tl::kDimChunks>(vt, hd_pad, nt, sc.p, sc.o, c * S::W);
    for (; c < n_vec; ++c) dense_tile_values<S, RB, 1>(vt, hd_pad, nt, sc.p, sc.o, c * S::W);
  }
  const int64_t n_full = hd / S::W * S::W;
  const auto m = S::mask(hd - n_full);
  for (int r = 0; r < RB; ++r) {
    const V sum = S::set1(sc.l[r]);
    const float* o = sc.o + r * hd_pad;
    float* dst = out + r * ldo;
    for (int64_t c = 0; c < n_full; c += S::W) S::store(dst + c, S::div(S::load(o + c), sum));
    if (n_full < hd) S::store(dst + n_full, S::div(S::load(o + n_full), sum), m);
  }
}

// Runs fn.template operator()<RB>() for a runtime rb in 1 .. kRows (6 or 4).
template <int kMax, class F>
void with_rows(int64_t rb, F&& fn) {
  switch (rb) {
    case 1:
      return fn.template operator()<1>();
    case 2:
      return fn.template operator()<2>();
    case 3:
      return fn.template operator()<3>();
    case 4:
      return fn.template operator()<4>();
  }
  if constexpr (kMax >= 6) {
    if (rb == 5) return fn.template operator()<5>();
    if (rb == 6) return fn.template operator()<6>();
  }
}

template <class S>
void dense_impl(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                int64_t T, int64_t n_heads, int64_t hd, float scale, float* out, int64_t ldo) {
  using Tl = DenseTiling<S>;
  static_assert(Tl::kRows <= 6);
  const int64_t hd_pad = (hd + S::W - 1) / S::W * S::W;
  const int64_t n_tiles = (T + kKeyTile - 1) / kKeyTile;
  const int64_t kt_head = n_tiles * hd * kKeyTile, vt_head = n_tiles * kKeyTile * hd_pad;
  // Thrown here, before any thread starts, if the layout cannot be allocated.
  float* const kt_all = static_cast<float*>(
      detail::scratch(1, static_cast<size_t>(n_heads * (kt_head + vt_head)) * sizeof(float)));
  float* const vt_all = kt_all + n_heads * kt_head;
  const int64_t item_rows = Tl::kRows * Tl::kBlocksPerItem;
  const int64_t n_qitems = (T + item_rows - 1) / item_rows;
  const int64_t n_items = n_heads * n_qitems;
  const int64_t flops = 4 * n_heads * T * T * hd;
  bool alloc_failed = false;
#pragma omp parallel if (attention_worth_threading(n_items, flops))
  {
    // Lay out every head's keys and values (one key tile per iteration).
#pragma omp for schedule(static)
    for (int64_t ht = 0; ht < n_heads * n_tiles; ++ht) {
      const int64_t h = ht / n_tiles, j0 = (ht % n_tiles) * kKeyTile;
      const int64_t nt = T - j0 < kKeyTile ? T - j0 : kKeyTile;
      float* kd = kt_all + h * kt_head + (j0 / kKeyTile) * hd * kKeyTile;
      float* vd = vt_all + h * vt_head + j0 * hd_pad;
      if (nt < kKeyTile) std::fill(kd, kd + hd * kKeyTile, 0.0f);
      for (int64_t j = 0; j < nt; ++j) {
        const float* kr = k + (j0 + j) * ldk + h * hd;
        const float* vr = v + (j0 + j) * ldv + h * hd;
        for (int64_t d = 0; d < hd; ++d) kd[d * kKeyTile + j] = kr[d];
        float* vrow = vd + j * hd_pad;
        std::copy(vr, vr + hd, vrow);
        std::fill(vrow + hd, vrow + hd_pad, 0.0f);
      }
    }  // implicit barrier: the layout is complete before any row reads it
    AttnScratch sc(Tl::kRows, hd_pad);
    if (!sc.ok) {
#pragma omp atomic write
      alloc_failed = true;
    }
    // Every thread must reach the worksharing loop or none may: decide together.
#pragma omp barrier
    bool failed;
#pragma omp atomic read
    failed = alloc_failed;
    if (!failed) {
#pragma omp for schedule(static)
      for (int64_t item = 0; item < n_items; ++item) {
        const int64_t h = item / n_qitems;
        const int64_t i1 = std::min(T, (item % n_qitems + 1) * item_rows);
        for (int64_t i = (item % n_qitems) * item_rows; i < i1; i += Tl::kRows) {
          const int64_t rb = std::min<int64_t>(Tl::kRows, i1 - i);
          with_rows<Tl::kRows>(rb, [&]<int RB>() {
            dense_row_block<S, RB>(q + i * ldq + h * hd, ldq, kt_all + h * kt_head, vt_all + h * vt_head, T,
                                   hd, scale, out + i * ldo + h * hd, ldo, sc);
          });
        }
      }
    }
  }
  if (alloc_failed) throw std::bad_alloc();
}

template <class S>
void paged_causal_batch_dispatch(const PagedAttnSeq* seqs, int64_t n_seqs, int64_t n_heads,
                                 const KvCacheView& cache, float scale) {
  switch (cache.dtype) {
    case KvDType::F32:
      return paged_causal_batch_impl<S, KvDType::F32>(seqs, n_seqs, n_heads, cache, scale);
    case KvDType::BF16:
      return paged_causal_batch_impl<S, KvDType::BF16>(seqs, n_seqs, n_heads, cache, scale);
    case KvDType::F16:
      return paged_causal_batch_impl<S, KvDType::F16>(seqs, n_seqs, n_heads, cache, scale);
  }
}

// The single-sequence kernel is the batch of one (same items, same numbers).
template <class S>
void paged_causal_dispatch(const float* q, int64_t ldq, int64_t n_q, int64_t start_pos, int64_t n_heads,
                           const KvCacheView& cache, const int32_t* block_table, float scale, float* out,
                           int64_t ldo) {
  const PagedAttnSeq seq{q, ldq, n_q, start_pos, block_table, out, ldo};
  paged_causal_batch_dispatch<S>(&seq, 1, n_heads, cache, scale);
}

// Converts one f32 row of n values into the cache dtype.
template <class S>
void store_kv_row(void* dst, KvDType dtype, const float* src, int64_t n) {
  const int64_t n_full = n / S::W * S::W;
  const auto m = S::mask(n - n_full);
  switch (dtype) {
    case KvDType::F32: {
      float* d = static_cast<float*>(dst);
      for (int64_t i = 0; i < n_full; i += S::W) S::store(d + i, S::load(src + i));
      if (n_full < n) S::store(d + n_full, S::load(src + n_full, m), m);
      break;
    }
    case KvDType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n_full; i += S::W) S::store_bf16(d + i, S::load(src + i));
      if (n_full < n) S::store_bf16(d + n_full, S::load(src + n_full, m), m);
      break;
    }
    case KvDType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n_full; i += S::W) S::store_f16(d + i, S::load(src + i));
      if (n_full < n) S::store_f16(d + n_full, S::load(src + n_full, m), m);
      break;
    }
  }
}

template <class S>
void kv_cache_write_impl(const KvCacheView& cache, const int32_t* block_table, int64_t start_pos,
                         int64_t n_tokens, const float* k, int64_t ldk, const float* v, int64_t ldv) {
  const int64_t hd = cache.head_dim;
  const int64_t esize = kv_dtype_bytes(cache.dtype);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t pos = start_pos + t;
    const int64_t block_elem = int64_t(block_table[pos / cache.block_size]) * cache.block_stride;
    const int64_t off = pos % cache.block_size;
    for (int64_t h = 0; h < cache.n_kv_heads; ++h) {
      const int64_t elem = block_elem + (h * cache.block_size + off) * hd;
      store_kv_row<S>(static_cast<uint8_t*>(cache.k_base) + elem * esize, cache.dtype, k + t * ldk + h * hd,
                      hd);
      store_kv_row<S>(static_cast<uint8_t*>(cache.v_base) + elem * esize, cache.dtype, v + t * ldv + h * hd,
                      hd);
    }
  }
}

}  // namespace
}  // namespace recap::kernels
