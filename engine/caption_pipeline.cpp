#include "engine/caption_pipeline.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/caption_driver.h"
#include "engine/errors.h"
#include "engine/fingerprint.h"
#include "engine/kv_cache.h"
#include "engine/loader.h"
#include "engine/memory_plan.h"
#include "engine/run_plan.h"
#include "engine/scheduler.h"
#include "engine/shard_assign.h"
#include "engine/shard_output.h"
#include "engine/signals.h"
#include "engine/sources.h"
#include "engine/threads.h"
#include "engine/tokenizer_id.h"
#include "engine/vision_worker.h"
#include "io/fileutil.h"
#include "kernels/isa.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/llava.h"
#include "models/quantized_cache.h"
#include "models/tokenizer.h"

namespace recap::engine {

using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- the run

namespace {

double now_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

// One shard being worked on.
struct OpenShard {
  ShardSpec spec;
  ShardFingerprint fp;
  std::unique_ptr<ShardOutput> out;
  std::unique_ptr<SampleStream> stream;
  bool exhausted = false;
  std::string failure;         // input or output error: the shard cannot be finished
  bool output_failed = false;  // its files cannot be written (lost lock, disk error): no more appends
  int64_t in_flight = 0;
  int64_t new_samples = 0, new_successes = 0;
  double start_time = 0;
};

struct Totals {
  int64_t samples = 0, successes = 0, failed = 0, tokens_out = 0, tokens_in = 0;
  int64_t shards_done = 0, shards_skipped = 0, shards_failed = 0, shards_busy = 0, shards_total = 0;
  int64_t shards_all_failed = 0;  // done, but not one sample succeeded (exit 1)
  int64_t samples_expected = -1;  // for the ETA (list inputs)
  std::map<std::string, int64_t> by_status;
};

class Reporter {
 public:
  Reporter(bool quiet, double interval) : quiet_(quiet), interval_(interval), tty_(::isatty(2) == 1) {
    start_ = last_ = Clock::now();
  }
  // A progress/info line: hidden by --quiet unless `always`.
  void line(const std::string& s, bool always = false) {
    if (quiet_ && !always) return;
    clear();
    std::fprintf(stderr, "%s\n", s.c_str());
  }
  // Warnings and errors are printed under --quiet too: it hides progress, never a problem.
  void warning(const std::string& s) { line("warning: " + s, true); }
  void error(const std::string& s) { line(s, true); }
  void tick(const Totals& t, bool force = false) {
    if (quiet_) return;
    auto now = Clock::now();
    double since = std::chrono::duration<double>(now - last_).count();
    if (!force && since < (tty_ ? 0.5 : interval_)) return;
    last_ = now;
    double el = std::chrono::duration<double>(now - start_).count();
    double ips = el > 0 ? static_cast<double>(t.successes) / el : 0;
    double tps = el > 0 ? static_cast<double>(t.tokens_out) / el : 0;
    char buf[400];
    std::string eta = "?";
    if (t.samples_expected > 0 && t.samples > 0) {
      double rate = static_cast<double>(t.samples) / el;
      eta = fmt_duration(static_cast<double>(t.samples_expected - t.samples) / rate);
    }
    std::snprintf(
        buf, sizeof buf,
        "shards %lld/%lld | samples %lld (ok %lld, failed %lld) | %.2f img/s | %.1f tok/s | ETA %s | %s",
        static_cast<long long>(t.shards_done + t.shards_skipped), static_cast<long long>(t.shards_total),
        static_cast<long long>(t.samples), static_cast<long long>(t.successes),
        static_cast<long long>(t.failed), ips, tps, eta.c_str(), fmt_duration(el).c_str());
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", buf);
      shown_ = true;
    } else {
      std::fprintf(stderr, "progress: %s\n", buf);
    }
    std::fflush(stderr);
  }
  void clear() {
    if (tty_ && shown_) {
      std::fprintf(stderr, "\r\033[K");
      shown_ = false;
    }
  }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  bool quiet_;
  double interval_;
  bool tty_;
  bool shown_ = false;
  Clock::time_point start_, last_;
};

// The sidecar / {key}.json record, img2dataset's keys first.
ordered_json base_meta(const SampleInput& in) {
  ordered_json m;
  m["url"] = in.url;
  m["caption"] = in.caption;
  // Tar inputs: the {key}.txt this run replaces (the output's {key}.txt is the new caption).
  if (in.has_caption_member) m["org_caption"] = in.caption;
  for (auto it = in.extra.begin(); it != in.extra.end(); ++it)
    if (!m.contains(it.key())) m[it.key()] = it.value();
  m["key"] = in.key;
  return m;
}

class CaptionRun {
 public:
  explicit CaptionRun(const CaptionOptions& o) : o_(o), rep_(o.quiet, o.log_interval_s) {}
  ExitCode run();

 private:
  void setup();
  void check_environment() const;
  void check_inputs_are_not_outputs() const;
  void check_tokenizer_fits(const models::ModelConfig& cfg) const;
  ordered_json shard_input_identity(const ShardSpec& s) const;
  void update_run_plan();
  bool open_next_shard();
  void feed();
  void on_record(CaptionRecord&& rec);
  void fail_sample(OpenShard* sh, const CaptionRecord& rec);
  void write_outcome(OpenShard* sh, SampleOutcome&& oc);
  void count_written(OpenShard* sh, const SampleOutcome& oc);
  void close_finished_shards();
  void warn_malformed(const SampleInput& in, const std::string& error);
  int64_t unfinished_shards() const;
  ordered_json summary_json() const;

