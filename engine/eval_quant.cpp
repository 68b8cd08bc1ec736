#include "engine/eval_quant.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/bench.h"
#include "engine/errors.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "engine/threads.h"
#include "io/fileutil.h"
#include "io/image.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/preprocess.h"
#include "models/quantized_cache.h"
#include "models/tokenizer.h"
#include "models/weight_source.h"

namespace recap::engine {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp";
}

// What the reference produced for one image.
struct RefCaption {
  std::vector<int32_t> tokens;  // greedy ids, the stop token included when one ended it
  bool stopped = false;
  std::vector<float> logits;  // [tokens.size(), V]: the logits each token was chosen from
};

// One model's forward passes over one image's prompt, one sequence at a time.
class Runner {
 public:
  Runner(const models::LlavaModel& m, int64_t max_positions)
      : m_(m),
        V_(m.config().text.vocab),
        pool_(KvCacheShape::for_text(m.config().text, kernels::KvDType::F32),
              2 * ((max_positions + kKvBlockPositions - 1) / kKvBlockPositions)),
        max_positions_(max_positions),
        row_(static_cast<size_t>(V_)) {}

  // Prefill of `n` embedding rows into a fresh sequence; row() holds the last position's logits.
  void prefill(const float* embeds, int64_t n, bool second_sequence) {
    if (!second_sequence) {
      pool_.release(first_table_);
      pool_.release(table_);
    } else {  // the pool holds two sequences: the previous one stays until the next first one
      pool_.release(first_table_);
      first_table_ = std::move(table_);
    }
    table_ = pool_.allocate(max_positions_);
    models::SeqChunk ch;
    ch.embeds = embeds;
    ch.n_tokens = n;
    ch.block_table = table_.data();
    m_.forward({ch}, pool_.views(), row_.data());
    pos_ = n;
  }
  // Feeds one token at the next position.
  void step(int32_t id) {
    models::SeqChunk ch;
    ch.ids = &id;
    ch.n_tokens = 1;
    ch.start_pos = pos_++;
    ch.block_table = table_.data();
    m_.forward({ch}, pool_.views(), row_.data());
  }
  const float* row() const { return row_.data(); }
  int64_t vocab() const { return V_; }

 private:
  const models::LlavaModel& m_;
  int64_t V_;
  KvCachePool pool_;  // room for two sequences of max_positions_
  int64_t max_positions_;
  std::vector<int32_t> first_table_;  // the first sequence's blocks while a second one runs
  std::vector<int32_t> table_;        // the running sequence's blocks
  std::vector<float> row_;
  int64_t pos_ = 0;
};

// KL(p || q) of the softmaxes of two logit rows, in double.
double kl_divergence(const float* ref, const float* q, int64_t n) {
  auto lse = [n](const float* x) {
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
    return mx + std::log(s);
  };
  const double lr = lse(ref), lq = lse(q);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(ref[i]) - lr, b = static_cast<double>(q[i]) - lq;
    kl += std::exp(a) * (a - b);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 on identical rows of another order
}

struct Context {
  models::Checkpoint ckpt;
  std::unique_ptr<models::Tokenizer> tok;
  std::vector<int64_t> prompt_ids;
  std::set<int32_t> stop;
  std::vector<std::vector<float>> pixels;  // per image [3, S, S]
  int64_t vocab_limit = 0;
};

std::unique_ptr<models::LlavaModel> load(const Context& cx, const EvalQuantOptions& o,
                                         const std::string& precision) {
  models::ModelOptions mo;
  mo.precision = kernels::parse_weight_format(precision);  // checked by run_eval_quant
  if (!o.synthetic.empty()) {
    // One source for tower and text, as `quantize --synthetic` packs them.
    models::SyntheticWeightSource src(o.seed, 0.02f);
    return models::LlavaModel::load_from(cx.ckpt.config, &src, &src, mo);
  }
  // Missing or malformed tensors show only when the weights are loaded; they are the
  // checkpoint's fault (exit 2), like the config errors found when it was opened.
  return as_usage_error("", [&] { return models::LlavaModel::load(cx.ckpt, mo); });
}

