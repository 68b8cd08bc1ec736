// How much a quantized precision changes the captions of the user's own weights
// (recap-engine eval-quant).
//
// For each image, with the default caption prompt:
//   1. the reference model (bf16 or f32) greedily generates its caption r_1..r_T (T includes
//      the stop token when one ended it); the logits that chose each r_t are kept;
//   2. the quantized model (int8 or int4) is teacher-forced through the same prompt and r_1..r_T
//      one token per step (as the reference generated them), giving its logits at the same T
//      positions, and greedily generates its own caption (it shares the teacher-forced prefix
//      until its argmax first differs from r_t, then continues from a prefill of that prefix).
// Per position: KL(ref || quant) over the model's full vocabulary softmax (in double), and
// top-1 agreement (the argmax of both over the tokenizer's vocabulary, lowest id on ties).
// Reported: kl_mean, kl_p99 (nearest rank) and kl_max over all positions of all images,
// top1_agreement (fraction of positions), identical_captions (fraction of images whose quant
// greedy token ids equal the reference's), length_ratio (mean over images of quant tokens /
// ref tokens, stop token excluded), n_images, n_tokens (positions compared).
//
// The two models are never resident together: the reference runs over every image first and
// its logits are kept (n_tokens x vocab floats), then it is freed and the quantized model is
// loaded, so the peak is the larger model plus those logits. Both runs use the same step-by-
// step forward, so reference == quantized precision gives KL exactly 0 and agreement 1.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace recap::engine {

struct EvalQuantOptions {
  std::string weights_dir;
  // Instead of weights_dir: random weights of a preset's real shapes ("llava-llama3-8b",
  // engine/bench.h), the same values for reference and quantized model (a function of the
  // seed and tensor name), so the figures are the quantization error at the real shapes.
  // Needs tokenizer_path.
  std::string synthetic;
  uint64_t seed = 1;
  std::string vision_weights_dir;
  std::string vision_config_dir;
  std::string tokenizer_path;       // "" = WEIGHTS/tokenizer.json
  std::vector<std::string> images;  // image files, in report order
  std::string precision = "int8";   // int8 | int4 (f32/bf16 accepted: comparisons of float formats)
  std::string reference = "bf16";   // bf16 | f32
  int max_new_tokens = 64;
  int threads = 0;
};

struct EvalQuantError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Image files of a directory (.png .jpg .jpeg .webp, sorted by name) or of a list file (one
// path per line, relative to the list's directory; a JSON line's "url"). Throws
// EvalQuantError naming the path when it cannot be read or holds no image.
std::vector<std::string> eval_images_from_dir(const std::string& dir);
std::vector<std::string> eval_images_from_list(const std::string& list);

// Runs the evaluation; returns the report (keys in the header comment, plus "images": one
// object per image with both captions and its own figures). Throws EvalQuantError for
// unusable options/weights/images (exit 2), std::exception for failures while running.
// progress(line) receives human-readable progress.
nlohmann::ordered_json run_eval_quant(const EvalQuantOptions& opts,
                                      const std::function<void(const std::string&)>& progress = {});

}  // namespace recap::engine