  const CaptionOptions& o_;
  Reporter rep_;
  // Model and friends.
  // The model and tokenizer this run uses: loaded here, or the caller's (CaptionOptions::model).
  std::unique_ptr<models::LlavaModel> owned_model_;
  std::unique_ptr<models::Tokenizer> owned_tok_;
  const models::LlavaModel* model_ = nullptr;
  const models::Tokenizer* tok_ = nullptr;
  models::ChatTemplate tmpl_;
  std::vector<int32_t> stop_ids_;
  models::PreprocessConfig pre_;
  std::unique_ptr<KvCachePool> pool_;
  std::unique_ptr<Loader> loader_;
  // Everything between a loaded sample and its captions (engine/caption_driver.h). Declared
  // after the model, pool and loader it uses, so it goes first.
  std::unique_ptr<CaptionDriver> driver_;
  std::string fingerprint_;
  std::string isa_;
  std::string precision_name_;  // the precision in use (auto resolved)
  int threads_ = 1;
  int max_batch_ = 8;  // --max-batch resolved (0: from memory)
  // Work.
  InputOptions inputs_;
  std::vector<ShardSpec> all_shards_;                     // the whole plan
  std::vector<ShardSpec> shards_;                         // assigned to this worker, in order
  std::vector<ShardFingerprint> shard_fp_;                // parallel to shards_
  mutable std::map<std::string, std::string> list_xxh3_;  // list path -> content hash
  size_t next_shard_ = 0;
  std::deque<std::unique_ptr<OpenShard>> open_;
  std::map<uint64_t, OpenShard*> flight_;  // samples given to the driver -> their shard
  uint64_t next_tag_ = 1;
  int64_t admitted_new_ = 0;
  bool sources_done_ = false;
  bool max_samples_reached_ = false;  // --max-samples stopped the feed
  int64_t malformed_ = 0;             // failed_to_parse samples this run (warned up to a limit)
  bool had_failure_ = false;
  Totals tot_;
  int64_t mtime_ = 0;
};

// Bad environment values are configuration errors (exit 2) found before any work, not
// failures of the first shard: the lock settings, the forced ISA (resolved by the kernels'
// own rule), and OMP_NUM_THREADS (positive integers, comma-separated for nested levels).
void CaptionRun::check_environment() const {
  as_usage_error("", [] { validate_lock_settings(); });
  if (const char* isa = std::getenv("RECAP_FORCE_ISA"); isa && *isa)
    as_usage_error("RECAP_FORCE_ISA", [&] { (void)kernels::isa_from_force_value(isa); });
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && *omp) {
    bool ok = true;
    const std::string v = omp;
    size_t pos = 0;
    while (ok && pos <= v.size()) {
      size_t end = v.find(',', pos);
      if (end == std::string::npos) end = v.size();
      const std::string part = v.substr(pos, end - pos);
      ok = !part.empty() && part.size() <= 7 && part.find_first_not_of("0123456789") == std::string::npos &&
           std::stol(part) > 0;
      pos = end + 1;
    }
    if (!ok)
      throw UsageError("OMP_NUM_THREADS=" + v +
                       ": expected a positive number of threads (or a comma-separated list of them)");
  }
}

namespace {
// True when `base` (a file name in --out) is, or may become, one of shard `shard`'s outputs:
// {shard}.tar, {shard}.jsonl, {shard}_stats.json, and the hidden .{shard}.* partial, lock
// and temp files.
bool is_output_name_of(const std::string& base, const std::string& shard) {
  return base == shard + ".tar" || base == shard + ".jsonl" || base == shard + "_stats.json" ||
         base.rfind("." + shard + ".", 0) == 0 || base.rfind("." + shard + "_stats.json.", 0) == 0;
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}
}  // namespace

// Inputs are read-only under every flag. --out may be (or contain) an input folder only when
// no output name can be an input's name there; and no output file may be an input under
// another name (a hard link). Compared by device+inode (of the folder, and of the file), so
// "ds", "./ds" and a symlink to ds are the same place.
void CaptionRun::check_inputs_are_not_outputs() const {
  struct stat out_st {};
  const bool out_exists = ::stat(o_.out_dir.c_str(), &out_st) == 0;
  std::vector<std::pair<std::string, struct stat>> inputs;  // path, stat of the file
  std::set<std::string> seen;
  for (auto& s : all_shards_) {
    if (!seen.insert(s.path).second) continue;
    struct stat st {};
    if (::stat(s.path.c_str(), &st) != 0) continue;
    inputs.emplace_back(s.path, st);
    if (!out_exists) continue;
    // The folder the input is named in, and the folder it really is in (symlinks).
    for (const std::string& p : {s.path, canonical_input_path(s.path)}) {
      struct stat dir_st {};
      if (::stat(io::dir_name(p).c_str(), &dir_st) != 0 || !same_file(dir_st, out_st)) continue;
      const std::string base = io::base_name(p);
      std::string clash;
      if (base == kRunPlanFile || base.rfind(std::string(".") + kRunPlanFile + ".", 0) == 0)
        clash = "the run plan";
      for (size_t i = 0; clash.empty() && i < all_shards_.size(); ++i)
        if (is_output_name_of(base, all_shards_[i].name)) clash = "shard " + all_shards_[i].name;
      if (!clash.empty())
        throw UsageError("--out " + o_.out_dir + " holds input " + s.path + " under an output name of " +
                         clash + "; inputs are never replaced or deleted: choose another --out");
    }
  }
  if (!out_exists) return;
  // An output file that is an input under another name.
  for (auto& s : all_shards_)
    for (const std::string& f : {shard_tar_path(o_.out_dir, s.name), shard_jsonl_path(o_.out_dir, s.name),
                                 shard_stats_path(o_.out_dir, s.name)}) {
      struct stat st {};
      if (::stat(f.c_str(), &st) != 0) continue;
      for (auto& [path, in_st] : inputs)
        if (same_file(st, in_st))
          throw UsageError("output " + f + " of shard " + s.name + " is the input " + path +
                           " (the same file); inputs are never replaced or deleted: choose another --out");
    }
}

// Every id the tokenizer can produce, and every special id the run uses, must index a row of
// the model's embedding: found here, before the weights are loaded, not as a crash mid-run.
void CaptionRun::check_tokenizer_fits(const models::ModelConfig& cfg) const {
  const int64_t model_vocab = cfg.text.vocab;
  if (model_vocab <= 0) return;
  if (tok_->vocab_size() > model_vocab)
    throw UsageError("tokenizer " + tok_->path() + " has " + std::to_string(tok_->vocab_size()) +
                     " token ids but the model in " + o_.weights_dir + " has a vocabulary of " +
                     std::to_string(model_vocab) + "; use the checkpoint's own tokenizer");
  std::vector<std::pair<std::string, int64_t>> special;
  for (int32_t id : stop_ids_) special.emplace_back("stop token id", id);
  if (tok_->bos_id() >= 0) special.emplace_back("BOS id", tok_->bos_id());
  for (auto& [what, id] : special)
    if (id >= model_vocab)
      throw UsageError(what + " " + std::to_string(id) + " (tokenizer " + tok_->path() +
                       ", generation config) exceeds the vocabulary of the model in " + o_.weights_dir +
                       " (" + std::to_string(model_vocab) + " ids)");
}

