// recap-engine trace: runs the model on a few images and/or one prompt and dumps every
// intermediate tensor under the golden names (tests/data/tiny/golden.safetensors), so any
// golden set is checked with one command:
//   recap-engine trace --weights tests/data/tiny/llava_orig_fp32 --image a.png --image b.png
//       --input-ids 1,106,818,574,937,-200,602 --out trace.safetensors
//   python3 tests/tools/compare_golden.py tests/data/tiny/golden.safetensors trace.safetensors
//
// Images (repeatable --image, in order k = 0, 1, ...): image.{k}.rgb_u8, image.{k}.square_u8,
// image.{k}.resized_u8, image.{k}.pixel_values [3,S,S]; batched over all images:
// pixel_values [B,3,S,S], vision.selected [B,1+P,Dv], vision.patch_features [B,P,Dv],
// projector.linear_1_out and projector.out [B,P,Dt].
// Prompt (--prompt TEXT through the template, or --input-ids): llm.input_ids (I64, -200 at the
// image), llm.inputs_embeds [N,Dt] (the k-th image token takes image k's features),
// llm.image_features [P,Dt] (image 0), llm.hidden_states [L+1,N,Dt], llm.logits [N,V],
// llm.logits_last [V], gen.ids (I64 greedy, lowest id on ties; an eos id ends generation and
// is kept as the last id unless --no-stop; with --prompt the template's stop tokens count too).
// --text-only-names writes the language tensors as
// text_only.{input_ids,hidden_states,logits,logits_last,gen_ids} instead.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/preprocess.h"
#include "models/quantized_cache.h"
#include "models/tokenizer.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

struct TraceArgs {
  std::string weights, vision_weights, vision_config, tokenizer, prompt, input_ids, template_name, out;
  std::vector<std::string> images;
  // auto: a quantized cache's own precision, else f32 (trace exists to compare with the f32
  // reference goldens, unlike caption whose auto is int8).
  std::string precision = "auto", kv_dtype = "f32";
  int64_t max_new_tokens = 16;
  bool no_stop = false;
  bool text_only_names = false;
  int threads = 0;
};

struct Dump {
  io::SafetensorsWriter writer;
  void f32(const std::string& name, std::vector<int64_t> shape, const float* data) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    writer.add(name, io::DType::F32, std::move(shape), data, static_cast<size_t>(n) * sizeof(float));
  }
  void i64(const std::string& name, const std::vector<int64_t>& values) {
    writer.add(name, io::DType::I64, {static_cast<int64_t>(values.size())}, values.data(),
               values.size() * sizeof(int64_t));
  }
  void u8(const std::string& name, std::vector<int64_t> shape, const uint8_t* data) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    writer.add(name, io::DType::U8, std::move(shape), data, static_cast<size_t>(n));
  }
};

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && std::isspace(static_cast<unsigned char>(item[used]))) ++used;
    if (item.empty() || used != item.size())
      throw std::invalid_argument("--input-ids: '" + item + "' is not an integer");
    ids.push_back(v);
  }
  if (ids.empty()) throw std::invalid_argument("--input-ids: no ids");
  return ids;
}

// Decodes and preprocesses every image, dumps the per-image tensors; returns [B,3,S,S].
std::vector<float> load_images(const TraceArgs& a, const models::ModelConfig& cfg, Dump& dump) {
  const int64_t S = cfg.vision.image_size;
  std::vector<float> pixels;
  for (size_t k = 0; k < a.images.size(); ++k) {
    const std::string p = "image." + std::to_string(k) + ".";
    const io::Image img = io::decode_image_file(a.images[k]);
    models::PreprocessStages pt;
    const std::vector<float> pv = models::preprocess_llava(img, models::from_vision_config(cfg.vision), &pt);
    dump.u8(p + "rgb_u8", {img.height, img.width, 3}, img.rgb.data());
    dump.u8(p + "square_u8", {pt.square.height, pt.square.width, 3}, pt.square.rgb.data());
    dump.u8(p + "resized_u8", {pt.resized.height, pt.resized.width, 3}, pt.resized.rgb.data());
    dump.f32(p + "pixel_values", {3, S, S}, pv.data());
    pixels.insert(pixels.end(), pv.begin(), pv.end());
  }
  return pixels;
}

// The prompt's ids (-200 at the image) and the ids that end generation. With --prompt the
// template and tokenizer give both (and the tokenizer's size caps the ids argmax may pick:
// a checkpoint's embedding may have more rows than the tokenizer has tokens).
struct Prompt {
  std::vector<int64_t> ids;
  std::vector<int64_t> stop_ids;
  int64_t max_token_id = -1;  // exclusive bound for generated ids; -1: the vocabulary
};

