#include "engine/memory_plan.h"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "engine/errors.h"
#include "engine/kv_cache.h"
#include "engine/threads.h"
#include "io/image.h"
#include "models/llava.h"
#include "models/preprocess.h"
#include "models/weight_names.h"
#include "models/weight_source.h"

namespace recap::engine {

using kernels::WeightFormat;

namespace {

// Code, heap arenas, thread stacks, the tokenizer and the template: measured around 60 MiB
// on the tiny model; rounded up.
constexpr uint64_t kProcessAllowance = 96ull << 20;

uint64_t f32_bytes(int64_t n) {
  return static_cast<uint64_t>(std::max<int64_t>(n, 0)) * sizeof(float);
}

// Scratch of one vision batch: per image the tower's activations (residual, layer norm,
// q|k|v, attention output, MLP hidden), one head's attention scores at a time per thread
// (counted for all heads: an upper bound), the projector's two outputs and the features
// waiting for the decoder.
uint64_t vision_buffer_bytes(const models::ModelConfig& c, int vision_batch) {
  if (!c.has_vision) return 0;
  const int64_t P = c.vision.num_patches(), T = P + 1, D = c.vision.hidden, I = c.vision.intermediate;
  const int64_t per_image =
      T * (6 * D + I) + c.vision.heads * T * T + P * (c.projector.hidden + c.projector.out);
  return f32_bytes(per_image) * static_cast<uint64_t>(std::max(1, vision_batch));
}

// Scratch of the largest decoder forward (one prompt's prefill): per token the residual,
// norm, q|k|v, attention output, gate|up and the MLP output, plus the prompt's embeddings.
uint64_t prefill_buffer_bytes(const models::TextConfig& t, int64_t tokens) {
  const int64_t q = t.heads * t.head_dim, kv = t.kv_heads * t.head_dim;
  return f32_bytes(tokens * (5 * t.hidden + q + 2 * kv + 3 * t.intermediate));
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// "max" or unreadable -> 0 (no limit).
uint64_t read_limit(const std::string& path) {
  std::string s = read_text(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.empty() || s == "max") return 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  // cgroup v1 reports "no limit" as a huge page-rounded number.
  if (v >= (1ull << 60)) return 0;
  return v;
}

uint64_t stat_field(const std::string& path, const std::string& key) {
  // "key value" (memory.stat) or "key: value kB" (/proc/meminfo), one per line.
  std::istringstream in(read_text(path));
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string k;
    unsigned long long v = 0;
    if (ls >> k >> v && k == key) return v;
  }
  return 0;
}

// The tightest memory limit on the cgroup path and its ancestors, and the anonymous memory
// already charged to the group holding it (page cache is reclaimable and not subtracted).
struct CgroupMemory {
  uint64_t limit = 0, used = 0;
  std::string source;
};

CgroupMemory cgroup_memory() {
  CgroupMemory out;
  std::istringstream lines(read_text("/proc/self/cgroup"));
  std::string line, v2_path, v1_path;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) v2_path = path;
    std::stringstream cs(controllers);
    for (std::string ctl; std::getline(cs, ctl, ',');)
      if (ctl == "memory") v1_path = path;
  }
  auto consider = [&](const std::string& dir, const char* limit_file, const char* stat_key,
                      const char* name) {
    const uint64_t lim = read_limit(dir + "/" + limit_file);
    if (lim > 0 && (out.limit == 0 || lim < out.limit)) {
      out.limit = lim;
      out.used = stat_field(dir + "/memory.stat", stat_key);
      out.source = name;
    }
  };
  // Inside a container the group's own directory is often the mount's root: try both.
  if (!v2_path.empty()) {
    for (std::string p = v2_path; !p.empty(); p = p.substr(0, p.rfind('/'))) {
      consider("/sys/fs/cgroup" + p, "memory.max", "anon", "cgroup v2 memory.max");
      if (p == "/") break;
    }
    consider("/sys/fs/cgroup", "memory.max", "anon", "cgroup v2 memory.max");
  }
  if (!v1_path.empty()) {
    for (std::string p = v1_path; !p.empty() && p != "/"; p = p.substr(0, p.rfind('/')))
      consider("/sys/fs/cgroup/memory" + p, "memory.limit_in_bytes", "total_rss",
               "cgroup v1 memory.limit_in_bytes");
    consider("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "total_rss",
             "cgroup v1 memory.limit_in_bytes");
  }
  return out;
}