// The part of a shard's fingerprint material that is its own plan: which input, which part
// of it, and the input's identity. A list is small and hashed (XXH3); a tar can be gigabytes
// and is identified by size and mtime.
ordered_json CaptionRun::shard_input_identity(const ShardSpec& s) const {
  ordered_json m;
  m["shard"] = s.name;
  m["input"] = canonical_input_path(s.path);
  struct stat st {};
  if (::stat(s.path.c_str(), &st) != 0) throw UsageError("cannot stat input " + s.path);
  m["input_size"] = static_cast<int64_t>(st.st_size);
  if (s.is_tar) {
    m["input_mtime_ns"] = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  } else {
    auto cached = list_xxh3_.find(s.path);  // hashed once per list, however many shards it has
    if (cached == list_xxh3_.end())
      cached = list_xxh3_.emplace(s.path, as_usage_error("", [&] { return file_xxh3(s.path); })).first;
    m["input_xxh3"] = cached->second;
    // The layout first: a changed --samples-per-shard is named before its consequences.
    m["samples_per_shard"] = o_.samples_per_shard;
    m["shard_id"] = s.shard_id;
    m["first_record"] = s.first_record;
    m["records"] = s.n_records;
    m["columns"] = {{"url", o_.columns.url},
                    {"caption", o_.columns.caption},
                    {"key", o_.columns.key},
                    {"strict", o_.columns.strict}};
  }
  return m;
}

// Records this run's plan in {out}/_recap_plan.json (engine/run_plan.h): refuses a re-planned
// shard that has outputs, or removes it with --overwrite, before any work starts.
void CaptionRun::update_run_plan() {
  std::vector<std::pair<std::string, ordered_json>> entries;
  std::set<std::string> run_inputs;
  for (auto& s : all_shards_) {
    entries.emplace_back(s.name, shard_plan_entry(s, o_.samples_per_shard));
    run_inputs.insert(canonical_input_path(s.path));
  }
  begin_critical();  // a signal now would leave a temp file; it is acted on at end_critical
  struct CriticalEnd {
    ~CriticalEnd() { end_critical(); }
  } critical_end;
  RunPlanLock lock(o_.out_dir);
  ordered_json old;
  try {
    old = read_run_plan_shards(o_.out_dir);
  } catch (const std::exception& e) {
    if (!o_.overwrite) throw UsageError(std::string(e.what()) + "; pass --overwrite to replace it");
    old = ordered_json::object();
  }
  PlanMerge m = merge_run_plan(old, entries, run_inputs);
  if (!m.differs) return;
  auto has_outputs = [&](const std::string& shard) {
    for (const std::string& f :
         {shard_stats_path(o_.out_dir, shard), shard_tar_path(o_.out_dir, shard),
          shard_jsonl_path(o_.out_dir, shard), io::join_path(o_.out_dir, "." + shard + ".log.partial"),
          io::join_path(o_.out_dir, "." + shard + ".tar.partial")})
      if (io::file_exists(f)) return true;
    return false;
  };
  if (!o_.overwrite) {
    for (auto& [name, change] : m.changed) {
      if (has_outputs(name))
        throw UsageError("shard " + name + ": " + change + " (planned differently in " +
                         run_plan_path(o_.out_dir) + "); pass --overwrite to replace it");
    }
    for (auto& name : m.stale)
      if (has_outputs(name))
        throw UsageError(
            "shard " + name + " of " + run_plan_path(o_.out_dir) + " (input " +
            old[name].value("input", std::string()) +
            ") is not in this run's plan (another layout of the same input); pass --overwrite to "
            "remove it");
  } else {
    for (auto& name : m.stale) {
      if (!has_outputs(name)) continue;
      std::string busy;
      if (!remove_shard_outputs(o_.out_dir, name, &busy))
        throw UsageError("shard " + name + " is not in this run's plan but " + busy + "; stop it first");
      rep_.line("shard " + name + ": removed (--overwrite: not in this run's plan, from another layout of " +
                old[name].value("input", std::string()) + ")");
    }
  }
  as_usage_error("", [&] { write_run_plan(o_.out_dir, m.shards); });
}