Prompt build_prompt(const TraceArgs& a, const models::ModelConfig& cfg, bool with_image) {
  Prompt p;
  if (!a.input_ids.empty()) {
    p.ids = parse_ids(a.input_ids);
    p.stop_ids = cfg.generation.eos_token_ids;
    return p;
  }
  const models::Tokenizer tok = models::open_tokenizer(cfg, models::find_tokenizer(a.weights, a.tokenizer));
  const models::ChatTemplate tmpl = models::resolve_template_for(cfg, a.template_name);
  models::PromptInputs in;
  in.has_image = with_image;
  in.prompt = a.prompt;
  for (int32_t id : models::build_prompt_ids(tmpl, tok, in)) p.ids.push_back(id);
  for (int32_t id : models::stop_token_ids(tmpl, tok, cfg.generation.eos_token_ids)) p.stop_ids.push_back(id);
  p.max_token_id = tok.vocab_size();
  return p;
}

int run_trace(const TraceArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  if (!a.prompt.empty() && !a.input_ids.empty())
    throw engine::UsageError("--prompt and --input-ids are exclusive");
  const bool want_llm = !a.prompt.empty() || !a.input_ids.empty();
  if (a.images.empty() && !want_llm)
    throw engine::UsageError("nothing to do (give --image and/or --prompt/--input-ids)");

  if (!a.input_ids.empty()) engine::as_usage_error("", [&] { parse_ids(a.input_ids); });

  models::LoadOptions lo;
  lo.vision_weights_dir = a.vision_weights;
  lo.vision_config_dir = a.vision_config;
  // Whatever stops the checkpoint from opening or loading is its fault (exit 2).
  const models::Checkpoint ckpt =
      engine::as_usage_error("", [&] { return models::open_checkpoint(a.weights, lo); });
  const models::ModelConfig& cfg = ckpt.config;
  if (want_llm && !cfg.has_text)
    throw engine::UsageError(a.weights +
                             " has no language model (a bare CLIP dir): drop --prompt/--input-ids");
  std::string precision = a.precision;
  if (precision == "auto")
    precision =
        ckpt.text_store && models::is_quantized_cache_store(*ckpt.text_store)
            ? kernels::weight_format_name(models::QuantizedCacheWeightSource(ckpt.text_store).precision())
            : "f32";
  models::ModelOptions mo;
  mo.precision = kernels::parse_weight_format(precision);
  mo.kv_dtype = engine::parse_kv_dtype(a.kv_dtype);
  mo.load_vision = !a.images.empty();
  mo.load_text = want_llm;
  std::unique_ptr<models::LlavaModel> model =
      engine::as_usage_error("", [&] { return models::LlavaModel::load(ckpt, mo); });

  Dump dump;
  dump.writer.set_metadata("recap.precision", precision);
  dump.writer.set_metadata("recap.kv_dtype", a.kv_dtype);

  // Vision: all images in one batch.
  const int64_t B = static_cast<int64_t>(a.images.size());
  const int64_t P = cfg.vision.num_patches(), Dv = cfg.vision.hidden, Dt = cfg.text.hidden,
                S = cfg.vision.image_size;
  std::vector<float> features;  // [B, P, Dt] projector output
  if (B > 0) {
    // The --image files the user named: a missing or undecodable one is usage (2).
    std::vector<float> pixels = engine::as_usage_error("", [&] { return load_images(a, cfg, dump); });
    dump.f32("pixel_values", {B, 3, S, S}, pixels.data());
    models::VisionTrace vt;
    vt.enabled = true;
    if (model->has_vision()) {
      features.resize(static_cast<size_t>(B * P * Dt));
      model->encode_images(pixels.data(), B, features.data(), &vt);
      dump.f32("projector.linear_1_out", {B, P, cfg.projector.hidden}, vt.projector_linear_1_out.data());
      dump.f32("projector.out", {B, P, Dt}, features.data());
    } else {
      std::vector<float> patch(static_cast<size_t>(B * P * Dv));
      model->vision_features(pixels.data(), B, patch.data(), &vt);
    }
    dump.f32("vision.selected", {B, P + 1, Dv}, vt.selected.data());
    std::vector<float> patch_features(static_cast<size_t>(B * P * Dv));
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(patch_features.data() + b * P * Dv, vt.selected.data() + (b * (P + 1) + 1) * Dv,
                  sizeof(float) * P * Dv);
    dump.f32("vision.patch_features", {B, P, Dv}, patch_features.data());
  }

  if (want_llm) {
    // The prompt the user gave (ids, tokenizer, template): its failures are usage (2).
    const Prompt prompt = engine::as_usage_error("", [&] { return build_prompt(a, cfg, B > 0); });
    const std::vector<int64_t>& ids = prompt.ids;
    int64_t n_image_tokens = 0;
    for (int64_t id : ids) n_image_tokens += model->is_image_token(id) ? 1 : 0;
    if (n_image_tokens > B)
      throw engine::UsageError("the prompt has " + std::to_string(n_image_tokens) + " image tokens but " +
                               std::to_string(B) + " --image given");
    const models::TextConfig& t = cfg.text;
    const int64_t N = model->spliced_length(ids), V = t.vocab;
    std::vector<float> embeds(static_cast<size_t>(N * Dt));
    // An id outside the vocabulary is a bad --input-ids value (exit 2).
    engine::as_usage_error(
        "", [&] { model->splice_embeddings(ids, features.data(), n_image_tokens, embeds.data()); });
    // The golden stores its image-free prompt under text_only.* (no inputs_embeds there).
    const bool alt = a.text_only_names;
    dump.i64(alt ? "text_only.input_ids" : "llm.input_ids", ids);
    if (!alt) dump.f32("llm.inputs_embeds", {N, Dt}, embeds.data());
    if (B > 0) dump.f32("llm.image_features", {P, Dt}, features.data());

    const int64_t total = N + a.max_new_tokens;
    engine::KvCachePool pool(engine::KvCacheShape::for_text(t, mo.kv_dtype),
                             (total + engine::kKvBlockPositions - 1) / engine::kKvBlockPositions);
    std::vector<int32_t> table = pool.allocate(total);
    models::SeqChunk prefill;
    prefill.embeds = embeds.data();
    prefill.n_tokens = N;
    prefill.block_table = table.data();
    prefill.all_logits = true;
    models::LlmTrace lt;
    lt.enabled = true;
    std::vector<float> logits(static_cast<size_t>(N * V));
    model->forward({prefill}, pool.views(), logits.data(), &lt);
    dump.f32(alt ? "text_only.hidden_states" : "llm.hidden_states", {t.layers + 1, N, Dt},
             lt.hidden_states.data());
    dump.f32(alt ? "text_only.logits" : "llm.logits", {N, V}, logits.data());
    dump.f32(alt ? "text_only.logits_last" : "llm.logits_last", {V}, logits.data() + (N - 1) * V);

    const std::vector<int64_t>& eos = prompt.stop_ids;
    const int64_t pick = prompt.max_token_id > 0 ? std::min(V, prompt.max_token_id) : V;
    std::vector<int64_t> gen;
    std::vector<float> step_logits(static_cast<size_t>(V));
    // The engine's greedy step (engine/sampler.h: lowest id on ties, as torch.argmax), so the
    // trace's ids are the ones `caption` generates.
    int32_t next = engine::argmax_lowest(logits.data() + (N - 1) * V, pick);
    for (int64_t i = 0; i < a.max_new_tokens; ++i) {
      gen.push_back(next);
      if (!a.no_stop && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
      if (i + 1 == a.max_new_tokens) break;
      models::SeqChunk step;
      step.ids = &next;
      step.n_tokens = 1;
      step.start_pos = N + i;
      step.block_table = table.data();
      model->forward({step}, pool.views(), step_logits.data());
      next = engine::argmax_lowest(step_logits.data(), pick);
    }
    dump.i64(alt ? "text_only.gen_ids" : "gen.ids", gen);
  }

  dump.writer.write(a.out);
  std::fprintf(stderr, "recap-engine trace: wrote %s\n", a.out.c_str());
  return kExitOk;
}

const CommandRegistrar kTrace(
    "trace", "Dump the model's intermediate tensors under the golden names (for compare_golden.py)",
    [](CLI::App* sub) -> std::function<int()> {
      auto a = std::make_shared<TraceArgs>();
      sub->add_option("--weights", a->weights, "LLaVA checkpoint dir (or a CLIP dir for vision only)")
          ->required();
      sub->add_option("--vision-weights", a->vision_weights, "CLIP tower dir (overrides mm_vision_tower)");
      sub->add_option("--vision-config", a->vision_config, "dir with a CLIPVisionConfig config.json");
      sub->add_option("--image", a->images, "image file (repeatable: image k is batch row k)");
      sub->add_option("--precision", a->precision,
                      "weight format: auto (a quantized cache's own, else f32)|f32|bf16|int8|int4")
          ->check(CLI::IsMember({"auto", "f32", "bf16", "int8", "int4"}))
          ->capture_default_str();
      sub->add_option("--kv-dtype", a->kv_dtype, "KV cache dtype: f32|bf16|f16")
          ->check(CLI::IsMember({"f32", "bf16", "f16"}));
      sub->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: <weights>/tokenizer.json)");
      sub->add_option("--prompt", a->prompt, "prompt text, put through the chat template");
      sub->add_option("--input-ids", a->input_ids, "comma-separated prompt ids; -200 marks the image");
      sub->add_option("--template", a->template_name,
                      "chat template name (default: the model family's, llava-llama3 for LLaVA-LLaMA-3)");
      sub->add_option("--max-new-tokens", a->max_new_tokens, "greedy tokens to generate")
          ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
      sub->add_flag("--no-stop", a->no_stop, "do not stop at the generation eos ids");
      sub->add_flag("--text-only-names", a->text_only_names,
                    "write the language tensors under the golden's text_only.* names");
      sub->add_option("--threads", a->threads, "OpenMP threads (default: all)");
      sub->add_option("--out", a->out, "output .safetensors")->required();
      return [a]() { return run_trace(*a); };
    });

}  // namespace
}  // namespace recap::cli
