// Memory planning: how much memory a caption run needs at each weight precision, how much
// this machine (or its cgroup) can give, and which precision `--precision auto` picks.
//
// Everything but available_memory() is a pure function of a ModelConfig and the run's
// shape, so it is unit-testable and `recap-engine plan` prints the same figures `caption`
// checks before it loads anything.
//
// The estimate (docs/REAL_MODEL.md has the per-precision table of the real model):
//   weights  every matrix the forward pass reads (models::expected_tensors, used only) at its
//            packed size (kernels::PackedWeight::packed_bytes: panel padding and int8/int4 group
//            scales included), the token embedding packed too, everything else f32; a tied
//            lm_head counts twice (the decoder packs its own copy). Same rule as `inspect`.
//   kv cache what caption allocates: blocks of kKvBlockPositions (engine/kv_cache.h) for
//            max_batch sequences of prompt + prompt/4 + max_new_tokens positions (or
//            --kv-cache-mb when given).
//   buffers  scratch of the largest vision batch and prefill, the logits rows, the loader's
//            queue of preprocessed images, the transient buffer of the largest fused matrix
//            while packing from a float checkpoint, and a fixed allowance for the process
//            (code, heap, thread stacks).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "models/config.h"

namespace recap::engine {

// What the run looks like, for sizing.
struct RunShape {
  int64_t prompt_positions = 0;  // spliced prompt length (image rows + text tokens)
  int max_new_tokens = 128;
  int max_batch = 8;
  int vision_batch = 0;  // 0: min(max_batch, 8), as caption
  int num_captions = 1;
  int io_workers = 8;
  int64_t kv_cache_mb = 0;  // --kv-cache-mb; 0: enough for max_batch sequences
  kernels::KvDType kv_dtype = kernels::KvDType::F32;
  bool from_float_checkpoint = true;  // packing at load needs a transient conversion buffer
};

struct MemoryEstimate {
  kernels::WeightFormat precision = kernels::WeightFormat::F32;
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t buffers = 0;
  uint64_t total() const { return weights + kv_cache + buffers; }
};

// Packed bytes of the weights the forward pass reads, at `precision`.
uint64_t weight_memory_bytes(const models::ModelConfig& c, kernels::WeightFormat precision);
// Positions of a prompt whose ids hold image placeholders (-200 or c.image_token_index): each
// one becomes vision.num_patches() rows.
int64_t prompt_positions(const models::ModelConfig& c, const std::vector<int32_t>& ids);
// The KV cache blocks caption allocates for this shape (kKvBlockPositions per block).
int64_t kv_cache_blocks(const models::ModelConfig& c, const RunShape& s);
MemoryEstimate estimate_memory(const models::ModelConfig& c, kernels::WeightFormat precision,
                               const RunShape& s);

// Memory this process may still use, and where the figure comes from.
struct AvailableMemory {
  uint64_t bytes = 0;
  std::string source;  // "RECAP_MEMORY_AVAILABLE_MB", "cgroup v2 memory.max", "cgroup v1 ...", "MemAvailable"
};
// RECAP_MEMORY_AVAILABLE_MB (MiB; tests and what-if runs) when set, else the smaller of
// /proc/meminfo MemAvailable, the cgroup's headroom (v2 memory.max, v1
// memory.limit_in_bytes, minus the group's anonymous memory already in use) and what
// RLIMIT_AS (`ulimit -v`) leaves of the address space (minus this process's VmSize). Throws
// UsageError (engine/errors.h: exit 2) naming the variable when it is not a positive integer.
AvailableMemory available_memory();

// The precision a run uses and why.
struct PrecisionChoice {
  kernels::WeightFormat precision = kernels::WeightFormat::Int8;
  MemoryEstimate estimate;  // of the chosen precision
  bool fits = true;
  std::string reason;  // "auto: float checkpoint, 9.1 GiB needed, 21.3 GiB available"
  // When !fits: one line with the figures and the precision that would fit, or none.
  std::string error;
};

// requested: "auto" or f32|bf16|int8|int4 (throws UsageError otherwise).
// cache_precision: the quantized cache's precision when weights_dir is one.
// auto: the cache's precision; else int8 (the fastest precision whose caption quality is
// measured within the bounds of docs/NUMERICS.md), int4 when int8 does not fit; f32 and bf16
// only when asked.
PrecisionChoice choose_precision(const std::string& requested,
                                 std::optional<kernels::WeightFormat> cache_precision,
                                 const models::ModelConfig& c, const RunShape& s,
                                 const AvailableMemory& avail);

// The largest batch --max-batch 0 picks: batched decode gains little beyond it (each step's
// weight read is already shared by 16 sequences; docs/PERFORMANCE.md), while the KV cache and
// every sample's latency keep growing with it.
constexpr int kAutoMaxBatchCap = 16;
// The shape --max-batch 0 starts from: the precision is chosen as for this batch (8, or
// num_captions when larger), then auto_max_batch sizes the batch for that precision.
int auto_batch_for_precision_choice(const RunShape& s);
// `--max-batch 0` (caption and plan alike): the largest batch from max(1, num_captions) up to
// kAutoMaxBatchCap whose estimate_memory at `precision` fits `available_bytes`; max(1,
// num_captions) when none larger does.
int auto_max_batch(const models::ModelConfig& c, kernels::WeightFormat precision, const RunShape& s,
                   uint64_t available_bytes);

// "9.1 GiB" (MiB below 1 GiB).
std::string format_gib(uint64_t bytes);

// Throughput calibration for `plan`: a few seconds of the real kernels at the model's shapes
// (one vision layer, one decoder layer, a reduced vocabulary, synthetic weights), each phase
// scaled to the whole model by its work (FLOPs for the tower and prefill, weight + KV bytes
// for decode), combined as `recap-engine bench` does:
// images/hour = 3600 / (preprocess + vision + prompt/prefill_tok_s + new_tokens/decode_tok_s(B)).
struct Calibration {
  kernels::WeightFormat precision = kernels::WeightFormat::Int8;
  int threads = 1;
  double vision_s_per_image = 0;
  double prefill_tok_s = 0;
  double decode_tok_s = 0;  // aggregate at max_batch
  double seconds_per_image = 0;
  double images_per_hour = 0;
  double wall_s = 0;  // time the calibration itself took
  // CPU time / (wall time x threads) over the timed phases: 1.0 on an idle machine; less means
  // other processes shared the cores and the figures are pessimistic by about that factor.
  double cpu_share = 0;
};
Calibration calibrate_throughput(const models::ModelConfig& c, kernels::WeightFormat precision,
                                 const RunShape& s, int threads);

}  // namespace recap::engine