void CaptionRun::setup() {
  // Options that can be checked before anything is loaded.
  if (o_.out_dir.empty()) throw UsageError("--out is required");
  if (o_.lists.empty() && o_.inputs.empty())
    throw UsageError("no input: pass --list FILE or --input PATTERN");
  if (o_.max_batch < 0) throw UsageError("--max-batch must be at least 1 (or 0: chosen from memory)");
  if (o_.max_new_tokens < 1) throw UsageError("--max-new-tokens must be at least 1");
  if (o_.num_captions < 1) throw UsageError("--num-captions must be at least 1");
  if (o_.max_batch > 0 && o_.num_captions > o_.max_batch)
    throw UsageError("--num-captions " + std::to_string(o_.num_captions) + " exceeds --max-batch " +
                     std::to_string(o_.max_batch));
  if (!o_.shear.empty() && o_.shear != "words" && o_.shear != "tokens")
    throw UsageError("--shear must be 'words' or 'tokens', not '" + o_.shear + "'");
  if (o_.sampling.temperature < 0) throw UsageError("--temperature must be >= 0");
  if (o_.sampling.top_p <= 0 || o_.sampling.top_p > 1) throw UsageError("--top-p must be in (0, 1]");
  if (o_.sampling.top_k < 0) throw UsageError("--top-k must be >= 0");
  // ---- precision (1/2): flag check; the choice is made once the config is known (2/2).
  kernels::WeightFormat precision = kernels::WeightFormat::F32;
  kernels::KvDType kv_dtype;
  if (o_.precision != "auto" && o_.precision != "f32" && o_.precision != "bf16" && o_.precision != "int8" &&
      o_.precision != "int4")
    throw UsageError("--precision '" + o_.precision + "': expected auto, f32, bf16, int8 or int4");
  kv_dtype = as_usage_error("", [&] { return parse_kv_dtype(o_.kv_dtype); });

  if (o_.num_captions > 1 && o_.sampling.greedy())
    rep_.warning("--num-captions " + std::to_string(o_.num_captions) +
                 " with greedy decoding gives identical captions; set --temperature (and --top-k/--top-p) to "
                 "sample");
  check_environment();
  ThreadBudget tb = resolve_threads(o_.threads);
  apply_threads(tb.threads);
  threads_ = tb.threads;
  // AssignmentError and InputError are configuration errors by type (engine/errors.h).
  const ShardAssignment assign = resolve_shard_assignment(o_.shard_index, o_.shard_count);

  inputs_.lists = o_.lists;
  inputs_.tars = o_.inputs;
  inputs_.columns = o_.columns;
  inputs_.samples_per_shard = o_.samples_per_shard;
  inputs_.max_member_bytes = o_.max_image_bytes;
  std::vector<std::string> warnings;
  all_shards_ = plan_shards(inputs_, &warnings);
  for (auto& w : warnings) rep_.warning(w);
  // Inputs are read-only under every flag: refuse an --out where an output name is an input.
  check_inputs_are_not_outputs();
  ShardSelection selection;
  if (!o_.shards.empty()) selection = parse_shard_selection(o_.shards);
  if (!o_.shards_file.empty())
    selection = merge_selections(selection, read_shard_selection_file(o_.shards_file));
  std::vector<std::string> names;
  for (auto& s : all_shards_) names.push_back(s.name);
  const std::vector<int64_t> positions = worker_positions(assign, selection, names);
  for (int64_t p : positions) shards_.push_back(all_shards_[static_cast<size_t>(p)]);
  rep_.line("caption: " + std::to_string(all_shards_.size()) + " input shard(s)" +
            (selection.empty() ? "" : ", " + selection.describe() + " selected") + "; " + assign.describe() +
            " takes " + std::to_string(shards_.size()) + "; threads " + std::to_string(tb.threads) + " (" +
            tb.source + ")");

  // Model, tokenizer, template.
  const bool preloaded = o_.model != nullptr;
  models::Checkpoint ckpt;
  if (preloaded) {
    if (!o_.tokenizer) throw std::invalid_argument("CaptionOptions: a preloaded model needs its tokenizer");
    ckpt.config = o_.model->config();
    model_ = o_.model;
    tok_ = o_.tokenizer;
  } else {
    models::LoadOptions lo;
    lo.vision_weights_dir = o_.vision_weights_dir;
    lo.vision_config_dir = o_.vision_config_dir;
    // Every failure of these steps is the checkpoint, tokenizer or template the user named.
    ckpt = as_usage_error("", [&] { return models::open_checkpoint(o_.weights_dir, lo); });
  }
  if (!ckpt.config.has_text || !ckpt.config.has_vision)
    throw UsageError(o_.weights_dir +
                     ": not a LLaVA checkpoint (needs the vision tower and the language model)");
  // A quantized cache holds one precision; an explicit other --precision cannot be served
  // (re-quantizing quantized weights would silently change results).
  const std::string cache_precision = preloaded ? std::string() : models::quantized_cache_precision(ckpt);
  if (!cache_precision.empty() && o_.precision != "auto" && o_.precision != cache_precision)
    throw UsageError(o_.weights_dir + " is a quantized cache of " + cache_precision +
                     " weights but --precision " + o_.precision + " was given; pass --precision " +
                     cache_precision + " (or quantize the original checkpoint again)");
  as_usage_error("", [&] {
    if (!preloaded) {
      owned_tok_ = std::make_unique<models::Tokenizer>(
          models::open_tokenizer(ckpt.config, models::find_tokenizer(o_.weights_dir, o_.tokenizer_path)));
      tok_ = owned_tok_.get();
    }
    // Which tokenizer this is, said before it is checked against the model (a refused one is
    // named too).
    rep_.line("tokenizer: " + describe_tokenizer(tok_->path()));
    tmpl_ = resolve_caption_template(ckpt.config, o_.template_name, o_.prompt);
    stop_ids_ = models::stop_token_ids(tmpl_, *tok_, ckpt.config.generation.eos_token_ids);
  });
  check_tokenizer_fits(ckpt.config);
  // Throws UsageError("template: ...") when the template uses a field no sample has.
  const std::vector<int32_t> template_ids = template_prompt_ids(tmpl_, *tok_);

  // ---- precision (2/2): auto resolves here, and a run that cannot fit exits 2 before loading.
  // A preloaded model is already in the precision its caller names.
  if (preloaded) {
    if (o_.precision == "auto")
      throw std::invalid_argument("CaptionOptions: a preloaded model needs its precision");
    precision = kernels::parse_weight_format(o_.precision);
    precision_name_ = kernels::weight_format_name(precision);
    max_batch_ = o_.max_batch > 0 ? o_.max_batch : std::max(8, o_.num_captions);
  } else {
    RunShape shape;
    shape.prompt_positions = prompt_positions(ckpt.config, template_ids);
    shape.max_new_tokens = o_.max_new_tokens;
    // --max-batch 0: the precision is chosen as for a batch of 8, then the batch grows or
    // shrinks to what that precision leaves memory for.
    shape.num_captions = o_.num_captions;
    shape.max_batch = o_.max_batch > 0 ? o_.max_batch : auto_batch_for_precision_choice(shape);
    shape.vision_batch = o_.vision_batch;
    shape.io_workers = o_.io_workers;
    shape.kv_cache_mb = o_.kv_cache_mb;
    shape.kv_dtype = kv_dtype;
    std::optional<kernels::WeightFormat> cache_format;
    if (ckpt.text_store && models::is_quantized_cache_store(*ckpt.text_store))
      cache_format = models::QuantizedCacheWeightSource(ckpt.text_store).precision();
    const AvailableMemory avail = as_usage_error("", [&] { return available_memory(); });
    PrecisionChoice choice = as_usage_error(
        "", [&] { return choose_precision(o_.precision, cache_format, ckpt.config, shape, avail); });
    if (!choice.fits) throw UsageError(choice.error);
    max_batch_ = o_.max_batch;
    if (max_batch_ == 0) {
      max_batch_ = auto_max_batch(ckpt.config, choice.precision, shape, avail.bytes);
      rep_.line("max batch " + std::to_string(max_batch_) + " (auto: the largest up to " +
                std::to_string(kAutoMaxBatchCap) + " whose estimate fits " +
                std::to_string(avail.bytes >> 20) + " MiB available, " + avail.source + ")");
      // The same precision fits the batch picked for it; chosen again so that the reason's
      // figures are the run's own.
      shape.max_batch = max_batch_;
      choice = choose_precision(o_.precision, cache_format, ckpt.config, shape, avail);
    }
    precision = choice.precision;
    precision_name_ = kernels::weight_format_name(precision);
    rep_.line("precision " + precision_name_ + " (" + choice.reason + ")");
  }

  // Fingerprint: everything that changes outputs, nothing that must not (engine/fingerprint.h).
  ordered_json fp;
  fp["engine"] = o_.engine_version;
  as_usage_error("fingerprint", [&] {
    // A preloaded model is named by its config's weights_dir (e.g. "synthetic:llava-llama3-8b"):
    // its caller owns its identity.
    fp["weights"] = preloaded ? ordered_json(ckpt.config.weights_dir) : directory_identity(o_.weights_dir);
    if (!preloaded && ckpt.config.vision_weights_dir != ckpt.config.weights_dir)
      fp["vision_weights"] = directory_identity(ckpt.config.vision_weights_dir);
    fp["tokenizer"] = file_xxh3(tok_->path());
  });
  fp["precision"] = precision_name_;
  fp["kv_dtype"] = o_.kv_dtype;
  fp["template"] = models::template_to_json(tmpl_);
  fp["max_new_tokens"] = o_.max_new_tokens;
  fp["ignore_eos"] = o_.ignore_eos;
  fp["temperature"] = o_.sampling.temperature;
  fp["top_k"] = o_.sampling.top_k;
  fp["top_p"] = o_.sampling.top_p;
  fp["seed"] = o_.sampling.seed;
  fp["num_captions"] = o_.num_captions;
  fp["shear"] = o_.shear;
  fp["first_sentence"] = o_.first_sentence;
  fp["no_images"] = o_.no_images;
  fingerprint_ = fingerprint_of(fp);
  for (auto& s : shards_) {
    ordered_json m = shard_input_identity(s);
    for (auto it = fp.begin(); it != fp.end(); ++it) m[it.key()] = it.value();
    shard_fp_.emplace_back(fingerprint_of(m), std::move(m));
  }

  // Refuse conflicting outputs before spending time on loading weights.
  as_usage_error("", [&] { io::make_dirs(o_.out_dir); });
  if (!o_.overwrite) {
    for (size_t i = 0; i < shards_.size(); ++i) {
      auto p = probe_shard(o_.out_dir, shards_[i].name, shard_fp_[i]);
      if (p.state == ShardState::Conflict) throw UsageError(p.detail + "; pass --overwrite to replace it");
    }
  }
  update_run_plan();
  tot_.shards_total = static_cast<int64_t>(shards_.size());
  int64_t expected = 0;
  bool known = true;
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (shards_[i].n_records < 0)
      known = false;
    else if (probe_shard(o_.out_dir, shards_[i].name, shard_fp_[i]).state != ShardState::Done)
      expected += shards_[i].n_records;
  }
  if (known) tot_.samples_expected = expected;

  models::ModelOptions mo;
  mo.precision = precision;
  mo.kv_dtype = kv_dtype;
  auto t0 = Clock::now();
  if (!preloaded) {
    owned_model_ = models::LlavaModel::load(ckpt, mo);
    model_ = owned_model_.get();
  }
  const auto& cfg = model_->config();
  rep_.line("model: " + std::string(models::layout_name(cfg.layout)) + ", " + precision_name_ + " weights (" +
            std::to_string(model_->weight_bytes() >> 20) + " MiB) loaded in " +
            fmt_duration(std::chrono::duration<double>(Clock::now() - t0).count()) + "; fingerprint " +
            fingerprint_);
  isa_ = kernels::isa_name(kernels::active_isa());

  LoaderOptions lopt;
  lopt.workers = o_.io_workers;
  lopt.max_file_bytes = o_.max_image_bytes;
  lopt.decode.max_pixels = o_.max_image_pixels;
  lopt.http.timeout_s = o_.http_timeout_s;
  lopt.http.retries = o_.http_retries;
  lopt.http.max_in_flight = std::max(4, o_.io_workers);
  lopt.http.user_agent = io::HttpOptions::user_agent_for(o_.engine_version);
  lopt.http.disallowed_header_directives = io::parse_directive_list(o_.disallowed_header_directives);
  lopt.local_root = o_.local_root;
  lopt.preprocess = models::from_vision_config(cfg.vision);
  loader_ = std::make_unique<Loader>(lopt);

  DriverOptions dopt;
  dopt.max_new_tokens = o_.max_new_tokens;
  dopt.ignore_eos = o_.ignore_eos;
  dopt.sampling = o_.sampling;
  dopt.num_captions = o_.num_captions;
  dopt.shear = o_.shear;
  dopt.first_sentence = o_.first_sentence;
  dopt.max_batch = max_batch_;
  dopt.vision_batch = o_.vision_batch;
  dopt.kv_cache_mb = o_.kv_cache_mb;
  dopt.kv_dtype = kv_dtype;
  dopt.threads = threads_;
  dopt.vision_thread = o_.vision_thread;
  dopt.prefix_cache = o_.prefix_cache;
  driver_ = std::make_unique<CaptionDriver>(*model_, *tok_, tmpl_, stop_ids_, dopt, *loader_, pool_,
                                            [] { return stop_requested(); });
  const int64_t n_prompt_est = driver_->prompt_estimate();
  if (n_prompt_est + o_.max_new_tokens > cfg.text.max_position)
    throw UsageError("prompt (" + std::to_string(n_prompt_est) + " positions) + --max-new-tokens " +
                     std::to_string(o_.max_new_tokens) + " exceeds the model's " +
                     std::to_string(cfg.text.max_position) + " positions");
  const KvCacheShape& shape = pool_->shape();
  const int64_t blocks = pool_->total_blocks();
  rep_.line("kv cache: " + std::to_string(blocks) + " blocks x " + std::to_string(shape.block_size) +
            " positions (" + std::to_string((static_cast<size_t>(blocks) * shape.bytes_per_block()) >> 20) +
            " MiB, " + o_.kv_dtype + "); max batch " + std::to_string(max_batch_) + "; prompt " +
            std::to_string(n_prompt_est) + " positions; isa " + isa_);
  mtime_ = static_cast<int64_t>(::time(nullptr));
}
bool CaptionRun::open_next_shard() {
  while (next_shard_ < shards_.size()) {
    const ShardFingerprint& fp = shard_fp_[next_shard_];
    const ShardSpec& spec = shards_[next_shard_++];
    ShardProbe probe;
    std::unique_ptr<ShardOutput> out;
    try {
      out = ShardOutput::open(o_.out_dir, spec.name, fp, o_.overwrite, mtime_, &probe);
    } catch (const FingerprintMismatch& e) {
      throw UsageError(e.what());
    } catch (const io::IoError& e) {  // this shard's files or lock: the others may still work
      rep_.error("shard " + spec.name + ": error: " + e.what());
      tot_.shards_failed++;
      had_failure_ = true;
      continue;
    }
    if (!out) {
      if (probe.state == ShardState::Done) {
        tot_.shards_skipped++;
        rep_.line("shard " + spec.name + ": already done, skipped");
      } else {
        tot_.shards_busy++;
        rep_.line("shard " + spec.name + ": " + probe.detail + ", skipped");
      }
      continue;
    }
    auto sh = std::make_unique<OpenShard>();
    sh->spec = spec;
    sh->fp = fp;
    sh->start_time = now_epoch();
    try {
      sh->stream = open_shard(spec, inputs_);
    } catch (const InputError& e) {
      rep_.error("shard " + spec.name + ": error: " + e.what());
      tot_.shards_failed++;
      had_failure_ = true;
      continue;
    }
    if (out->resumed_count() > 0)
      rep_.line("shard " + spec.name + ": resuming, " + std::to_string(out->resumed_count()) +
                " sample(s) already done");
    // A webdataset shard keeps its input's sample order (captions finish out of order). List
    // shards are written as samples finish: holding finished captions behind an earlier
    // unfinished one would delay every write by up to a whole decode wave.
    if (spec.is_tar) out->keep_input_order(true);
    OpenShard* raw = sh.get();
    out->on_written([this, raw](const SampleOutcome& oc) { count_written(raw, oc); });
    sh->out = std::move(out);
    open_.push_back(std::move(sh));
    return true;
  }
  return false;
}

