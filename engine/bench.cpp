#include "engine/bench.h"

#include <jpeglib.h>
#include <omp.h>
#include <png.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <vector>

#include "engine/caption_pipeline.h"
#include "engine/errors.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "engine/threads.h"
#include "io/image.h"
#include "kernels/gemm.h"
#include "kernels/isa.h"
#include "kernels/machine_limits.h"
#include "models/llava.h"
#include "models/preprocess.h"
#include "models/tokenizer.h"
#include "models/weight_names.h"
#include "models/weight_source.h"

namespace recap::engine {

namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using kernels::WeightFormat;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds of this process (all threads): with wall time, tells how much of the machine
// the run actually got on a shared host (cpu_share = cpu / (wall * threads)).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;  // Linux: KiB
}

void progress(const char* fmt, double a = 0, double b = 0) {
  std::fprintf(stderr, "[bench] ");
  std::fprintf(stderr, fmt, a, b);
  std::fprintf(stderr, "\n");
}

// Bytes of the decoder's packed matrices read by one decode step (every layer's q/k/v/o,
// gate/up, down and lm_head; the embedding gather reads one row and is left out).
double decoder_step_weight_bytes(const models::TextConfig& t, WeightFormat f) {
  const int64_t kv_dim = t.kv_heads * t.head_dim, q_dim = t.heads * t.head_dim;
  double per_layer =
      static_cast<double>(kernels::PackedWeight::packed_bytes(f, q_dim + 2 * kv_dim, t.hidden)) +
      static_cast<double>(kernels::PackedWeight::packed_bytes(f, t.hidden, q_dim)) +
      static_cast<double>(kernels::PackedWeight::packed_bytes(f, 2 * t.intermediate, t.hidden)) +
      static_cast<double>(kernels::PackedWeight::packed_bytes(f, t.hidden, t.intermediate));
  return per_layer * static_cast<double>(t.layers) +
         static_cast<double>(kernels::PackedWeight::packed_bytes(f, t.vocab, t.hidden));
}

// Multiply-adds x2 of the decoder per prompt token (lm_head excluded: prefill computes logits
// for the last position only), plus causal attention (QK^T and PV) averaged over a prompt of
// n tokens.
double decoder_prefill_flops_per_token(const models::TextConfig& t, int64_t n) {
  const double kv_dim = static_cast<double>(t.kv_heads * t.head_dim),
               q_dim = static_cast<double>(t.heads * t.head_dim);
  const double D = static_cast<double>(t.hidden), I = static_cast<double>(t.intermediate);
  const double gemm = 2 * (D * (q_dim + 2 * kv_dim) + q_dim * D + D * 2 * I + I * D);
  const double attn = 4 * q_dim * (static_cast<double>(n) + 1) / 2;
  return (gemm + attn) * static_cast<double>(t.layers);
}

double vision_flops_per_image(const models::ModelConfig& c) {
  const double D = static_cast<double>(c.vision.hidden), I = static_cast<double>(c.vision.intermediate);
  const double P = static_cast<double>(c.vision.num_patches()), T = P + 1;
  const double K = static_cast<double>(c.vision.channels * c.vision.patch_size * c.vision.patch_size);
  const double layers = static_cast<double>(c.vision.layers_to_run());
  const double per_layer = 2 * T * (4 * D * D + 2 * D * I) + 2 * 2 * T * T * D;
  const double projector = 2 * P *
                           (static_cast<double>(c.projector.in * c.projector.hidden) +
                            static_cast<double>(c.projector.hidden * c.projector.out));
  return 2 * P * K * D + layers * per_layer + projector;
}

double bw_bytes_per_s(double gbs) {
  return gbs > 0 ? gbs * 1e9 : 1e30;  // no measurement: bandwidth does not bind
}

double kv_bytes_per_position(const models::TextConfig& t, kernels::KvDType d) {
  return 2.0 * static_cast<double>(t.layers * t.kv_heads * t.head_dim) *
         static_cast<double>(kv_dtype_size(d));
}

// Parameters of the decoder's matrices one decode step multiplies (every layer's q/k/v/o,
// gate/up, down, and lm_head): a step of B tokens costs 2 x this x B operations.
double decoder_step_params(const models::TextConfig& t) {
  const double kv_dim = static_cast<double>(t.kv_heads * t.head_dim),
               q_dim = static_cast<double>(t.heads * t.head_dim);
  const double D = static_cast<double>(t.hidden), I = static_cast<double>(t.intermediate);
  return (D * (q_dim + 2 * kv_dim) + q_dim * D + D * 2 * I + I * D) * static_cast<double>(t.layers) +
         static_cast<double>(t.vocab) * D;
}

// Random-content images for the caption phase (noise: the worst case for the codecs, and no
// two alike). Throws std::runtime_error naming the file when it cannot be written.
void write_random_png(const std::string& path, int w, int h, std::mt19937_64& rng) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (auto& b : rgb) b = static_cast<uint8_t>(rng() & 0xff);
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&img, path.c_str(), 0, rgb.data(), 0, nullptr))
    throw std::runtime_error("bench: cannot write " + path + ": " + img.message);
}

struct JpegErrorJump {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
};

