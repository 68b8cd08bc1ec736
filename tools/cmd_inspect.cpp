// recap-engine inspect: what a checkpoint directory holds and whether the engine can run it.
//
// Prints the layout detected, where the vision tower came from, each component's dims,
// dtypes and parameter count, the bytes on disk, the weight memory each precision would need,
// and every problem found (tensor presence, dtype, shape) plus warnings. --json prints the
// same as one JSON object. Exit 0 when the checkpoint is usable, 2 with a one-line reason
// (stderr) when it is not.
//
// Memory estimate (weights only; no activations or KV cache): every GEMM matrix and the
// token embedding at the precision, sized by kernels::PackedWeight::packed_bytes (the exact
// packed layout, incl. panel padding and int8/int4 group scales); norms, biases, class and
// position embeddings in f32. Vision encoder layers past the selected layer are never loaded
// and not counted. A tied lm_head is counted twice because the decoder packs its own copy.
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "models/config.h"
#include "models/quantized_cache.h"
#include "models/weight_names.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

using json = nlohmann::ordered_json;
using kernels::WeightFormat;

constexpr WeightFormat kFormats[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8,
                                     WeightFormat::Int4};
constexpr const char* kFormatNames[] = {"f32", "bf16", "int8", "int4"};

struct ComponentReport {
  std::string name;
  std::string dims;  // one line for humans
  json dims_json;
  std::map<std::string, int64_t> dtype_counts;
  int64_t tensors = 0;
  int64_t params = 0;
  size_t memory[4] = {0, 0, 0, 0};
};