void CaptionRun::feed() {
  const size_t lookahead = driver_->lookahead(o_.io_workers);
  // --max-samples is checked only when a new sample (or a new shard) would be taken, so a
  // shard whose last sample is the limit-th is still seen to its end and finished.
  auto limit_reached = [&] { return o_.max_samples > 0 && admitted_new_ >= o_.max_samples; };
  while (!sources_done_ && !stop_requested()) {
    if (driver_->queued() >= lookahead) break;
    // Outcomes held back for input order count too (generously: a long caption holds later
    // ones back while the batch keeps decoding), so memory stays bounded.
    size_t held = 0;
    for (auto& o : open_) held += o->out->held();
    if (held >= 4 * lookahead) break;
    OpenShard* sh = open_.empty() || open_.back()->exhausted ? nullptr : open_.back().get();
    if (!sh) {
      if (limit_reached()) {
        max_samples_reached_ = true;
        sources_done_ = true;
        break;
      }
      if (!open_next_shard()) {
        sources_done_ = true;
        break;
      }
      continue;
    }
    SampleInput in;
    bool got = false;
    try {
      got = sh->stream->next(&in);
    } catch (const InputError& e) {
      sh->failure = e.what();
      sh->exhausted = true;
      continue;
    }
    for (auto& w : sh->stream->take_warnings()) rep_.line("warning: " + w);
    if (!got) {
      sh->exhausted = true;
      continue;
    }
    if (sh->out->done_indices().count(in.index)) continue;  // finished by an earlier run
    if (limit_reached()) {  // this sample and the rest of the shard are left for a rerun
      max_samples_reached_ = true;
      sources_done_ = true;
      break;
    }
    // Said here, in input order (the loader returns results in completion order).
    if (!in.parse_error.empty() && in.input_status.empty()) warn_malformed(in, in.parse_error);
    if (!in.parse_error.empty() && !in.input_status.empty())  // a tar member over a limit
      rep_.line("warning: " + in.parse_error + " (key " + in.key + ", recorded as " + in.input_status + ")");
    const uint64_t tag = next_tag_++;
    sh->in_flight++;
    admitted_new_++;
    flight_[tag] = sh;
    driver_->push(tag, std::move(in));
  }
}