const char* name_of(WeightFormat f) {
  return kernels::weight_format_name(f);
}

std::string breakdown(const MemoryEstimate& e) {
  return format_gib(e.total()) + " (weights " + format_gib(e.weights) + ", KV cache " +
         format_gib(e.kv_cache) + ", buffers " + format_gib(e.buffers) + ")";
}

std::string available_text(const AvailableMemory& a) {
  return format_gib(a.bytes) + " available (" + a.source + ")";
}

// "would fit: int8 (9.1 GiB), int4 (5.2 GiB)" or "no precision fits (int4 needs 5.2 GiB)".
std::string what_fits(const models::ModelConfig& c, const RunShape& s, const AvailableMemory& a) {
  std::string fits;
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    const MemoryEstimate e = estimate_memory(c, f, s);
    if (e.total() <= a.bytes)
      fits += std::string(fits.empty() ? "" : ", ") + name_of(f) + " (" + format_gib(e.total()) + ")";
  }
  if (!fits.empty()) return "would fit: " + fits;
  return "no precision fits (int4 needs " + format_gib(estimate_memory(c, WeightFormat::Int4, s).total()) +
         "; lower --max-batch or --kv-cache-mb, or free memory)";
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double vision_flops(const models::ModelConfig& c) {
  const double D = static_cast<double>(c.vision.hidden), I = static_cast<double>(c.vision.intermediate);
  const double P = static_cast<double>(c.vision.num_patches()), T = P + 1;
  const double K = static_cast<double>(c.vision.channels * c.vision.patch_size * c.vision.patch_size);
  const double per_layer = 2 * T * (4 * D * D + 2 * D * I) + 4 * T * T * D;
  const double projector = 2 * P *
                           (static_cast<double>(c.projector.in * c.projector.hidden) +
                            static_cast<double>(c.projector.hidden * c.projector.out));
  return 2 * P * K * D + static_cast<double>(c.vision.layers_to_run()) * per_layer + projector;
}

double decode_step_bytes(const models::TextConfig& t, WeightFormat f, int batch, int64_t positions,
                         kernels::KvDType kv) {
  const int64_t q = t.heads * t.head_dim, kvd = t.kv_heads * t.head_dim;
  const double per_layer =
      static_cast<double>(kernels::PackedWeight::packed_bytes(f, q + 2 * kvd, t.hidden) +
                          kernels::PackedWeight::packed_bytes(f, t.hidden, q) +
                          kernels::PackedWeight::packed_bytes(f, 2 * t.intermediate, t.hidden) +
                          kernels::PackedWeight::packed_bytes(f, t.hidden, t.intermediate));
  const double kv_bytes = 2.0 * static_cast<double>(kvd) * static_cast<double>(kv_dtype_size(kv)) *
                          static_cast<double>(positions) * batch;
  return static_cast<double>(t.layers) * (per_layer + kv_bytes) +
         static_cast<double>(kernels::PackedWeight::packed_bytes(f, t.vocab, t.hidden));
}

}  // namespace

int auto_batch_for_precision_choice(const RunShape& s) {
  return std::max(8, s.num_captions);
}

int auto_max_batch(const models::ModelConfig& c, kernels::WeightFormat precision, const RunShape& s,
                   uint64_t available_bytes) {
  const int least = std::max(1, s.num_captions);
  for (int b = kAutoMaxBatchCap; b > least; --b) {
    RunShape t = s;
    t.max_batch = b;
    if (estimate_memory(c, precision, t).total() <= available_bytes) return b;
  }
  return least;
}

std::string format_gib(uint64_t bytes) {
  char buf[48];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1ull << 30));
  else
    std::snprintf(buf, sizeof buf, "%.0f MiB", b / (1ull << 20));
  return buf;
}