std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s.push_back(',');
    s.push_back(digits[i]);
  }
  return s;
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string fmt_float(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::string dtype_summary(const std::map<std::string, int64_t>& counts) {
  std::string s;
  for (const auto& [d, n] : counts) {
    if (!s.empty()) s += ", ";
    s += d + " x " + std::to_string(n) + (n == 1 ? " tensor" : " tensors");
  }
  return s.empty() ? "none found" : s;
}

void describe_dims(const models::ModelConfig& c, std::map<models::Component, ComponentReport>& reps) {
  if (c.has_vision) {
    const auto& v = c.vision;
    ComponentReport& r = reps[models::Component::Vision];
    r.dims = "hidden " + std::to_string(v.hidden) + ", intermediate " + std::to_string(v.intermediate) +
             ", layers " + std::to_string(v.layers) + " (" + std::to_string(v.layers_to_run()) +
             " run for select_layer " + std::to_string(v.select_layer) + "), heads " +
             std::to_string(v.heads) + " (head_dim " + std::to_string(v.hidden / v.heads) + "), image " +
             std::to_string(v.image_size) + ", patch " + std::to_string(v.patch_size) + " (" +
             std::to_string(v.num_patches()) + " patches), act " + v.hidden_act + ", ln_eps " +
             fmt_float(v.ln_eps);
    r.dims_json = {{"hidden", v.hidden},
                   {"intermediate", v.intermediate},
                   {"layers", v.layers},
                   {"layers_run", v.layers_to_run()},
                   {"heads", v.heads},
                   {"head_dim", v.hidden / v.heads},
                   {"image_size", v.image_size},
                   {"patch_size", v.patch_size},
                   {"channels", v.channels},
                   {"num_patches", v.num_patches()},
                   {"hidden_act", v.hidden_act},
                   {"ln_eps", v.ln_eps},
                   {"select_layer", v.select_layer},
                   {"select_feature", v.select_feature}};
  }
  if (c.has_text) {
    const auto& p = c.projector;
    ComponentReport& pr = reps[models::Component::Projector];
    pr.dims = p.type + ": " + std::to_string(p.in) + " -> " + std::to_string(p.hidden) + " -> GELU(erf) -> " +
              std::to_string(p.out);
    pr.dims_json = {{"type", p.type}, {"in", p.in}, {"hidden", p.hidden}, {"out", p.out}};
    const auto& t = c.text;
    ComponentReport& tr = reps[models::Component::Text];
    tr.dims = "hidden " + std::to_string(t.hidden) + ", intermediate " + std::to_string(t.intermediate) +
              ", layers " + std::to_string(t.layers) + ", heads " + std::to_string(t.heads) + ", kv_heads " +
              std::to_string(t.kv_heads) + ", head_dim " + std::to_string(t.head_dim) + ", vocab " +
              std::to_string(t.vocab) + ", rms_eps " + fmt_float(t.rms_eps) + ", rope_theta " +
              fmt_float(t.rope_theta) + ", max_position " + std::to_string(t.max_position) +
              (t.tie_embeddings ? ", tied embeddings" : ", untied lm_head");
    tr.dims_json = models::text_config_json(t);
  }
}

// A quantized cache (recap-engine quantize) stores packed U8 matrices under their WeightSource
// keys (fused matrices join their tensor names with '+') and f32 vectors under checkpoint
// names. Its report counts logical parameters (n x k per packed matrix), not stored bytes,
// and its problems are the expected tensors the cache lacks (open_quantized_cache already
// checked every recorded matrix's size and alignment).
struct CacheReport {
  std::string precision;
  int64_t matrices = 0;
  std::vector<std::string> problems;
};

CacheReport describe_quantized_cache(const models::Checkpoint& ck,
                                     std::map<models::Component, ComponentReport>& reps,
                                     std::set<std::string>& known) {
  CacheReport out;
  const io::WeightStore& store = *ck.text_store;
  // The cache's own reader: it has parsed and checked recap.matrices on open.
  const models::QuantizedCacheWeightSource cache(ck.text_store);
  out.precision = kernels::weight_format_name(cache.precision());
  std::map<std::string, const models::ExpectedTensor*> expected;
  const auto all = models::expected_tensors(ck.config);
  for (const auto& e : all) expected[e.name] = &e;
  std::set<std::string> covered;
  for (const auto& [key, m] : cache.matrices()) {
    ++out.matrices;
    known.insert(key);
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string part; std::getline(ss, part, '+');) parts.push_back(part);
    auto first = expected.find(parts.front());
    ComponentReport& r = reps[first != expected.end() ? first->second->component : models::Component::Text];
    r.tensors += static_cast<int64_t>(parts.size());
    r.dtype_counts[std::string(kernels::weight_format_name(m.format)) + " packed"] +=
        static_cast<int64_t>(parts.size());
    r.params += m.n * m.k;
    covered.insert(parts.begin(), parts.end());
  }
  for (const auto& e : all) {
    if (!e.used) continue;
    if (e.matrix) {
      if (!covered.count(e.name))
        out.problems.push_back("packed matrix '" + e.name + "' is missing from the cache");
      continue;
    }
    const io::TensorInfo* t = store.find(e.name);
    if (!t) {
      out.problems.push_back("tensor '" + e.name + "' is missing from the cache");
      continue;
    }
    known.insert(e.name);
    if (t->dtype != io::DType::F32 || t->numel() != e.numel()) {
      out.problems.push_back("tensor '" + e.name + "' holds " + std::to_string(t->numel()) + " " +
                             io::dtype_name(t->dtype) + " values; expected " + std::to_string(e.numel()) +
                             " F32");
      continue;
    }
    ComponentReport& r = reps[e.component];
    ++r.tensors;
    ++r.dtype_counts["F32"];
    r.params += t->numel();
  }
  return out;
}