// Hands a finished sample to its shard. A shard whose output failed (a lost lock, a full disk)
// takes no more samples; a rerun redoes them.
void CaptionRun::write_outcome(OpenShard* sh, SampleOutcome&& oc) {
  sh->in_flight--;
  if (sh->output_failed) return;  // not written; a rerun redoes it
  // A sample's record carries the fingerprint of the shard it is written to (the one its
  // stats and partial log record), not only the run's.
  oc.meta["fingerprint"] = sh->fp.hash;
  try {
    sh->out->append(std::move(oc));
  } catch (const io::IoError& e) {
    // One shard's output failing fails that shard; the others go on.
    sh->output_failed = true;
    sh->exhausted = true;
    sh->failure = std::string("output: ") + e.what();
  }
}

// The run's counters count only samples actually written to a shard's outputs (called by
// ShardOutput for each, including samples it held back for input order): one whose shard
// output failed, or that was already recorded, is not counted.
void CaptionRun::count_written(OpenShard* sh, const SampleOutcome& oc) {
  sh->new_samples++;
  tot_.samples++;
  if (oc.success) {
    tot_.successes++;
    sh->new_successes++;
  } else {
    tot_.failed++;
  }
  tot_.by_status[oc.meta.value("status", std::string("?"))]++;
  tot_.tokens_out += oc.meta.value("tokens_out", int64_t(0));
  tot_.tokens_in += oc.meta.value("tokens_in", int64_t(0));
}