uint64_t weight_memory_bytes(const models::ModelConfig& c, WeightFormat precision) {
  uint64_t total = 0;
  const std::string embed = c.has_text ? models::tensor_name(c.names, models::TextTensor::Embedding) : "";
  for (const models::ExpectedTensor& e : models::expected_tensors(c)) {
    if (!e.used) continue;
    const int64_t n = e.shape.empty() ? 1 : e.shape[0];
    const int64_t k = n > 0 ? e.numel() / n : 0;
    const uint64_t bytes =
        e.matrix ? kernels::PackedWeight::packed_bytes(precision, n, k) : f32_bytes(e.numel());
    total += bytes * ((c.has_text && e.name == embed && c.names.lm_head == embed) ? 2 : 1);
  }
  return total;
}

int64_t prompt_positions(const models::ModelConfig& c, const std::vector<int32_t>& ids) {
  int64_t n = 0;
  for (int32_t id : ids) n += (id == -200 || id == c.image_token_index) ? c.vision.num_patches() : 1;
  return n;
}

int64_t kv_cache_blocks(const models::ModelConfig& c, const RunShape& s) {
  const models::TextConfig& t = c.text;
  if (s.kv_cache_mb > 0) {
    const uint64_t per_block = KvCacheShape::for_text(t, s.kv_dtype).bytes_per_block();
    return per_block ? static_cast<int64_t>((static_cast<uint64_t>(s.kv_cache_mb) << 20) / per_block) : 0;
  }
  const int64_t n = s.prompt_positions;
  return (n + n / 4 + s.max_new_tokens + kKvBlockPositions - 1) / kKvBlockPositions *
         std::max(1, s.max_batch);
}

MemoryEstimate estimate_memory(const models::ModelConfig& c, WeightFormat precision, const RunShape& s) {
  MemoryEstimate e;
  e.precision = precision;
  e.weights = weight_memory_bytes(c, precision);
  const models::TextConfig& t = c.text;
  if (c.has_text)
    e.kv_cache = static_cast<uint64_t>(kv_cache_blocks(c, s)) *
                 KvCacheShape::for_text(t, s.kv_dtype).bytes_per_block();
  const int vb = s.vision_batch > 0 ? s.vision_batch : std::min(std::max(1, s.max_batch), 8);
  uint64_t buffers = kProcessAllowance + vision_buffer_bytes(c, vb);
  if (c.has_text) {
    buffers += prefill_buffer_bytes(t, s.prompt_positions + s.prompt_positions / 4);
    buffers += f32_bytes(static_cast<int64_t>(std::max(1, s.max_batch)) * t.vocab);  // logits rows
  }
  // Preprocessed images queued between the loader and the tower (caption's look-ahead), and
  // the encoded features of those waiting for a batch slot.
  if (c.has_vision) {
    const int64_t S = c.vision.image_size;
    const int64_t queued = 2 * std::max(1, s.max_batch) + vb + std::max(1, s.io_workers);
    buffers += f32_bytes(queued * 3 * S * S);
    if (c.has_text)
      buffers += f32_bytes(static_cast<int64_t>(s.max_batch) * c.vision.num_patches() * t.hidden);
  }
  // Packing from a float checkpoint: the largest fused matrix is joined in a temporary (f32
  // when its parts' dtypes differ) before it is packed.
  if (s.from_float_checkpoint && c.has_text)
    buffers += f32_bytes(
        std::max(2 * t.intermediate * t.hidden, (t.heads + 2 * t.kv_heads) * t.head_dim * t.hidden));
  e.buffers = buffers;
  return e;
}