// The prompt's input embeddings with this model's image features.
std::vector<float> prompt_embeds(const models::LlavaModel& m, const Context& cx, size_t image) {
  const auto& c = m.config();
  std::vector<float> features(static_cast<size_t>(c.vision.num_patches() * c.text.hidden));
  m.encode_images(cx.pixels[image].data(), 1, features.data());
  std::vector<float> embeds(static_cast<size_t>(m.spliced_length(cx.prompt_ids) * c.text.hidden));
  m.splice_embeddings(cx.prompt_ids, features.data(), 1, embeds.data());
  return embeds;
}

size_t text_length(const std::vector<int32_t>& ids, const std::set<int32_t>& stop) {
  return ids.size() - (!ids.empty() && stop.count(ids.back()) ? 1 : 0);
}

}  // namespace

std::vector<std::string> eval_images_from_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw EvalQuantError(dir + ": not a directory of images");
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && is_image_file(e.path())) out.push_back(e.path().string());
  if (ec) throw EvalQuantError(dir + ": cannot list: " + ec.message());
  std::sort(out.begin(), out.end());
  if (out.empty()) throw EvalQuantError(dir + ": no .png/.jpg/.jpeg/.webp image in this directory");
  return out;
}

std::vector<std::string> eval_images_from_list(const std::string& list) {
  std::ifstream f(list);
  if (!f) throw EvalQuantError(list + ": cannot open the image list");
  const std::string base = fs::path(list).parent_path().string();
  std::vector<std::string> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::string path = line;
    if (line[0] == '{') {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("url") || !j["url"].is_string())
        throw EvalQuantError(list + ":" + std::to_string(n) + ": a JSON line needs a string \"url\"");
      path = j["url"].get<std::string>();
    }
    out.push_back(io::join_path(base, path));
  }
  if (out.empty()) throw EvalQuantError(list + ": the image list is empty");
  return out;
}