// A malformed list line or tar sample is recorded like any failure (the loader turns its
// parse_error into failed_to_parse); it is also said on stderr, naming the file and line (or
// the tar and key), because it means the input needs fixing rather than that a download
// failed. The first kMaxMalformedWarnings of a run are printed; the final summary counts the
// rest.
constexpr int64_t kMaxMalformedWarnings = 20;

void CaptionRun::warn_malformed(const SampleInput& in, const std::string& error) {
  if (++malformed_ > kMaxMalformedWarnings) return;
  std::string msg = "warning: malformed input: ";
  msg += error;
  msg += " (key ";
  msg += in.key;
  msg += ", recorded as failed_to_parse)";
  rep_.error(msg);
}

void CaptionRun::fail_sample(OpenShard* sh, const CaptionRecord& rec) {
  const LoadResult& load = rec.load;
  SampleOutcome oc;
  oc.index = load.in.index;
  oc.key = load.in.key;
  oc.success = false;
  oc.meta = base_meta(load.in);
  oc.meta["status"] = rec.status;
  oc.meta["error_message"] = rec.error;
  if (load.width > 0) {
    oc.meta["width"] = load.width;
    oc.meta["height"] = load.height;
  } else {
    oc.meta["width"] = nullptr;
    oc.meta["height"] = nullptr;
  }
  oc.meta["fingerprint"] = fingerprint_;
  write_outcome(sh, std::move(oc));
}

// A finished sample from the driver, written to its shard.
void CaptionRun::on_record(CaptionRecord&& rec) {
  auto it = flight_.find(rec.id);
  if (it == flight_.end()) return;
  OpenShard* sh = it->second;
  flight_.erase(it);
  if (!rec.ok()) {
    fail_sample(sh, rec);
    return;
  }
  LoadResult& load = rec.load;
  const SampleInput& in = load.in;
  std::vector<std::string>& captions = rec.captions;
  SampleOutcome oc;
  oc.index = in.index;
  oc.key = in.key;
  oc.success = true;
  oc.meta = base_meta(in);
  oc.meta["status"] = "success";
  oc.meta["error_message"] = nullptr;
  oc.meta["width"] = load.width;
  oc.meta["height"] = load.height;
  oc.meta["original_width"] =
      in.extra.contains("original_width") ? in.extra["original_width"] : ordered_json(load.width);
  oc.meta["original_height"] =
      in.extra.contains("original_height") ? in.extra["original_height"] : ordered_json(load.height);
  oc.meta["re_caption"] = captions[0];
  if (captions.size() > 1) oc.meta["re_captions"] = captions;
  oc.meta["tokens_in"] = rec.prompt_tokens;
  oc.meta["tokens_out"] = rec.new_tokens;
  oc.meta["stop_reason"] =
      rec.stop_reasons.size() == 1 ? ordered_json(rec.stop_reasons[0]) : ordered_json(rec.stop_reasons);
  oc.meta["timings_ms"] = {{"fetch", load.fetch_ms},
                           {"decode_image", load.decode_ms},
                           {"vision", rec.vision_ms},
                           {"prefill", rec.prefill_ms},
                           {"generate", rec.decode_ms}};
  oc.meta["fingerprint"] = fingerprint_;
  // Carried members of a tar sample; one named like a caption this run writes ({key}.1.txt
  // with --num-captions 2) is replaced, its text kept in org_captions.
  for (auto& m : load.in.carried) {
    std::string lower = m.suffix;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool replaced = false;
    for (size_t c = 1; c < captions.size(); ++c) replaced = replaced || lower == std::to_string(c) + ".txt";
    if (replaced)
      oc.meta["org_captions"][m.suffix] = m.bytes;
    else
      oc.carried.push_back(std::move(m));
  }
  oc.captions = std::move(captions);
  if (!o_.no_images) {
    oc.image_bytes = std::move(load.in.image_bytes);
    // A tar's image keeps its member name ({key}.JPEG stays {key}.JPEG); a fetched one gets
    // the extension of what its bytes are.
    oc.image_ext =
        load.in.has_inline_image ? load.in.image_ext : (load.image_ext.empty() ? "jpg" : load.image_ext);
  }
  write_outcome(sh, std::move(oc));
}

void CaptionRun::close_finished_shards() {
  for (auto it = open_.begin(); it != open_.end();) {
    OpenShard& sh = **it;
    if (!sh.exhausted || sh.in_flight > 0) {
      ++it;
      continue;
    }
    if (!sh.failure.empty()) {
      rep_.error("shard " + sh.spec.name + ": error: " + sh.failure +
                 " (finished samples kept; not marked done)");
      tot_.shards_failed++;
      had_failure_ = true;
    } else {
      double end = now_epoch();
      double dur = end - sh.start_time;
      ordered_json extra;
      extra["images_per_sec"] = dur > 0 ? static_cast<double>(sh.new_successes) / dur : 0.0;
      extra["isa"] = isa_;
      extra["precision"] = precision_name_;
      extra["kv_dtype"] = o_.kv_dtype;
      extra["max_batch"] = max_batch_;
      extra["engine_version"] = o_.engine_version;
      extra["shard"] = sh.spec.name;
      extra["input"] = sh.spec.path;
      extra["plan"] = shard_plan_entry(sh.spec, o_.samples_per_shard);
      try {
        auto st = sh.out->finish(extra, sh.start_time, end);
        tot_.shards_done++;
        const int64_t count = st["count"].get<int64_t>(), ok = st["successes"].get<int64_t>();
        rep_.line("shard " + sh.spec.name + ": done, " + std::to_string(count) + " samples (" +
                  std::to_string(ok) + " ok) in " + fmt_duration(dur) + " -> " +
                  shard_tar_path(o_.out_dir, sh.spec.name));
        // Written with its failures (a rerun skips it), but a shard without one caption means
        // something is wrong with the input or the setup: the run says so in its exit code.
        if (count > 0 && ok == 0) {
          rep_.error("shard " + sh.spec.name + ": error: every sample failed (" + std::to_string(count) +
                     " failed; see " + shard_jsonl_path(o_.out_dir, sh.spec.name) +
                     "); written with its failures, the run exits 1");
          tot_.shards_all_failed++;
          had_failure_ = true;
        }
      } catch (const io::IoError& e) {
        rep_.error("shard " + sh.spec.name + ": error: cannot publish: " + e.what() + " (not marked done)");
        tot_.shards_failed++;
        had_failure_ = true;
      }
    }
    it = open_.erase(it);
  }
}

