// recap-engine eval-quant: how much int8/int4 changes the captions of these weights, against
// a bf16/f32 reference (KL per token, top-1 agreement, identical captions, length ratio).
// All the work is in engine/eval_quant; this file maps flags. With neither --images nor
// --list it uses the bundled examples/eval-images/.
#include <cstdio>
#include <filesystem>

#include "engine/eval_quant.h"
#include "engine/signals.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

struct EvalQuantFlags {
  engine::EvalQuantOptions o;
  std::string images_dir, list;
  bool as_json = false;
};

// The bundled set: beside the sources the binary was built from, else ./examples/eval-images.
std::string default_images_dir() {
  std::error_code ec;
  if (std::filesystem::is_directory("examples/eval-images", ec)) return "examples/eval-images";
  return RECAP_EVAL_IMAGES_DIR;
}

int run(EvalQuantFlags& f) {
  // A signal exits 75 at once: eval-quant writes nothing but its report, printed at the end.
  engine::install_stop_handlers();
  if (!f.images_dir.empty() && !f.list.empty())
    throw engine::EvalQuantError("give --images DIR or --list FILE, not both");
  if (!f.list.empty())
    f.o.images = engine::eval_images_from_list(f.list);
  else
    f.o.images = engine::eval_images_from_dir(f.images_dir.empty() ? default_images_dir() : f.images_dir);
  const bool as_json = f.as_json;
  const auto report = engine::run_eval_quant(f.o, [as_json](const std::string& line) {
    if (!as_json) std::fprintf(stderr, "%s\n", line.c_str());
  });
  if (as_json) {
    write_report(report.dump(2) + "\n");
    return kExitOk;
  }
  for (const auto& im : report["images"])
    std::printf("%s\n  ref:   %s\n  quant: %s\n  kl_mean %.4g, top-1 %.3f%s\n",
                im["image"].get<std::string>().c_str(), im["ref_caption"].get<std::string>().c_str(),
                im["quant_caption"].get<std::string>().c_str(), im["kl_mean"].get<double>(),
                im["top1_agreement"].get<double>(), im["identical"].get<bool>() ? ", identical" : "");
  std::printf(
      "\n%s vs %s on %lld images, %lld tokens: KL mean %.4g, p99 %.4g, max %.4g; top-1 agreement %.4f; "
      "identical captions %.3f; length ratio %.3f\n",
      report["precision"].get<std::string>().c_str(), report["reference"].get<std::string>().c_str(),
      report["n_images"].get<long long>(), report["n_tokens"].get<long long>(),
      report["kl_mean"].get<double>(), report["kl_p99"].get<double>(), report["kl_max"].get<double>(),
      report["top1_agreement"].get<double>(), report["identical_captions"].get<double>(),
      report["length_ratio"].get<double>());
  return kExitOk;
}

const CommandRegistrar kEvalQuant(
    "eval-quant", "Measure how much int8/int4 changes captions against a bf16/f32 reference (KL, agreement)",
    [](CLI::App* sub) -> std::function<int()> {
      auto f = std::make_shared<EvalQuantFlags>();
      auto& o = f->o;
      sub->add_option("--weights", o.weights_dir, "float LLaVA checkpoint directory");
      sub->add_option("--synthetic", o.synthetic,
                      "instead of --weights: random weights of a preset's real shapes (llava-llama3-8b; "
                      "needs --tokenizer)");
      sub->add_option("--seed", o.seed, "seed of --synthetic weights")->capture_default_str();
      sub->add_option("--vision-weights", o.vision_weights_dir,
                      "CLIP vision tower directory (if not embedded)");
      sub->add_option("--vision-config", o.vision_config_dir,
                      "CLIPVisionConfig directory overriding the tower dims");
      sub->add_option("--tokenizer", o.tokenizer_path, "tokenizer.json (default: WEIGHTS/tokenizer.json)");
      sub->add_option("--images", f->images_dir,
                      "directory of images (default: the bundled examples/eval-images)");
      sub->add_option("--list", f->list, "file with one image path per line (or JSON lines with \"url\")");
      sub->add_option("--precision", o.precision, "quantized precision under test: int8 | int4")
          ->capture_default_str();
      sub->add_option("--reference", o.reference, "reference precision: bf16 | f32")->capture_default_str();
      sub->add_option("--max-new-tokens", o.max_new_tokens, "reference caption length limit")
          ->capture_default_str();
      sub->add_option("--threads", o.threads, "compute threads (default: CPUs allowed to this process)");
      sub->add_flag("--json", f->as_json, "print the report as one JSON object");
      return [f] { return run(*f); };
    });

}  // namespace
}  // namespace recap::cli