// libjpeg reports errors through error_exit, which must not return: jump back to the writer
// (nothing with a destructor is live between setjmp and the libjpeg calls).
[[noreturn]] void jpeg_error_jump(j_common_ptr c) {
  std::longjmp(reinterpret_cast<JpegErrorJump*>(c->err)->jump, 1);
}

bool encode_jpeg(const uint8_t* rgb, int w, int h, unsigned char** out, unsigned long* out_size) {
  jpeg_compress_struct c{};
  JpegErrorJump err{};
  c.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_jump;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&c);
    return false;
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, out, out_size);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row =
        const_cast<JSAMPROW>(rgb + static_cast<size_t>(c.next_scanline) * static_cast<size_t>(w) * 3);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  return true;
}

void write_random_jpeg(const std::string& path, int w, int h, std::mt19937_64& rng) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (auto& b : rgb) b = static_cast<uint8_t>(rng() & 0xff);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const bool ok = encode_jpeg(rgb.data(), w, h, &buf, &size);
  std::string bytes = ok ? std::string(reinterpret_cast<const char*>(buf), size) : std::string();
  std::free(buf);
  if (!ok) throw std::runtime_error("bench: cannot encode " + path + " as JPEG");
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("bench: cannot write " + path);
}

// Removes a temp directory however the phase ends.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

// The compute peak that bounds a GEMM of this weight format (int8/int4 multiply int8
// activations with vpdpbusd; bf16 uses vdpbf16ps; f32 FMA). Falls back to the f32 peak
// when the CPU lacks the instruction.
struct ComputeBound {
  double gops = 0;
  std::string name;
};

}  // namespace

bool is_synthetic_preset(const std::string& name) {
  return name == "llava-llama3-8b";
}

models::ModelConfig synthetic_preset_config(const std::string& name) {
  if (!is_synthetic_preset(name))
    throw UsageError("unknown synthetic preset '" + name + "' (known: llava-llama3-8b)");
  const models::VisionConfig* v = models::vision_preset("openai/clip-vit-large-patch14-336");
  if (!v) throw std::runtime_error("no built-in vision preset for openai/clip-vit-large-patch14-336");
  models::ModelConfig c;
  c.layout = models::Layout::LlavaOrig;
  c.architecture = "LlavaLlamaForCausalLM (synthetic " + name + ")";
  c.weights_dir = "synthetic:" + name;
  c.vision_weights_dir = c.weights_dir;
  c.has_vision = true;
  c.has_text = true;
  c.vision = *v;  // CLIP-ViT-L/14-336: 24 layers, 1024/4096, 16 heads, select layer -2
  c.projector.type = "mlp2x_gelu";
  c.projector.in = c.vision.hidden;
  c.projector.hidden = 4096;
  c.projector.out = 4096;
  c.text.hidden = 4096;  // LLaMA-3-8B
  c.text.intermediate = 14336;
  c.text.layers = 32;
  c.text.heads = 32;
  c.text.kv_heads = 8;
  c.text.head_dim = 128;
  c.text.vocab = 128256;
  c.text.rms_eps = 1e-5f;
  c.text.rope_theta = 500000.f;
  c.text.max_position = 8192;
  c.generation.bos_token_id = 128000;
  c.generation.eos_token_ids = {128001, 128009};
  c.names = models::resolve_text_names(models::Layout::LlavaOrig, [](const std::string&) { return true; });
  c.names.vision_prefix = models::layout_naming(models::Layout::LlavaOrig).vision.front();
  c.text_dtype = "synthetic";
  c.vision_tower_source = "synthetic";
  c.vision_config_source = "built-in preset openai/clip-vit-large-patch14-336";
  c.preprocessor_source = "defaults (CLIP)";
  return c;
}