int run_inspect(const std::string& weights, const std::string& vision_weights,
                const std::string& vision_config, bool as_json) {
  models::LoadOptions opts;
  opts.vision_weights_dir = vision_weights;
  opts.vision_config_dir = vision_config;
  models::Checkpoint ck;
  try {
    ck = models::open_checkpoint_unchecked(weights, opts);
  } catch (const std::exception& e) {  // whatever stops the checkpoint from opening is its fault
    throw engine::UsageError(one_line(e.what()));
  }
  const models::ModelConfig& c = ck.config;
  const bool is_cache = ck.text_store && models::is_quantized_cache_store(*ck.text_store);
  std::vector<std::string> problems;
  if (!is_cache) problems = models::checkpoint_problems(ck);

  std::map<models::Component, ComponentReport> reps;
  for (auto comp : {models::Component::Vision, models::Component::Projector, models::Component::Text})
    reps[comp].name = models::component_name(comp);
  describe_dims(c, reps);

  // Per-component tensors, dtypes, params and memory; collect the expected names per store.
  std::map<const io::WeightStore*, std::set<std::string>> expected_by_store;
  const std::string embed_name = models::tensor_name(c.names, models::TextTensor::Embedding);
  for (const models::ExpectedTensor& e : models::expected_tensors(c)) {
    const io::WeightStore* store =
        e.component == models::Component::Vision ? ck.vision_store.get() : ck.text_store.get();
    expected_by_store[store].insert(e.name);
    ComponentReport& r = reps[e.component];
    const io::TensorInfo* t = store && !is_cache ? store->find(e.name) : nullptr;
    if (t) {
      ++r.tensors;
      ++r.dtype_counts[io::dtype_name(t->dtype)];
      r.params += t->numel();
    }
    if (!e.used) continue;
    const int64_t n = e.shape.empty() ? 1 : e.shape[0];
    const int64_t k = n > 0 ? e.numel() / n : 0;
    const int copies = (e.name == embed_name && c.names.lm_head == embed_name) ? 2 : 1;
    for (int f = 0; f < 4; ++f) {
      size_t bytes = e.matrix ? kernels::PackedWeight::packed_bytes(kFormats[f], n, k)
                              : static_cast<size_t>(e.numel()) * sizeof(float);
      r.memory[f] += bytes * static_cast<size_t>(copies);
    }
  }

  CacheReport cache;
  if (is_cache) {
    std::set<std::string> known;
    cache = describe_quantized_cache(ck, reps, known);
    problems = cache.problems;
    expected_by_store[ck.text_store.get()] = std::move(known);
  }

  // Tensors the engine never reads (post_layernorm, CLIP text model, position_ids, ...).
  std::vector<const io::WeightStore*> stores;
  for (auto* s : {ck.text_store.get(), ck.vision_store.get()})
    if (s && std::find(stores.begin(), stores.end(), s) == stores.end()) stores.push_back(s);
  int64_t ignored = 0, ignored_params = 0;
  std::vector<std::string> ignored_examples;
  uint64_t bytes_on_disk = 0;
  std::vector<std::string> files;
  for (const io::WeightStore* s : stores) {
    bytes_on_disk += s->bytes_on_disk();
    for (const auto& f : s->files()) files.push_back(f->path());
    const auto& want = expected_by_store[s];
    for (const std::string& name : s->names()) {
      if (want.count(name)) continue;
      ++ignored;
      ignored_params += s->find(name)->numel();
      if (ignored_examples.size() < 6) ignored_examples.push_back(name);
    }
  }

  int64_t total_params = 0;
  size_t total_memory[4] = {0, 0, 0, 0};
  for (auto& [comp, r] : reps) {
    total_params += r.params;
    for (int f = 0; f < 4; ++f) total_memory[f] += r.memory[f];
  }
  const bool usable = problems.empty();
  // The sizes preprocessing will use (0 in the config means "the tower's image size").
  const int64_t resize_edge =
      c.vision.resize_shortest_edge > 0 ? c.vision.resize_shortest_edge : c.vision.image_size;
  const int64_t crop = c.vision.crop_size > 0 ? c.vision.crop_size : c.vision.image_size;

  if (as_json) {
    json j;
    j["weights_dir"] = c.weights_dir;
    j["layout"] = models::layout_name(c.layout);
    j["architecture"] = c.architecture;
    j["family"] = {{"name", models::family_spec(c.family).name},
                   {"tokenizer", models::tokenizer_kind_name(c.tokenizer_kind)},
                   {"default_template", c.default_template}};
    j["has_vision"] = c.has_vision;
    j["has_text"] = c.has_text;
    j["torch_dtype"] = c.text_dtype;
    if (is_cache) j["quantized_cache"] = {{"precision", cache.precision}, {"matrices", cache.matrices}};
    j["vision_tower"] = {{"source", c.vision_tower_source},
                         {"dir", c.vision_weights_dir},
                         {"prefix", c.names.vision_prefix},
                         {"config_source", c.vision_config_source}};
    const auto& v = c.vision;
    j["preprocessing"] = {{"source", c.preprocessor_source},
                          {"resize_shortest_edge", resize_edge},
                          {"crop_size", crop},
                          {"image_mean", v.image_mean},
                          {"image_std", v.image_std},
                          {"pad_background", v.pad_background}};
    json comps = json::object();
    for (auto& [comp, r] : reps) {
      if ((comp == models::Component::Vision && !c.has_vision) ||
          (comp != models::Component::Vision && !c.has_text))
        continue;
      json mem;
      for (int f = 0; f < 4; ++f) mem[kFormatNames[f]] = r.memory[f];
      comps[r.name] = {{"dims", r.dims_json},
                       {"tensors", r.tensors},
                       {"dtypes", r.dtype_counts},
                       {"params", r.params},
                       {"memory_bytes", mem}};
    }
    j["components"] = comps;
    if (c.has_text) {
      j["names"] = {{"text_prefix", c.names.text_prefix},
                    {"lm_head", c.names.lm_head},
                    {"projector_1", c.names.proj1_prefix},
                    {"projector_2", c.names.proj2_prefix}};
      j["generation"] = {{"bos_token_id", c.generation.bos_token_id},
                         {"eos_token_ids", c.generation.eos_token_ids}};
      j["image_token_index"] = c.image_token_index;
    }
    j["ignored_tensors"] = {{"count", ignored}, {"params", ignored_params}, {"examples", ignored_examples}};
    j["params_total"] = total_params;
    j["files"] = files;
    j["bytes_on_disk"] = bytes_on_disk;
    json mem;
    for (int f = 0; f < 4; ++f) mem[kFormatNames[f]] = total_memory[f];
    j["memory_bytes"] = mem;
    j["warnings"] = c.warnings;
    j["problems"] = problems;
    j["usable"] = usable;
    write_report(j.dump(2) + "\n");
  } else {
    std::printf("weights:        %s\n", c.weights_dir.c_str());
    std::printf("layout:         %s (%s)\n", models::layout_name(c.layout), c.architecture.c_str());
    std::printf("family:         %s (tokenizer %s, default template %s)\n",
                models::family_spec(c.family).name, models::tokenizer_kind_name(c.tokenizer_kind),
                c.default_template.empty() ? "none" : c.default_template.c_str());
    if (!c.text_dtype.empty()) std::printf("torch_dtype:    %s\n", c.text_dtype.c_str());
    if (is_cache)
      std::printf("quantized:      %s cache, %lld packed matrices (params below are logical n x k)\n",
                  cache.precision.c_str(), static_cast<long long>(cache.matrices));
    std::printf("vision tower:   %s\n", c.vision_tower_source.c_str());
    std::printf("vision config:  %s\n", c.vision_config_source.c_str());
    const auto& v = c.vision;
    std::printf(
        "preprocessing:  %s: resize shortest edge %lld, crop %lld, mean [%g %g %g], std [%g %g %g], pad "
        "(%d,%d,%d)\n",
        c.preprocessor_source.c_str(), static_cast<long long>(resize_edge), static_cast<long long>(crop),
        v.image_mean[0], v.image_mean[1], v.image_mean[2], v.image_std[0], v.image_std[1], v.image_std[2],
        v.pad_background[0], v.pad_background[1], v.pad_background[2]);
    for (auto& [comp, r] : reps) {
      if ((comp == models::Component::Vision && !c.has_vision) ||
          (comp != models::Component::Vision && !c.has_text))
        continue;
      std::printf("\n%s:\n  dims:    %s\n  dtypes:  %s\n  params:  %s\n", r.name.c_str(), r.dims.c_str(),
                  dtype_summary(r.dtype_counts).c_str(),
                  with_commas(static_cast<uint64_t>(r.params)).c_str());
    }
    if (c.has_text) {
      std::string eos;
      for (int64_t id : c.generation.eos_token_ids) eos += (eos.empty() ? "" : " ") + std::to_string(id);
      std::printf("\ngeneration:     bos %lld, eos [%s]\n", static_cast<long long>(c.generation.bos_token_id),
                  eos.c_str());
      std::printf("names:          text %s*, lm_head %s, projector %s* / %s*\n", c.names.text_prefix.c_str(),
                  c.names.lm_head.c_str(), c.names.proj1_prefix.c_str(), c.names.proj2_prefix.c_str());
    }
    std::printf("\nparameters:     %s (used by the engine)\n",
                with_commas(static_cast<uint64_t>(total_params)).c_str());
    if (ignored > 0) {
      std::string ex;
      for (const auto& n : ignored_examples) ex += (ex.empty() ? "" : ", ") + n;
      std::printf("ignored:        %lld tensors, %s params (e.g. %s%s)\n", static_cast<long long>(ignored),
                  with_commas(static_cast<uint64_t>(ignored_params)).c_str(), ex.c_str(),
                  ignored > static_cast<int64_t>(ignored_examples.size()) ? ", ..." : "");
    }
    std::printf("on disk:        %s (%s bytes in %zu file%s)\n", human_bytes(bytes_on_disk).c_str(),
                with_commas(bytes_on_disk).c_str(), files.size(), files.size() == 1 ? "" : "s");
    std::printf("weight memory by precision (matrices + token embedding packed, the rest f32):\n");
    for (int f = 0; f < 4; ++f) {
      std::string parts;
      for (auto& [comp, r] : reps) {
        if ((comp == models::Component::Vision && !c.has_vision) ||
            (comp != models::Component::Vision && !c.has_text))
          continue;
        parts += (parts.empty() ? "" : ", ") + r.name + " " + human_bytes(r.memory[f]);
      }
      std::printf("  %-5s %12s  (%s)\n", kFormatNames[f], human_bytes(total_memory[f]).c_str(),
                  parts.c_str());
    }
    std::printf("\nwarnings:       %s\n", c.warnings.empty() ? "none" : "");
    for (const auto& w : c.warnings) std::printf("  - %s\n", w.c_str());
    std::printf("problems:       %s\n", problems.empty() ? "none" : "");
    for (const auto& p : problems) std::printf("  - %s\n", p.c_str());
  }
  std::fflush(stdout);
  // The report is printed first: it is what a user needs to fix the problems.
  if (!usable)
    throw engine::UsageError(weights + ": " + std::to_string(problems.size()) + " problem" +
                             (problems.size() == 1 ? "" : "s") +
                             " in the checkpoint (first: " + one_line(problems[0]) + ")");
  return kExitOk;
}

const CommandRegistrar kInspect(
    "inspect", "Describe a checkpoint: layout, dims, dtypes, parameters, memory per precision, problems",
    [](CLI::App* sub) -> std::function<int()> {
      auto weights = std::make_shared<std::string>();
      auto vision_weights = std::make_shared<std::string>();
      auto vision_config = std::make_shared<std::string>();
      auto as_json = std::make_shared<bool>(false);
      sub->add_option("--weights", *weights,
                      "Checkpoint directory (LLaVA original or llava-hf, or a CLIP dir)")
          ->required();
      sub->add_option("--vision-weights", *vision_weights,
                      "Directory of the CLIP vision tower (overrides the embedded tower / mm_vision_tower)");
      sub->add_option("--vision-config", *vision_config,
                      "Directory (or file) of a CLIPVisionConfig config.json giving the tower's dims");
      sub->add_flag("--json", *as_json, "Print one JSON object instead of text");
      return [=] { return run_inspect(*weights, *vision_weights, *vision_config, *as_json); };
    });

}  // namespace
}  // namespace recap::cli