AvailableMemory available_memory() {
  AvailableMemory a;
  if (const char* env = std::getenv("RECAP_MEMORY_AVAILABLE_MB"); env && *env) {
    char* end = nullptr;
    const long long mb = std::strtoll(env, &end, 10);
    if (end == env || *end != '\0' || mb <= 0)
      throw UsageError(std::string("RECAP_MEMORY_AVAILABLE_MB='") + env +
                       "' is not a positive number of MiB");
    a.bytes = static_cast<uint64_t>(mb) << 20;
    a.source = "RECAP_MEMORY_AVAILABLE_MB";
    return a;
  }
  a.bytes = stat_field("/proc/meminfo", "MemAvailable:") * 1024ull;
  a.source = "MemAvailable";
  const CgroupMemory cg = cgroup_memory();
  if (cg.limit > 0) {
    const uint64_t head = cg.limit > cg.used ? cg.limit - cg.used : 0;
    if (a.bytes == 0 || head < a.bytes) {
      a.bytes = head;
      a.source = cg.source;
    }
  }
  // `ulimit -v` (RLIMIT_AS, what many schedulers set per task) bounds the address space, mapped
  // weights included: what is left of it is what the run may still map or allocate.
  struct rlimit as_limit {};
  if (::getrlimit(RLIMIT_AS, &as_limit) == 0 && as_limit.rlim_cur != RLIM_INFINITY) {
    const uint64_t mapped = stat_field("/proc/self/status", "VmSize:") * 1024ull;
    const uint64_t limit = static_cast<uint64_t>(as_limit.rlim_cur);
    const uint64_t head = limit > mapped ? limit - mapped : 0;
    if (a.bytes == 0 || head < a.bytes) {
      a.bytes = head;
      a.source = "RLIMIT_AS (ulimit -v)";
    }
  }
  return a;
}

PrecisionChoice choose_precision(const std::string& requested, std::optional<WeightFormat> cache_precision,
                                 const models::ModelConfig& c, const RunShape& s,
                                 const AvailableMemory& avail) {
  PrecisionChoice ch;
  RunShape shape = s;
  if (cache_precision) shape.from_float_checkpoint = false;
  auto finish = [&](WeightFormat f, const std::string& why) {
    ch.precision = f;
    ch.estimate = estimate_memory(c, f, shape);
    ch.fits = ch.estimate.total() <= avail.bytes;
    ch.reason =
        why + ", " + format_gib(ch.estimate.total()) + " needed, " + format_gib(avail.bytes) + " available";
    if (!ch.fits)
      ch.error = std::string("not enough memory for precision ") + name_of(f) + " (" + why + "): needs " +
                 breakdown(ch.estimate) + ", " + available_text(avail) + "; " + what_fits(c, shape, avail);
    return ch;
  };
  if (requested != "auto")
    return finish(as_usage_error("--precision", [&] { return kernels::parse_weight_format(requested); }),
                  "--precision " + requested);
  if (cache_precision) return finish(*cache_precision, "auto: quantized cache");
  const MemoryEstimate int8 = estimate_memory(c, WeightFormat::Int8, shape);
  if (int8.total() <= avail.bytes) return finish(WeightFormat::Int8, "auto: float checkpoint");
  return finish(WeightFormat::Int4,
                "auto: float checkpoint too large for int8 (" + format_gib(int8.total()) + ")");
}