json run_bench(const BenchOptions& o) {
  // Flags and the checkpoint are checked before the machine limits are measured, so a usage
  // or configuration error (exit 2) costs no benchmark time.
  if (o.max_batch < 1) throw UsageError("--max-batch must be >= 1");
  if (o.new_tokens < 1) throw UsageError("--new-tokens must be >= 1");
  if (o.prompt_tokens < 0) throw UsageError("--prompt-tokens must be >= 0");
  if (o.images < 1) throw UsageError("--images must be >= 1");
  if (o.tower_batch < 0) throw UsageError("--tower-batch must be >= 0");
  const WeightFormat format =
      as_usage_error("--precision", [&] { return kernels::parse_weight_format(o.precision); });
  const kernels::KvDType kv_dtype = as_usage_error("--kv-dtype", [&] { return parse_kv_dtype(o.kv_dtype); });
  models::Checkpoint ck;
  if (o.synthetic.empty()) {
    models::LoadOptions lo;
    lo.vision_weights_dir = o.vision_weights_dir;
    // Whatever stops the checkpoint from opening (missing folder, malformed config.json or
    // safetensors header) is its fault: exit 2, the message naming the file.
    ck = as_usage_error("", [&] { return models::open_checkpoint(o.weights_dir, lo); });
    if (!ck.config.has_vision || !ck.config.has_text)
      throw UsageError(o.weights_dir + ": bench needs the vision tower, projector and language model");
  }
  if (o.caption_images < 0) throw UsageError("--caption-images must be >= 0");
  // The caption phase tokenizes a real prompt and decodes real captions: synthetic weights
  // come without a tokenizer, and no stand-in is bundled.
  if (o.caption_images > 0 && !o.synthetic.empty() && o.tokenizer_path.empty())
    throw UsageError(
        "--synthetic needs --tokenizer (the model's tokenizer.json, Llama-3's for llava-llama3-8b) for the "
        "caption phase; pass it, or --caption-images 0 to skip that phase");
  // The caption phase's tokenizer, found before anything is measured: a missing one is a
  // usage error, not a failure after minutes of benchmarking.
  std::unique_ptr<models::Tokenizer> tokenizer;
  if (o.caption_images > 0) {
    const models::ModelConfig tok_cfg =
        o.synthetic.empty() ? ck.config : synthetic_preset_config(o.synthetic);
    try {
      tokenizer = std::make_unique<models::Tokenizer>(
          models::open_tokenizer(tok_cfg, models::find_tokenizer(o.weights_dir, o.tokenizer_path)));
    } catch (const std::exception& e) {
      throw UsageError(std::string(e.what()) +
                       " (the caption phase needs it; --caption-images 0 skips that phase)");
    }
  }

  const ThreadBudget tb = resolve_threads(o.threads);
  apply_threads(tb.threads);
  json r;
  r["isa"] = kernels::isa_name(kernels::active_isa());
  r["threads"] = tb.threads;
  r["threads_source"] = tb.source;
  r["precision"] = kernels::weight_format_name(format);
  r["kv_dtype"] = kv_dtype_name(kv_dtype);

  // Machine limits first, on an idle process (the model's pages are not yet touched), and
  // again after the last phase (refresh_limits): every fraction uses the larger of the two
  // probes, so a probe that ran while the host clocked down or was busy cannot flatter a
  // fraction (an idle run once read the int8 peak 20% low at the start).
  progress("measuring machine limits (%.0f threads)", tb.threads);
  struct Probes {
    kernels::LimitProbe bw, f32p, i8p, bf16p;
  };
  auto measure_probes = [&] {
    return Probes{kernels::measure_read_bandwidth(tb.threads), kernels::measure_f32_fma_peak(tb.threads),
                  kernels::measure_int8_dot_peak(tb.threads), kernels::measure_bf16_dot_peak(tb.threads)};
  };
  auto probe_values = [](const Probes& p) {
    return json{{"read_bandwidth_gbs", p.bw.value},
                {"f32_fma_gflops", p.f32p.value},
                {"int8_dot_gops", p.i8p.value},
                {"bf16_dot_gflops", p.bf16p.value}};
  };
  const Probes at_start = measure_probes();
  const json limits_at_start = probe_values(at_start);
  kernels::LimitProbe bw = at_start.bw, f32p = at_start.f32p, i8p = at_start.i8p, bf16p = at_start.bf16p;
  ComputeBound cb;
  auto set_limits = [&] {
    r["limits"] = {{"read_bandwidth_gbs", bw.value}, {"read_bandwidth_probe", bw.instruction},
                   {"f32_fma_gflops", f32p.value},   {"f32_fma_probe", f32p.instruction},
                   {"int8_dot_gops", i8p.value},     {"int8_dot_probe", i8p.instruction},
                   {"bf16_dot_gflops", bf16p.value}, {"bf16_dot_probe", bf16p.instruction}};
    if ((format == WeightFormat::Int8 || format == WeightFormat::Int4) && i8p.value > 0)
      cb = {i8p.value, std::string("int8 dot peak (") + i8p.instruction + ")"};
    else if (format == WeightFormat::BF16 && bf16p.value > 0)
      cb = {bf16p.value, std::string("bf16 dot peak (") + bf16p.instruction + ")"};
    else
      cb = {f32p.value, std::string("f32 FMA peak (") + f32p.instruction + ")"};
  };
  set_limits();
  bool limits_refreshed = false;
  json limits_at_end;
  auto refresh_limits = [&] {
    if (limits_refreshed) return;
    limits_refreshed = true;
    progress("measuring machine limits again (%.0f threads)", tb.threads);
    auto keep_max = [](kernels::LimitProbe& a, kernels::LimitProbe b) {
      if (b.value > a.value) a = b;
    };
    const Probes at_end = measure_probes();
    limits_at_end = probe_values(at_end);
    keep_max(bw, at_end.bw);
    keep_max(f32p, at_end.f32p);
    keep_max(i8p, at_end.i8p);
    keep_max(bf16p, at_end.bf16p);
    set_limits();
  };

  // Load.
  models::ModelOptions mo;
  mo.precision = format;
  mo.kv_dtype = kv_dtype;
  std::unique_ptr<models::LlavaModel> model;
  const auto t_load = Clock::now();
  if (!o.synthetic.empty()) {
    const models::ModelConfig cfg = synthetic_preset_config(o.synthetic);
    progress("building synthetic weights (real shapes), packing each matrix directly");
    models::SyntheticWeightSource src(o.seed, 0.02f);
    model = models::LlavaModel::load_from(cfg, &src, &src, mo);
    r["model"] = "synthetic:" + o.synthetic;
  } else {
    // Missing or malformed tensors, a cache of another precision: the checkpoint's fault (exit 2).
    model = as_usage_error("", [&] { return models::LlavaModel::load(ck, mo); });
    r["model"] = o.weights_dir;
  }
  const double load_s = seconds_since(t_load);
  const models::ModelConfig& c = model->config();
  r["load_s"] = load_s;
  r["weight_bytes"] = static_cast<double>(model->weight_bytes());
  r["rss_after_load_bytes"] = peak_rss_bytes();
  progress("loaded in %.1f s, %.2f GiB of packed weights", load_s,
           static_cast<double>(model->weight_bytes()) / (1 << 30));

  const int64_t P = c.vision.num_patches(), S = c.vision.image_size, Dt = c.text.hidden, V = c.text.vocab;
  const int64_t prompt_len = P + o.prompt_tokens;
  r["shapes"] = {{"vision_layers_run", c.vision.layers_to_run()},
                 {"vision_hidden", c.vision.hidden},
                 {"image_size", S},
                 {"image_tokens", P},
                 {"text_layers", c.text.layers},
                 {"text_hidden", Dt},
                 {"text_intermediate", c.text.intermediate},
                 {"heads", c.text.heads},
                 {"kv_heads", c.text.kv_heads},
                 {"vocab", V},
                 {"prompt_tokens_text", o.prompt_tokens},
                 {"prompt_tokens_total", prompt_len}};

  std::mt19937_64 rng(o.seed);

  // Preprocessing of a random 640x480 image (pixels from a uniform generator: decode cost
  // depends on the codec, not measured here).
  io::Image img;
  img.width = 640;
  img.height = 480;
  img.rgb.resize(static_cast<size_t>(img.width * img.height * 3));
  for (auto& b : img.rgb) b = static_cast<uint8_t>(rng() & 0xff);
  const models::PreprocessConfig pc = models::from_vision_config(c.vision);
  std::vector<float> pixels(static_cast<size_t>(3 * S * S));
  const int pre_reps = o.quick ? 2 : 10;
  models::preprocess_llava_into(img, pc, pixels.data());  // warm-up
  const auto t_pre = Clock::now();
  for (int i = 0; i < pre_reps; ++i) models::preprocess_llava_into(img, pc, pixels.data());
  const double preprocess_ms = seconds_since(t_pre) * 1000 / pre_reps;
  progress("preprocess %.2f ms/image", preprocess_ms);

  // Vision tower + projector, batch 1.
  std::vector<float> features(static_cast<size_t>(P * Dt));
  double vis_wall = 0;
  if (!o.quick) model->encode_images(pixels.data(), 1, features.data());  // warm-up (scratch)
  const double cpu_vis0 = cpu_seconds();  // after the warm-up, like the timed runs
  double vision_best = 1e30, vision_sum = 0;
  for (int i = 0; i < o.images; ++i) {
    const auto t = Clock::now();
    model->encode_images(pixels.data(), 1, features.data());
    const double s = seconds_since(t);
    vision_best = std::min(vision_best, s);
    vision_sum += s;
    vis_wall += s;
    progress("vision tower %.0f ms/image", s * 1000);
  }
  const double vision_ms = vision_sum / o.images * 1000;
  const double cpu_vis = cpu_seconds() - cpu_vis0;
  const double vision_flops = vision_flops_per_image(c);

  // Vision tower + projector at the caption job's tower batch (one timed run after a warm-up
  // at the same batch, whose scratch is larger than batch 1's).
  double vision_batch_ms = 0, vision_batch_cpu_share = 0;
  if (o.tower_batch > 1) {
    const int64_t nb = o.tower_batch;
    std::vector<float> batch_pixels(static_cast<size_t>(nb) * pixels.size());
    for (int64_t b = 0; b < nb; ++b)
      std::copy(pixels.begin(), pixels.end(), batch_pixels.begin() + b * static_cast<int64_t>(pixels.size()));
    std::vector<float> batch_features(static_cast<size_t>(nb) * features.size());
    if (!o.quick) model->encode_images(batch_pixels.data(), nb, batch_features.data());
    const double cpu0 = cpu_seconds();
    const auto t = Clock::now();
    model->encode_images(batch_pixels.data(), nb, batch_features.data());
    const double s = seconds_since(t);
    vision_batch_ms = s * 1000 / static_cast<double>(nb);
    vision_batch_cpu_share = (cpu_seconds() - cpu0) / (s * tb.threads);
    progress("vision tower batch %.0f: %.0f ms/image", static_cast<double>(nb), vision_batch_ms);
  }

  // KV pool for 1 + B sequences sharing the prompt's whole blocks.
  const int64_t max_tokens = prompt_len + o.new_tokens;
  KvCacheShape ks;
  ks.layers = c.text.layers;
  ks.kv_heads = c.text.kv_heads;
  ks.head_dim = c.text.head_dim;
  ks.block_size = kKvBlockPositions;
  ks.dtype = kv_dtype;
  const int64_t n_blocks = KvCachePool(ks, 1).blocks_needed(prompt_len, max_tokens, 1 + o.max_batch);
  // Freed before the caption phase, which sizes a pool of its own.
  auto kv_owner = std::make_unique<KvCachePool>(ks, n_blocks);
  KvCachePool& kv = *kv_owner;
  r["kv_cache_bytes"] = static_cast<double>(ks.bytes_per_block()) * static_cast<double>(n_blocks);

  // Prompt: random text ids around one image placeholder.
  std::uniform_int_distribution<int64_t> tok(0, std::min<int64_t>(V, 128000) - 1);
  std::vector<int64_t> ids;
  for (int i = 0; i < o.prompt_tokens; ++i) {
    if (i == o.prompt_tokens / 2) ids.push_back(-200);
    ids.push_back(tok(rng));
  }
  if (o.prompt_tokens == 0) ids.push_back(-200);
  std::vector<float> embeds(static_cast<size_t>(prompt_len * Dt));
  model->splice_embeddings(ids, features.data(), 1, embeds.data());

  std::vector<int32_t> seq0 = kv.allocate(max_tokens);
  std::vector<float> logits(static_cast<size_t>(std::max(1, o.max_batch) * V));
  models::SeqChunk pre;
  pre.embeds = embeds.data();
  pre.n_tokens = prompt_len;
  pre.start_pos = 0;
  pre.block_table = seq0.data();
  // Warm-up: a forward over the first few prompt tokens faults every weight page in (an
  // mmapped quantized cache may have been evicted from the page cache) and sizes the scratch
  // buffers, so the timed prefill measures compute, not disk reads; cold start is its own
  // figure (docs/QUANTIZED_CACHE.md). The timed prefill rewrites these positions.
  {
    models::SeqChunk warm = pre;
    warm.n_tokens = std::min<int64_t>(prompt_len, 8);
    progress("warm-up forward of %.0f tokens", static_cast<double>(warm.n_tokens));
    model->forward({warm}, kv.views(), logits.data());
  }
  progress("prefill of %.0f tokens", static_cast<double>(prompt_len));
  const double cpu_pre0 = cpu_seconds();
  const auto t_prefill = Clock::now();
  model->forward({pre}, kv.views(), logits.data());
  const double prefill_s = seconds_since(t_prefill);
  const double cpu_prefill = cpu_seconds() - cpu_pre0;
  const double prefill_tps = static_cast<double>(prompt_len) / prefill_s;
  const double prefill_flops_tok = decoder_prefill_flops_per_token(c.text, prompt_len);
  progress("prefill %.1f tok/s", prefill_tps);

  // Decode, batch 1: the prompt's sequence continues.
  const int steps =
      o.decode_steps > 0 ? std::min(o.decode_steps, o.new_tokens) : std::min(o.new_tokens, o.quick ? 2 : 16);
  int32_t next = argmax_lowest(logits.data(), V);
  const double w_step = decoder_step_weight_bytes(c.text, format);
  const double kvpos = kv_bytes_per_position(c.text, kv_dtype);
  double b1_bytes = 0;
  const double cpu_b10 = cpu_seconds();
  const auto t_b1 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    models::SeqChunk ch;
    ch.ids = &next;
    ch.n_tokens = 1;
    ch.start_pos = prompt_len + s;
    ch.block_table = seq0.data();
    model->forward({ch}, kv.views(), logits.data());
    next = argmax_lowest(logits.data(), V);
    b1_bytes += w_step + kvpos * static_cast<double>(prompt_len + s + 1);
  }
  const double b1_s = seconds_since(t_b1);
  const double cpu_b1 = cpu_seconds() - cpu_b10;
  const double b1_tps = steps / b1_s;
  progress("decode batch 1: %.2f tok/s", b1_tps);

  // Decode, batch B: B sequences forked from the prompt.
  const int B = o.max_batch;
  std::vector<std::vector<int32_t>> tables;
  for (int b = 0; b < B; ++b) tables.push_back(kv.fork_table(seq0, prompt_len, max_tokens));
  std::vector<int32_t> nexts(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) nexts[static_cast<size_t>(b)] = static_cast<int32_t>(tok(rng));
  double bb_bytes = 0;
  const double cpu_bb0 = cpu_seconds();
  const auto t_bb = Clock::now();
  for (int s = 0; s < steps; ++s) {
    std::vector<models::SeqChunk> chunks(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) {
      auto& ch = chunks[static_cast<size_t>(b)];
      ch.ids = &nexts[static_cast<size_t>(b)];
      ch.n_tokens = 1;
      ch.start_pos = prompt_len + s;
      ch.block_table = tables[static_cast<size_t>(b)].data();
    }
    model->forward(chunks, kv.views(), logits.data());
    for (int b = 0; b < B; ++b)
      nexts[static_cast<size_t>(b)] = argmax_lowest(logits.data() + static_cast<size_t>(b) * V, V);
    bb_bytes += w_step + kvpos * static_cast<double>(B) * static_cast<double>(prompt_len + s + 1);
  }
  const double bb_s = seconds_since(t_bb);
  const double cpu_bb = cpu_seconds() - cpu_bb0;
  const double bb_tps = static_cast<double>(B) * steps / bb_s;
  progress("decode batch %.0f: %.2f tok/s", B, bb_tps);
  tables.clear();
  seq0.clear();
  kv_owner.reset();

  // The real caption job on the loaded model.
  json caption_run, limit;
  double limit_iph = 0;
  if (o.caption_images > 0) {
    TempDir tmp;
    {
      std::string t = (std::filesystem::temp_directory_path() / "recap_bench_XXXXXX").string();
      if (!::mkdtemp(t.data())) throw std::runtime_error("bench: cannot create a temp dir in " + t);
      tmp.path = t;
    }
    progress("caption phase: writing %.0f random images", o.caption_images);
    std::string list;
    for (int i = 0; i < o.caption_images; ++i) {
      const bool png = i % 2 == 0;
      const std::string path = tmp.path + "/img" + std::to_string(i) + (png ? ".png" : ".jpg");
      if (png)
        write_random_png(path, 640, 480, rng);
      else
        write_random_jpeg(path, 640, 480, rng);
      list += json{{"url", path}, {"caption", ""}}.dump() + "\n";
    }
    const std::string list_path = tmp.path + "/list.jsonl";
    {
      std::ofstream f(list_path);
      f << list;
      if (!f) throw std::runtime_error("bench: cannot write " + list_path);
    }
    CaptionOptions co;
    co.model = model.get();
    co.tokenizer = tokenizer.get();
    co.weights_dir = r["model"].get<std::string>();
    co.precision = kernels::weight_format_name(format);
    co.kv_dtype = kv_dtype_name(kv_dtype);
    co.lists = {list_path};
    co.out_dir = tmp.path + "/out";
    co.samples_per_shard = o.caption_images;
    co.max_new_tokens = o.new_tokens;
    co.ignore_eos = true;
    co.max_batch = o.max_batch;
    co.threads = tb.threads;
    co.quiet = true;
    co.stats_json = tmp.path + "/stats.json";
    co.engine_version = "bench";
    progress("caption phase: %.0f images, max batch %.0f", o.caption_images, o.max_batch);
    const double cpu_cap0 = cpu_seconds();
    const auto t_cap = Clock::now();
    const int rc = run_caption(co);
    const double cap_s = seconds_since(t_cap);
    const double cpu_cap = cpu_seconds() - cpu_cap0;
    apply_threads(tb.threads);
    if (rc != 0) throw std::runtime_error("bench: the caption phase exited " + std::to_string(rc));
    json stats;
    {
      std::ifstream f(co.stats_json);
      stats = json::parse(f);
    }
    const int64_t done = stats.value("successes", int64_t(0));
    if (done != o.caption_images)
      throw std::runtime_error("bench: the caption phase captioned " + std::to_string(done) + " of " +
                               std::to_string(o.caption_images) + " images (statuses " +
                               stats["status"].dump() + ")");
    const int64_t tokens_out = stats["tokens_out"].get<int64_t>();
    const double prompt_positions = static_cast<double>(stats["tokens_in"].get<int64_t>()) / done;
    const double iph = 3600.0 * static_cast<double>(done) / cap_s;

    refresh_limits();
    // The same work at this machine's peaks measured above. Prefill and tower: their
    // operations at the compute peak of the weight format. Decode: each step of a batch of B
    // sequences is bound by the larger of reading every weight once plus the KV of B
    // sequences at the caption's mean context (bandwidth) and 2 x params x B operations
    // (compute); an image's caption takes new_tokens steps shared by B images.
    const double peak_ops = cb.gops * 1e9;
    const double prefill_lim_s =
        decoder_prefill_flops_per_token(c.text, static_cast<int64_t>(prompt_positions)) * prompt_positions /
        peak_ops;
    const double tower_lim_s = vision_flops / peak_ops;
    const double mean_ctx = prompt_positions + o.new_tokens / 2.0;
    const double step_bw_s = (w_step + kvpos * B * mean_ctx) / bw_bytes_per_s(bw.value);
    const double step_compute_s = 2 * decoder_step_params(c.text) * B / peak_ops;
    const double decode_lim_s = o.new_tokens * std::max(step_bw_s, step_compute_s) / B;
    const double limit_s = prefill_lim_s + tower_lim_s + decode_lim_s;
    limit_iph = 3600 / limit_s;
    limit = {{"seconds_per_image", limit_s},
             {"prefill_s", prefill_lim_s},
             {"tower_s", tower_lim_s},
             {"decode_s", decode_lim_s},
             {"decode_step_bandwidth_s", step_bw_s},
             {"decode_step_compute_s", step_compute_s},
             {"decode_bound", step_bw_s >= step_compute_s ? "read bandwidth" : cb.name},
             {"prompt_positions", prompt_positions},
             {"compute_peak_gops", cb.gops},
             {"read_bandwidth_gbs", bw.value}};
    caption_run = {{"images_per_hour", iph},
                   {"frac_of_limit", iph / limit_iph},
                   {"images", done},
                   {"new_tokens", tokens_out},
                   {"max_batch", B},
                   {"seconds", cap_s},
                   {"prompt_positions", prompt_positions},
                   {"tokens_prefilled", stats.value("tokens_prefilled", int64_t(0))},
                   {"cpu_share", cpu_cap / (cap_s * tb.threads)}};
    progress("caption phase: %.0f images/hour, %.2f of the limit", iph, iph / limit_iph);
  }

  refresh_limits();  // when the caption phase was skipped
  // End to end per image.
  const double pre_s = preprocess_ms / 1000, vis_s = vision_ms / 1000;
  const double prefill_img_s = static_cast<double>(prompt_len) / prefill_tps;
  const double sec_img_B = pre_s + vis_s + prefill_img_s + o.new_tokens / bb_tps;
  const double sec_img_1 = pre_s + vis_s + prefill_img_s + o.new_tokens / b1_tps;

  const double bw_bytes = bw.value * 1e9;
  json res = json::array();
  auto row = [&](const std::string& test, double value, const std::string& unit, const std::string& bound,
                 double frac) {
    json j = {{"test", test}, {"value", value}, {"unit", unit}};
    if (!bound.empty()) {
      j["bound"] = bound;
      j["frac_of_limit"] = frac;
    }
    res.push_back(j);
  };
  row("load", load_s, "s", "", 0);
  row("preprocess (640x480 RGB -> " + std::to_string(S) + ")", preprocess_ms, "ms/image", "", 0);
  // Operations per second over the compute peak of the format (0 without a peak).
  auto frac_of_peak = [&](double ops_per_s) { return cb.gops > 0 ? ops_per_s / 1e9 / cb.gops : 0.0; };
  const double vision_batch_frac =
      vision_batch_ms > 0 ? frac_of_peak(vision_flops / (vision_batch_ms / 1000)) : 0;
  const double prefill_frac = frac_of_peak(prefill_flops_tok * prefill_tps);
  row("vision tower + projector (batch 1)", vision_ms, "ms/image", cb.name,
      frac_of_peak(vision_flops / (vision_ms / 1000)));
  if (vision_batch_ms > 0)
    row("vision tower + projector (batch " + std::to_string(o.tower_batch) + ")", vision_batch_ms, "ms/image",
        cb.name, vision_batch_frac);
  row("prefill pp" + std::to_string(prompt_len), prefill_tps, "tok/s", cb.name, prefill_frac);
  row("decode tg batch 1", b1_tps, "tok/s", "read bandwidth", bw_bytes > 0 ? b1_bytes / b1_s / bw_bytes : 0);
  // Batch B: the binding bound is the larger of the step's read time and compute time, so its
  // fraction is the larger of the two fractions.
  const double bb_frac_bw = bw_bytes > 0 ? bb_bytes / bb_s / bw_bytes : 0;
  const double bb_frac_compute = frac_of_peak(2 * decoder_step_params(c.text) * B * steps / bb_s);
  const bool bb_compute_binds = bb_frac_compute > bb_frac_bw;
  const double bb_frac_bound = std::max(bb_frac_bw, bb_frac_compute);
  row("decode tg batch " + std::to_string(B) + " (aggregate)", bb_tps, "tok/s",
      bb_compute_binds ? cb.name : "read bandwidth", bb_frac_bound);
  row("end-to-end, " + std::to_string(o.new_tokens) + " new tokens, batch " + std::to_string(B),
      3600 / sec_img_B, "images/hour", "", 0);
  row("end-to-end, " + std::to_string(o.new_tokens) + " new tokens, batch 1", 3600 / sec_img_1, "images/hour",
      "", 0);
  if (!caption_run.is_null()) {
    row("caption run, " + std::to_string(o.caption_images) + " images, " + std::to_string(o.new_tokens) +
            " new tokens, max batch " + std::to_string(B),
        caption_run["images_per_hour"].get<double>(), "images/hour", "limit at the machine's peaks",
        caption_run["frac_of_limit"].get<double>());
    row("limit: the same work at the machine's peaks", limit_iph, "images/hour", "", 0);
  }
  row("peak RSS", peak_rss_bytes() / (1 << 30), "GiB", "", 0);
  r["results"] = res;

  r["detail"] = {{"preprocess_ms", preprocess_ms},
                 {"vision_ms_per_image", vision_ms},
                 {"vision_ms_best", vision_best * 1000},
                 {"vision_gflop_per_image", vision_flops / 1e9},
                 {"vision_batch", o.tower_batch > 1 ? o.tower_batch : 0},
                 {"vision_batch_ms_per_image", vision_batch_ms},
                 {"vision_batch_frac_of_peak", vision_batch_frac},
                 {"prefill_frac_of_peak", prefill_frac},
                 {"prefill_tokens", prompt_len},
                 {"prefill_s", prefill_s},
                 {"prefill_tok_s", prefill_tps},
                 {"prefill_gflop_per_token", prefill_flops_tok / 1e9},
                 {"prefill_achieved_gops", prefill_flops_tok * prefill_tps / 1e9},
                 {"compute_bound", cb.name},
                 {"compute_bound_gops", cb.gops},
                 {"decode_steps_timed", steps},
                 {"decode_b1_tok_s", b1_tps},
                 {"decode_b1_gbs", b1_bytes / b1_s / 1e9},
                 {"decode_batch", B},
                 {"decode_bB_tok_s", bb_tps},
                 {"decode_bB_gbs", bb_bytes / bb_s / 1e9},
                 {"decode_bB_over_b1", bb_tps / b1_tps},
                 {"decode_bB_bound", bb_compute_binds ? cb.name : "read bandwidth"},
                 {"decode_bB_frac_of_bandwidth", bb_frac_bw},
                 {"decode_bB_frac_of_compute", bb_frac_compute},
                 {"decode_bB_frac_of_bound", bb_frac_bound},
                 {"decoder_weight_bytes_per_step", w_step},
                 {"new_tokens", o.new_tokens},
                 {"seconds_per_image_batchB", sec_img_B},
                 {"seconds_per_image_batch1", sec_img_1},
                 {"images_per_hour_batchB", 3600 / sec_img_B},
                 {"images_per_hour_batch1", 3600 / sec_img_1},
                 {"peak_rss_bytes", peak_rss_bytes()},
                 // Share of `threads` cores this process got in each timed phase (1.0 = an idle machine;
                 // less means other processes ran on the same cores and the figures are pessimistic).
                 {"cpu_share",
                  {{"vision", cpu_vis / (vis_wall * tb.threads)},
                   {"prefill", cpu_prefill / (prefill_s * tb.threads)},
                   {"decode_b1", cpu_b1 / (b1_s * tb.threads)},
                   {"decode_bB", cpu_bb / (bb_s * tb.threads)},
                   {"vision_batch", vision_batch_cpu_share}}},
                 // The probes at the start and after the last phase; `limits` holds the larger.
                 {"limits_at_start", limits_at_start},
                 {"limits_at_end", limits_at_end},
                 {"images_per_hour_formula",
                  "3600 / (preprocess + vision + prompt_tokens/prefill_tok_s + new_tokens/decode_tok_s)"}};
  if (!caption_run.is_null()) {
    r["detail"]["caption_run"] = caption_run;
    r["detail"]["limit_images_per_hour"] = limit_iph;
    r["detail"]["limit"] = limit;
  }
  return r;
}