json run_eval_quant(const EvalQuantOptions& o, const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  for (const auto& [flag, value, allowed] : {std::tuple<const char*, std::string, std::vector<std::string>>{
                                                 "--precision", o.precision, {"f32", "bf16", "int8", "int4"}},
                                             {"--reference", o.reference, {"f32", "bf16"}}})
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw EvalQuantError(std::string(flag) + " '" + value + "': expected one of " + list);
    }
  if (o.max_new_tokens < 1) throw EvalQuantError("--max-new-tokens must be at least 1");
  if (o.images.empty()) throw EvalQuantError("no images to evaluate");

  Context cx;
  models::LoadOptions lo;
  lo.vision_weights_dir = o.vision_weights_dir;
  lo.vision_config_dir = o.vision_config_dir;
  if (o.synthetic.empty() == o.weights_dir.empty())
    throw EvalQuantError("give exactly one of --weights DIR or --synthetic NAME");
  if (!o.synthetic.empty() && o.tokenizer_path.empty())
    throw EvalQuantError("--synthetic needs --tokenizer FILE (the Llama-3 tokenizer.json)");
  if (!o.synthetic.empty() && !is_synthetic_preset(o.synthetic))
    throw EvalQuantError("--synthetic '" + o.synthetic + "': unknown preset (known: llava-llama3-8b)");
  if (o.synthetic.empty() && models::is_quantized_cache(o.weights_dir))
    throw EvalQuantError(
        o.weights_dir +
        ": a quantized cache holds one precision only; eval-quant needs the float checkpoint");
  try {
    if (!o.synthetic.empty())
      cx.ckpt.config = synthetic_preset_config(o.synthetic);
    else
      cx.ckpt = models::open_checkpoint(o.weights_dir, lo);
    if (!cx.ckpt.config.has_text || !cx.ckpt.config.has_vision)
      throw EvalQuantError(o.weights_dir +
                           ": not a LLaVA checkpoint (needs the vision tower and the language model)");
    cx.tok = std::make_unique<models::Tokenizer>(models::open_tokenizer(
        cx.ckpt.config,
        o.synthetic.empty() ? models::find_tokenizer(o.weights_dir, o.tokenizer_path) : o.tokenizer_path));
    const models::ChatTemplate tmpl = models::resolve_template_for(cx.ckpt.config, "");
    models::PromptInputs pin;
    pin.prompt = tmpl.prompt;
    pin.fields = {{"original_caption", ""}, {"caption", ""}, {"key", ""}, {"url", ""}};
    for (int32_t id : models::build_prompt_ids(tmpl, *cx.tok, pin)) cx.prompt_ids.push_back(id);
    for (int32_t id : models::stop_token_ids(tmpl, *cx.tok, cx.ckpt.config.generation.eos_token_ids))
      cx.stop.insert(id);
  } catch (const EvalQuantError&) {
    throw;
  } catch (const std::exception& e) {
    throw EvalQuantError(e.what());
  }
  const models::ModelConfig& cfg = cx.ckpt.config;
  cx.vocab_limit = std::min<int64_t>(cfg.text.vocab, cx.tok->vocab_size());
  const models::PreprocessConfig pc = models::from_vision_config(cfg.vision);
  for (const auto& path : o.images) {
    try {
      cx.pixels.push_back(models::preprocess_llava(io::decode_image_file(path), pc));
    } catch (const std::exception& e) {
      throw EvalQuantError(path + ": cannot use this image: " + e.what());
    }
  }
  const ThreadBudget tb = resolve_threads(o.threads);
  apply_threads(tb.threads);

  int64_t n_prompt = 0;
  for (int64_t id : cx.prompt_ids)
    n_prompt += id == models::kImageTokenId || id == cfg.image_token_index ? cfg.vision.num_patches() : 1;
  const int64_t max_positions = n_prompt + o.max_new_tokens + 1;
  const int64_t V = cfg.text.vocab;

  // 1. Reference captions and the logits they were chosen from.
  std::vector<RefCaption> refs(o.images.size());
  {
    say("eval-quant: reference " + o.reference + ": loading");
    auto ref = load(cx, o, o.reference);
    Runner run(*ref, max_positions);
    for (size_t i = 0; i < o.images.size(); ++i) {
      const std::vector<float> embeds = prompt_embeds(*ref, cx, i);
      run.prefill(embeds.data(), n_prompt, false);
      RefCaption& rc = refs[i];
      for (int t = 0; t < o.max_new_tokens; ++t) {
        rc.logits.insert(rc.logits.end(), run.row(), run.row() + V);
        const int32_t id = argmax_lowest(run.row(), cx.vocab_limit);
        rc.tokens.push_back(id);
        if (cx.stop.count(id)) {
          rc.stopped = true;
          break;
        }
        if (t + 1 < o.max_new_tokens) run.step(id);
      }
      say("eval-quant: reference " + std::to_string(i + 1) + "/" + std::to_string(o.images.size()) + ": " +
          std::to_string(rc.tokens.size()) + " tokens");
    }
  }

  // 2. The quantized model, teacher-forced through each reference caption, and its own greedy caption.
  say("eval-quant: " + o.precision + ": loading");
  auto quant = load(cx, o, o.precision);
  Runner run(*quant, max_positions);
  std::vector<double> kls;
  int64_t agree = 0, identical = 0;
  double ratio_sum = 0;
  json per_image = json::array();
  for (size_t i = 0; i < o.images.size(); ++i) {
    const RefCaption& rc = refs[i];
    const std::vector<float> embeds = prompt_embeds(*quant, cx, i);
    run.prefill(embeds.data(), n_prompt, false);
    std::vector<int32_t> own;  // the quantized model's greedy caption
    bool diverged = false;
    double img_kl = 0, img_kl_max = 0;
    int64_t img_agree = 0;
    const size_t T = rc.tokens.size();
    for (size_t t = 0; t < T; ++t) {
      const float* ref_row = rc.logits.data() + t * static_cast<size_t>(V);
      const double kl = kl_divergence(ref_row, run.row(), V);
      kls.push_back(kl);
      img_kl += kl;
      img_kl_max = std::max(img_kl_max, kl);
      const int32_t q = argmax_lowest(run.row(), cx.vocab_limit);
      if (q == rc.tokens[t]) ++img_agree;
      if (!diverged) {
        own.push_back(q);
        diverged = q != rc.tokens[t];
      }
      if (t + 1 < T) run.step(rc.tokens[t]);
    }
    // After a divergence the quantized caption goes on from its own prefix.
    if (diverged && !cx.stop.count(own.back()) && static_cast<int>(own.size()) < o.max_new_tokens) {
      const int64_t D = cfg.text.hidden, n_own = static_cast<int64_t>(own.size());
      std::vector<float> prefix(embeds.begin(), embeds.begin() + n_prompt * D);
      prefix.resize(static_cast<size_t>((n_prompt + n_own) * D));
      quant->embed_tokens(own.data(), n_own, prefix.data() + n_prompt * D);
      run.prefill(prefix.data(), n_prompt + n_own, true);
      while (static_cast<int>(own.size()) < o.max_new_tokens) {
        const int32_t q = argmax_lowest(run.row(), cx.vocab_limit);
        own.push_back(q);
        if (cx.stop.count(q) || static_cast<int>(own.size()) == o.max_new_tokens) break;
        run.step(q);
      }
    }
    const bool same = own == rc.tokens;
    identical += same ? 1 : 0;
    agree += img_agree;
    const size_t ref_len = text_length(rc.tokens, cx.stop), own_len = text_length(own, cx.stop);
    const double ratio = static_cast<double>(own_len) / static_cast<double>(std::max<size_t>(ref_len, 1));
    ratio_sum += ratio;
    std::vector<int32_t> ref_text(rc.tokens.begin(),
                                  rc.tokens.begin() + static_cast<std::ptrdiff_t>(ref_len));
    std::vector<int32_t> own_text(own.begin(), own.begin() + static_cast<std::ptrdiff_t>(own_len));
    per_image.push_back(
        {{"image", o.images[i]},
         {"ref_caption", cx.tok->decode_output(ref_text)},
         {"quant_caption", cx.tok->decode_output(own_text)},
         {"ref_tokens", ref_len},
         {"quant_tokens", own_len},
         {"identical", same},
         {"kl_mean", T ? img_kl / static_cast<double>(T) : 0.0},
         {"kl_max", img_kl_max},
         {"top1_agreement", T ? static_cast<double>(img_agree) / static_cast<double>(T) : 1.0}});
    say("eval-quant: " + o.precision + " " + std::to_string(i + 1) + "/" + std::to_string(o.images.size()) +
        (same ? ": identical caption" : ": caption differs"));
  }

  std::vector<double> sorted = kls;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double k : kls) mean += k;
  const size_t n = kls.size();
  json r;
  r["weights"] = o.synthetic.empty() ? o.weights_dir : "synthetic:" + o.synthetic;
  r["precision"] = o.precision;
  r["reference"] = o.reference;
  r["max_new_tokens"] = o.max_new_tokens;
  r["threads"] = tb.threads;
  r["kl_mean"] = n ? mean / static_cast<double>(n) : 0.0;
  r["kl_p99"] = n ? sorted[static_cast<size_t>(std::ceil(0.99 * static_cast<double>(n))) - 1] : 0.0;
  r["kl_max"] = n ? sorted.back() : 0.0;
  r["top1_agreement"] = n ? static_cast<double>(agree) / static_cast<double>(n) : 1.0;
  r["identical_captions"] = static_cast<double>(identical) / static_cast<double>(o.images.size());
  r["length_ratio"] = ratio_sum / static_cast<double>(o.images.size());
  r["n_images"] = o.images.size();
  r["n_tokens"] = n;
  r["images"] = per_image;
  return r;
}

}  // namespace recap::engine