Calibration calibrate_throughput(const models::ModelConfig& full, WeightFormat precision, const RunShape& s,
                                 int threads) {
  if (!full.has_vision || !full.has_text)
    throw UsageError(full.weights_dir + ": calibration needs the vision tower and the language model");
  const auto t_start = std::chrono::steady_clock::now();
  Calibration cal;
  cal.precision = precision;
  cal.threads = threads;
  apply_threads(threads);
  // One vision layer run, one decoder layer, a reduced vocabulary: the kernels and shapes of
  // the real model at a fraction of the weights (built synthetic, packed directly).
  models::ModelConfig c = full;
  if (c.vision.select_layer < 0)
    c.vision.layers = -c.vision.select_layer;
  else
    c.vision.layers = c.vision.select_layer = 1;
  c.text.layers = 1;
  c.text.vocab = std::min<int64_t>(c.text.vocab, 16384);
  c.text.max_position = std::min<int64_t>(c.text.max_position, s.prompt_positions + s.max_new_tokens + 64);
  c.text.tie_embeddings = false;
  models::SyntheticWeightSource src(1, 0.02f);
  models::ModelOptions mo;
  mo.precision = precision;
  mo.kv_dtype = s.kv_dtype;
  auto model = models::LlavaModel::load_from(c, &src, &src, mo);

  std::mt19937_64 rng(1);
  io::Image img;
  img.width = 640;
  img.height = 480;
  img.rgb.resize(static_cast<size_t>(img.width * img.height * 3));
  for (auto& b : img.rgb) b = static_cast<uint8_t>(rng() & 0xff);
  const models::PreprocessConfig pc = models::from_vision_config(c.vision);
  const int64_t S = c.vision.image_size, P = c.vision.num_patches(), Dt = c.text.hidden;
  std::vector<float> pixels(static_cast<size_t>(3 * S * S));
  auto t0 = std::chrono::steady_clock::now();
  models::preprocess_llava_into(img, pc, pixels.data());
  const double preprocess_s = seconds_since(t0);

  std::vector<float> features(static_cast<size_t>(P * Dt));
  model->encode_images(pixels.data(), 1, features.data());  // warm-up: scratch, pages
  const double cpu0 = cpu_seconds();
  const auto timed0 = std::chrono::steady_clock::now();
  t0 = std::chrono::steady_clock::now();
  model->encode_images(pixels.data(), 1, features.data());
  cal.vision_s_per_image = seconds_since(t0) * vision_flops(full) / vision_flops(c);

  const int64_t N = std::max<int64_t>(s.prompt_positions, 1);
  const int B = std::max(1, s.max_batch);
  const int steps = 3;
  const int64_t per_seq = N + steps + 1;
  KvCachePool pool(KvCacheShape::for_text(c.text, s.kv_dtype),
                   (per_seq + kKvBlockPositions - 1) / kKvBlockPositions * (B + 1));
  std::vector<float> embeds(static_cast<size_t>(N * Dt));
  std::normal_distribution<float> nd(0.f, 0.02f);
  for (auto& v : embeds) v = nd(rng);
  std::vector<float> logits(static_cast<size_t>(B) * static_cast<size_t>(c.text.vocab));
  std::vector<int32_t> table0 = pool.allocate(per_seq);
  models::SeqChunk pre;
  pre.embeds = embeds.data();
  pre.n_tokens = std::min<int64_t>(N, 8);
  pre.block_table = table0.data();
  model->forward({pre}, pool.views(), logits.data());  // warm-up
  pre.n_tokens = N;
  t0 = std::chrono::steady_clock::now();
  model->forward({pre}, pool.views(), logits.data());
  // The lm_head runs for the last position only: the decoder layers are the work.
  cal.prefill_tok_s = static_cast<double>(N) / (seconds_since(t0) * static_cast<double>(full.text.layers));

  std::vector<std::vector<int32_t>> tables;
  for (int b = 0; b < B; ++b) tables.push_back(pool.allocate(per_seq));
  std::vector<int32_t> ids(static_cast<size_t>(B), 1);
  double decode_s = 0;
  for (int step = 0; step <= steps; ++step) {
    std::vector<models::SeqChunk> chunks(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) {
      chunks[static_cast<size_t>(b)].ids = &ids[static_cast<size_t>(b)];
      chunks[static_cast<size_t>(b)].n_tokens = 1;
      chunks[static_cast<size_t>(b)].start_pos = N + step;
      chunks[static_cast<size_t>(b)].block_table = tables[static_cast<size_t>(b)].data();
    }
    t0 = std::chrono::steady_clock::now();
    model->forward(chunks, pool.views(), logits.data());
    if (step > 0) decode_s += seconds_since(t0);  // step 0 warms up
  }
  const double scale = decode_step_bytes(full.text, precision, B, N, s.kv_dtype) /
                       decode_step_bytes(c.text, precision, B, N, s.kv_dtype);
  cal.decode_tok_s = static_cast<double>(B) * steps / (decode_s * scale);
  // Includes the untimed warm-ups between the phases: a close enough share for a warning.
  cal.cpu_share = (cpu_seconds() - cpu0) / (seconds_since(timed0) * std::max(1, threads));
  cal.seconds_per_image = preprocess_s + cal.vision_s_per_image + static_cast<double>(N) / cal.prefill_tok_s +
                          static_cast<double>(s.max_new_tokens) / cal.decode_tok_s;
  cal.images_per_hour = 3600 / cal.seconds_per_image;
  cal.wall_s = seconds_since(t_start);
  return cal;
}

}  // namespace recap::engine