std::string bench_markdown(const json& r) {
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf, "model: %s  precision: %s  kv: %s  isa: %s  threads: %d\n\n",
                r["model"].get<std::string>().c_str(), r["precision"].get<std::string>().c_str(),
                r["kv_dtype"].get<std::string>().c_str(), r["isa"].get<std::string>().c_str(),
                r["threads"].get<int>());
  s += buf;
  const json& L = r["limits"];
  std::snprintf(buf, sizeof buf,
                "machine limits (same run): read %.1f GB/s, f32 FMA %.0f GFLOP/s, int8 dot %.0f GOP/s, "
                "bf16 dot %.0f GFLOP/s\n\n",
                L["read_bandwidth_gbs"].get<double>(), L["f32_fma_gflops"].get<double>(),
                L["int8_dot_gops"].get<double>(), L["bf16_dot_gflops"].get<double>());
  s += buf;
  s += "| test | value | unit | bounded by | fraction of limit |\n|---|---:|---|---|---:|\n";
  for (const json& row : r["results"]) {
    const double v = row["value"].get<double>();
    std::snprintf(
        buf, sizeof buf, "| %s | %.*f | %s | %s | %s |\n", row["test"].get<std::string>().c_str(),
        v >= 100 ? 0 : (v >= 10 ? 1 : 2), v, row["unit"].get<std::string>().c_str(),
        row.contains("bound") ? row["bound"].get<std::string>().c_str() : "",
        row.contains("frac_of_limit")
            ? (std::to_string(static_cast<int>(std::lround(row["frac_of_limit"].get<double>() * 100))) + "%")
                  .c_str()
            : "");
    s += buf;
  }
  const json& d = r["detail"];
  std::snprintf(buf, sizeof buf,
                "\nprefill: %.1f GFLOP/token -> %.0f GOP/s achieved; decode batch 1 reads %.2f GB/step "
                "(%.1f GB/s); batch %d / batch 1 = %.2fx\n"
                "images/hour = 3600 / (preprocess + vision + %lld/prefill tok/s + %d/decode tok/s): "
                "%.1f s/image at batch %d\n",
                d["prefill_gflop_per_token"].get<double>(), d["prefill_achieved_gops"].get<double>(),
                d["decoder_weight_bytes_per_step"].get<double>() / 1e9, d["decode_b1_gbs"].get<double>(),
                d["decode_batch"].get<int>(), d["decode_bB_over_b1"].get<double>(),
                static_cast<long long>(d["prefill_tokens"].get<int64_t>()), d["new_tokens"].get<int>(),
                d["seconds_per_image_batchB"].get<double>(), d["decode_batch"].get<int>());
  s += buf;
  if (d.contains("caption_run")) {
    const json& cr = d["caption_run"];
    const json& lim = d["limit"];
    std::snprintf(buf, sizeof buf,
                  "caption run: %lld images in %.1f s = %.0f images/hour, %.2f of the limit %.0f images/hour "
                  "(prefill %.2f s + tower %.2f s + decode %.2f s per image, decode bound by %s)\n",
                  static_cast<long long>(cr["images"].get<int64_t>()), cr["seconds"].get<double>(),
                  cr["images_per_hour"].get<double>(), cr["frac_of_limit"].get<double>(),
                  d["limit_images_per_hour"].get<double>(), lim["prefill_s"].get<double>(),
                  lim["tower_s"].get<double>(), lim["decode_s"].get<double>(),
                  lim["decode_bound"].get<std::string>().c_str());
    s += buf;
  }
  if (d.contains("cpu_share")) {
    const json& c = d["cpu_share"];
    std::snprintf(
        buf, sizeof buf,
        "CPU share of %d threads this run got (1.0 = idle machine): vision %.2f, prefill %.2f, decode b1 "
        "%.2f, decode bB %.2f\n",
        r["threads"].get<int>(), c["vision"].get<double>(), c["prefill"].get<double>(),
        c["decode_b1"].get<double>(), c["decode_bB"].get<double>());
    s += buf;
  }
  return s;
}

}  // namespace recap::engine