// Assigned shards this run leaves without a stats file: still open (--max-samples stopped
// the feed, or a signal) or never reached and not already done.
int64_t CaptionRun::unfinished_shards() const {
  int64_t n = static_cast<int64_t>(open_.size());
  for (size_t i = next_shard_; i < shards_.size(); ++i)
    if (probe_shard(o_.out_dir, shards_[i].name, shard_fp_[i]).state != ShardState::Done) ++n;
  return n;
}

ordered_json CaptionRun::summary_json() const {
  ordered_json s;
  double el = rep_.elapsed();
  s["out_dir"] = o_.out_dir;
  s["fingerprint"] = fingerprint_;
  s["shards_assigned"] = tot_.shards_total;
  s["shards_done"] = tot_.shards_done;
  s["shards_skipped"] = tot_.shards_skipped;
  s["shards_busy"] = tot_.shards_busy;
  s["shards_failed"] = tot_.shards_failed;
  s["shards_all_samples_failed"] = tot_.shards_all_failed;
  s["samples"] = tot_.samples;
  s["successes"] = tot_.successes;
  s["failed"] = tot_.failed;
  s["status"] = tot_.by_status;
  s["tokens_in"] = tot_.tokens_in;
  s["tokens_out"] = tot_.tokens_out;
  // Positions run through a prefill forward: each prompt once, however many captions
  // (--num-captions) continue from it. Shows that captions share their image's prefill.
  s["tokens_prefilled"] = driver_ ? driver_->tokens_prefilled() : 0;
  // The shared prefix (the template before the image, whole KV blocks): its positions,
  // computed once, and the prompt positions that were therefore not computed again.
  s["prefix_cache"] = {{"positions", driver_ ? driver_->prefix_positions() : 0},
                       {"positions_saved", driver_ ? driver_->prefix_positions_saved() : 0}};
  s["duration"] = el;
  s["images_per_sec"] = el > 0 ? static_cast<double>(tot_.successes) / el : 0.0;
  s["tokens_per_sec"] = el > 0 ? static_cast<double>(tot_.tokens_out) / el : 0.0;
  s["isa"] = isa_;
  s["precision"] = precision_name_;
  s["threads"] = threads_;
  s["vision_thread"] = driver_ && driver_->vision_thread();
  s["llm_waited_for_vision_s"] = driver_ ? driver_->llm_waited_for_vision_s() : 0.0;
  s["interrupted"] = stop_requested();
  s["max_samples_reached"] = max_samples_reached_;
  s["unfinished_shards"] = unfinished_shards();
  s["malformed_inputs"] = malformed_;
  return s;
}

ExitCode CaptionRun::run() {
  try {
    setup();
  } catch (const std::exception& e) {
    if (!is_usage_error(e)) throw;
    rep_.error(std::string("caption: error: ") + e.what());
    return ExitCode::kUsage;
  }
  // From here a signal checkpoints: samples in flight are finished and written (engine/signals.h).
  enter_checkpoint_phase();
  const auto on_record_fn = [this](CaptionRecord&& rec) { on_record(std::move(rec)); };
  try {
    for (;;) {
      feed();
      driver_->pump(on_record_fn);
      const bool stopping = stop_requested();
      // Stopping: the sequences already decoding finish and are written; samples still loading
      // or waiting for the tower are left for a rerun. Otherwise: every sample is recorded.
      const bool done = stopping ? driver_->decoding_idle() : (sources_done_ && driver_->in_flight() == 0);
      close_finished_shards();
      rep_.tick(tot_);
      if (done) break;
    }
  } catch (const UsageError& e) {
    rep_.error(std::string("caption: error: ") + e.what());
    return ExitCode::kUsage;
  }
  ExitCode rc = ExitCode::kOk;
  rep_.tick(tot_, true);
  rep_.clear();
  bool interrupted = stop_requested();
  auto summary = summary_json();
  const int64_t unfinished = summary["unfinished_shards"].get<int64_t>();
  const bool cut_short = !interrupted && max_samples_reached_ && unfinished > 0;
  if (!o_.stats_json.empty()) io::atomic_write(o_.stats_json, summary.dump(4) + "\n");
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "caption: %s: %lld shard(s) done, %lld skipped, %lld failed, %lld busy; %lld samples (%lld ok, "
      "%lld failed); %.2f img/s, %.1f tok/s; outputs in %s",
      interrupted ? "interrupted" : (cut_short ? "stopped" : "finished"),
      static_cast<long long>(tot_.shards_done), static_cast<long long>(tot_.shards_skipped),
      static_cast<long long>(tot_.shards_failed), static_cast<long long>(tot_.shards_busy),
      static_cast<long long>(tot_.samples), static_cast<long long>(tot_.successes),
      static_cast<long long>(tot_.failed), summary["images_per_sec"].get<double>(),
      summary["tokens_per_sec"].get<double>(), o_.out_dir.c_str());
  rep_.line(buf);
  if (malformed_ > kMaxMalformedWarnings)
    rep_.warning("... " + std::to_string(malformed_ - kMaxMalformedWarnings) +
                 " more malformed input(s) not shown (" + std::to_string(malformed_) +
                 " in all, status failed_to_parse in the sidecars)");
  if (interrupted) {
    rep_.error("caption: stopped by signal " + std::to_string(stop_signal()) +
               "; finished samples are kept, rerun the same command to resume (exit 75)");
    rc = ExitCode::kInterrupted;
  } else if (had_failure_) {
    rc = ExitCode::kRuntime;
  } else if (cut_short) {
    // Exit 0 promises every assigned shard is done; here some are not (no stats file).
    rep_.line("caption: stopped at --max-samples " + std::to_string(o_.max_samples) + " with " +
                  std::to_string(unfinished) +
                  " shard(s) unfinished; finished samples are kept, rerun the same command to continue "
                  "(exit 75)",
              true);
    rc = ExitCode::kInterrupted;
  }
  return rc;
}

}  // namespace

int run_caption(const CaptionOptions& opts) {
  CaptionRun run(opts);
  return static_cast<int>(run.run());
}

}  // namespace recap::engine
