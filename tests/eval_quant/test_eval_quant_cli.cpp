// eval-quant, plan and caption's precision default on the tiny models (tests/data/tiny), run
// through the CLI the way a user runs them: exit codes, exact messages, the JSON reports.
#include <gtest/gtest.h>

#include <algorithm>

#include "../caption/cli_util.h"
#include "engine/memory_plan.h"
#include "io/fileutil.h"
#include "models/chat_template.h"
#include "models/config.h"
#include "models/tokenizer.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;
namespace engine = recap::engine;
namespace models = recap::models;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";

RunResult eval_quant(const std::vector<std::string>& extra, const std::string& weights = kWeights) {
  std::vector<std::string> a{RECAP_BIN,     "eval-quant", "--weights", weights,
                             "--tokenizer", kTokenizer,   "--threads", "1"};
  if (std::find(extra.begin(), extra.end(), "--max-new-tokens") == extra.end())
    a.insert(a.end(), {"--max-new-tokens", "8"});
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

json eval_json(const std::vector<std::string>& extra, const std::string& weights = kWeights) {
  std::vector<std::string> a = extra;
  a.push_back("--json");
  RunResult r = eval_quant(a, weights);
  EXPECT_EQ(r.rc, 0) << r.out;
  // stdout is the JSON object; nothing else is printed with --json.
  return json::parse(r.out);
}

std::string write_list(const std::string& dir, int n) {
  const std::vector<std::string> names{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                       "small_wide.png"};
  std::string text;
  for (int i = 0; i < n; ++i) text += json{{"url", kImages + "/" + names[i % 4]}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", text);
  return dir + "/l.jsonl";
}

RunResult caption(const std::string& out, const std::vector<std::string>& extra,
                  const std::string& weights = kWeights, const std::vector<std::string>& env = {}) {
  std::vector<std::string> a;
  if (!env.empty()) {
    a.push_back("env");
    a.insert(a.end(), env.begin(), env.end());
  }
  a.insert(a.end(), {RECAP_BIN, "caption", "--weights", weights, "--tokenizer", kTokenizer, "--out", out,
                     "--log-interval", "1000", "--max-new-tokens", "6", "--threads", "1"});
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

}  // namespace

TEST(EvalQuantCli, SamePrecisionIsExactlyIdentical) {
  const json r = eval_json({"--images", kImages, "--precision", "f32", "--reference", "f32"});
  for (const char* k : {"kl_mean", "kl_p99", "kl_max", "top1_agreement", "identical_captions", "length_ratio",
                        "n_images", "n_tokens"})
    EXPECT_TRUE(r.contains(k)) << k;
  EXPECT_EQ(r["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(r["kl_p99"].get<double>(), 0.0);
  EXPECT_EQ(r["kl_max"].get<double>(), 0.0);
  EXPECT_EQ(r["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(r["identical_captions"].get<double>(), 1.0);
  EXPECT_EQ(r["length_ratio"].get<double>(), 1.0);
  EXPECT_EQ(r["n_images"].get<int>(), 4);
  EXPECT_GE(r["n_tokens"].get<int>(), 4);
  EXPECT_LE(r["n_tokens"].get<int>(), 4 * 8);
  ASSERT_EQ(r["images"].size(), 4u);
  for (const auto& im : r["images"]) EXPECT_EQ(im["ref_caption"], im["quant_caption"]);
}

TEST(EvalQuantCli, Int8IsCloserThanInt4) {
  const json i8 = eval_json({"--images", kImages, "--precision", "int8", "--reference", "f32"});
  const json i4 = eval_json({"--images", kImages, "--precision", "int4", "--reference", "f32"});
  EXPECT_GT(i8["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(i8["kl_mean"].get<double>(), i4["kl_mean"].get<double>());
  EXPECT_LE(i8["kl_mean"].get<double>(), i8["kl_p99"].get<double>());
  EXPECT_LE(i8["kl_p99"].get<double>(), i8["kl_max"].get<double>());
  EXPECT_EQ(i8["n_images"], 4);
  for (const json* r : {&i8, &i4}) {
    EXPECT_GE((*r)["top1_agreement"].get<double>(), 0.0);
    EXPECT_LE((*r)["top1_agreement"].get<double>(), 1.0);
    EXPECT_GT((*r)["length_ratio"].get<double>(), 0.0);
  }
}

TEST(EvalQuantCli, ListInputAndBundledImageSet) {
  const std::string dir = make_temp_dir("evalq_list");
  const json l = eval_json({"--list", write_list(dir, 2), "--precision", "int8", "--reference", "f32"});
  EXPECT_EQ(l["n_images"], 2);
  // No --images/--list: the bundled examples/eval-images (a dozen images).
  const json d = eval_json({"--precision", "int8", "--reference", "f32", "--max-new-tokens", "2"});
  EXPECT_EQ(d["n_images"], 12);
  EXPECT_EQ(d["images"][0]["image"].get<std::string>().substr(
                d["images"][0]["image"].get<std::string>().size() - 16),
            "01_landscape.png");
}

TEST(EvalQuantCli, BadFlagsExitTwo) {
  RunResult r = eval_quant({"--images", kImages, "--precision", "int3"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out,
            "recap-engine eval-quant: error: --precision 'int3': expected one of f32, bf16, int8, int4\n");
  r = eval_quant({"--images", kImages, "--reference", "int8"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: --reference 'int8': expected one of f32, bf16\n");
  r = eval_quant({"--images", "/nonexistent/dir"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: /nonexistent/dir: not a directory of images\n");
  r = eval_quant({"--images", kImages, "--list", "x.txt"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: give --images DIR or --list FILE, not both\n");
  r = eval_quant({"--images", kImages, "--max-new-tokens", "0"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: --max-new-tokens must be at least 1\n");
  r = run_cmd({RECAP_BIN, "eval-quant", "--precision", "int8"});  // --weights missing
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: give exactly one of --weights DIR or --synthetic NAME\n");
  r = eval_quant({"--synthetic", "llava-llama3-8b"});  // both
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine eval-quant: error: give exactly one of --weights DIR or --synthetic NAME\n");
  // Refused before any weight is built: 16 GB of bf16 would be made for nothing.
  r = run_cmd({RECAP_BIN, "eval-quant", "--synthetic", "llava-llama3-8b"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(
      r.out,
      "recap-engine eval-quant: error: --synthetic needs --tokenizer FILE (the Llama-3 tokenizer.json)\n");
  r = run_cmd({RECAP_BIN, "eval-quant", "--synthetic", "llama-70b", "--tokenizer", kTokenizer});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(
      r.out,
      "recap-engine eval-quant: error: --synthetic 'llama-70b': unknown preset (known: llava-llama3-8b)\n");
}

// plan sizes the run caption would make: with no --max-batch both pick the batch from the
// memory available (tests/caption: CaptionCli.DefaultMaxBatchFromMemory gives 14 at 115 MiB for
// these settings, 16 with plenty), and every precision's row is sized for it.
TEST(PlanCli, DefaultMaxBatchIsTheOneCaptionPicks) {
  auto plan = [&](const std::string& mb) {
    return run_cmd({"env", "RECAP_MEMORY_AVAILABLE_MB=" + mb, RECAP_BIN, "plan", "--weights", kWeights,
                    "--tokenizer", kTokenizer, "--precision", "f32", "--max-new-tokens", "2000",
                    "--no-calibration", "--json"});
  };
  RunResult r = plan("115");
  ASSERT_EQ(r.rc, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["max_batch"], 14);
  EXPECT_EQ(j["max_batch_source"], "auto: the largest up to 16 whose f32 estimate fits, as caption picks it");
  EXPECT_LE(j["precisions"]["f32"]["total_bytes"].get<uint64_t>(), 115ull << 20);
  // One more sequence would not fit: the next batch's KV cache is what 115 MiB lacks.
  const models::ModelConfig c = models::load_model_config(kWeights);
  engine::RunShape s;
  s.prompt_positions = j["prompt_positions"].get<int64_t>();
  s.max_new_tokens = 2000;
  s.max_batch = 15;
  EXPECT_GT(engine::estimate_memory(c, recap::kernels::WeightFormat::F32, s).total(), 115ull << 20);
  r = plan("4096");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["max_batch"], 16);
  // Given, it is kept and said so.
  r = run_cmd({"env", "RECAP_MEMORY_AVAILABLE_MB=115", RECAP_BIN, "plan", "--weights", kWeights,
               "--tokenizer", kTokenizer, "--precision", "f32", "--max-new-tokens", "2000", "--max-batch",
               "3", "--no-calibration"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(", max batch 3 (--max-batch), KV f32"), std::string::npos) << r.out;
}

TEST(PlanCli, JsonShapeOnTinyModel) {
  RunResult r = run_cmd({RECAP_BIN, "plan", "--weights", kWeights, "--tokenizer", kTokenizer, "--threads",
                         "1", "--max-batch", "4", "--json"});
  ASSERT_EQ(r.rc, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["quantized_cache"], nullptr);
  EXPECT_EQ(j["max_batch"], 4);
  EXPECT_EQ(j["threads"], 1);
  const models::ModelConfig c = models::load_model_config(kWeights);
  const models::Tokenizer tok = models::Tokenizer::from_file(kTokenizer);
  const models::ChatTemplate tmpl = models::resolve_template("llava-llama3");
  models::PromptInputs pin;
  pin.prompt = tmpl.prompt;
  EXPECT_EQ(j["prompt_positions"], engine::prompt_positions(c, models::build_prompt_ids(tmpl, tok, pin)));
  for (const char* p : {"f32", "bf16", "int8", "int4"}) {
    const json& e = j["precisions"][p];
    for (const char* k :
         {"weights_bytes", "kv_cache_bytes", "buffers_bytes", "total_bytes", "fits", "cache_disk_bytes"})
      EXPECT_TRUE(e.contains(k)) << p << " " << k;
    EXPECT_EQ(e["total_bytes"].get<uint64_t>(), e["weights_bytes"].get<uint64_t>() +
                                                    e["kv_cache_bytes"].get<uint64_t>() +
                                                    e["buffers_bytes"].get<uint64_t>());
    EXPECT_EQ(e["weights_bytes"].get<uint64_t>(),
              engine::weight_memory_bytes(c, recap::kernels::parse_weight_format(p)));
  }
  EXPECT_EQ(j["choice"]["precision"], "int8");
  ASSERT_EQ(j["calibration"].size(), 1u);
  EXPECT_EQ(j["calibration"][0]["precision"], "int8");
  EXPECT_GT(j["calibration"][0]["images_per_hour"].get<double>(), 0.0);
  EXPECT_GT(j["calibration"][0]["cpu_share"].get<double>(), 0.0);

  r = run_cmd({RECAP_BIN, "plan", "--weights", kWeights, "--precision", "int3"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out,
            "recap-engine plan: error: --precision 'int3': expected auto, all, f32, bf16, int8 or int4\n");
}

TEST(CaptionPrecision, DefaultIsInt8OnAFloatCheckpointAndTheCacheOnACache) {
  const std::string dir = make_temp_dir("prec_auto");
  const std::string list = write_list(dir, 2);
  RunResult r = caption(dir + "/out", {"--list", list});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\nprecision int8 (auto: float checkpoint, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", int8 weights ("), std::string::npos) << r.out;
  EXPECT_EQ(json::parse(io::read_file(dir + "/out/00000_stats.json"))["precision"], "int8");

  // A quantized cache: its own precision, with no --precision.
  RunResult q =
      run_cmd({RECAP_BIN, "quantize", "--weights", kWeights, "--precision", "int4", "--out", dir + "/cache"});
  ASSERT_EQ(q.rc, 0) << q.out;
  r = caption(dir + "/out_cache", {"--list", list}, dir + "/cache");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\nprecision int4 (auto: quantized cache, "), std::string::npos) << r.out;
  EXPECT_EQ(json::parse(io::read_file(dir + "/out_cache/00000_stats.json"))["precision"], "int4");

  // Explicit precisions are taken as given; a bad one names the choices.
  r = caption(dir + "/out_f32", {"--list", list, "--precision", "f32"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\nprecision f32 (--precision f32, "), std::string::npos) << r.out;
  r = caption(dir + "/out_bad", {"--list", list, "--precision", "int3"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "caption: error: --precision 'int3': expected auto, f32, bf16, int8 or int4\n");
}

TEST(CaptionPrecision, TooLittleMemoryExitsTwoBeforeLoading) {
  const std::string dir = make_temp_dir("prec_mem");
  const std::string list = write_list(dir, 1);
  // The figures the message must carry, from the same estimate.
  const models::ModelConfig c = models::load_model_config(kWeights);
  const models::Tokenizer tok = models::Tokenizer::from_file(kTokenizer);
  const models::ChatTemplate tmpl = models::resolve_template("llava-llama3");
  models::PromptInputs pin;
  pin.prompt = tmpl.prompt;
  pin.fields = {{"original_caption", ""}, {"caption", ""}, {"key", ""}, {"url", ""}};
  engine::RunShape s;
  s.prompt_positions = engine::prompt_positions(c, models::build_prompt_ids(tmpl, tok, pin));
  s.max_new_tokens = 6;
  const engine::MemoryEstimate i8 = engine::estimate_memory(c, recap::kernels::WeightFormat::Int8, s);
  const engine::MemoryEstimate i4 = engine::estimate_memory(c, recap::kernels::WeightFormat::Int4, s);
  ASSERT_GT(i4.total(), 1u << 20);  // the tiny model's process allowance alone exceeds 1 MiB
  const std::string expected =
      "caption: error: not enough memory for precision int4 (auto: float checkpoint too large for int8 (" +
      engine::format_gib(i8.total()) + ")): needs " + engine::format_gib(i4.total()) + " (weights " +
      engine::format_gib(i4.weights) + ", KV cache " + engine::format_gib(i4.kv_cache) + ", buffers " +
      engine::format_gib(i4.buffers) +
      "), 1 MiB available (RECAP_MEMORY_AVAILABLE_MB); no precision fits (int4 needs " +
      engine::format_gib(i4.total()) + "; lower --max-batch or --kv-cache-mb, or free memory)\n";
  RunResult r = caption(dir + "/out", {"--list", list}, kWeights, {"RECAP_MEMORY_AVAILABLE_MB=1"});
  EXPECT_EQ(r.rc, 2);
  // The plan line comes first; nothing was loaded (no "model:" line) and no shard was started.
  const size_t err = r.out.find("caption: error: ");
  ASSERT_NE(err, std::string::npos) << r.out;
  EXPECT_EQ(r.out.substr(err), expected);
  EXPECT_EQ(r.out.find("model: "), std::string::npos) << r.out;
  EXPECT_FALSE(io::file_exists(dir + "/out/00000.tar"));

  r = caption(dir + "/out", {"--list", list}, kWeights, {"RECAP_MEMORY_AVAILABLE_MB=lots"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("caption: error: RECAP_MEMORY_AVAILABLE_MB='lots' is not a positive number of MiB\n"),
            std::string::npos)
      << r.out;
}

TEST(Checkpoint, PickleOnlyDirectoryNamesTheConversion) {
  const std::string dir = make_temp_dir("pickle_only");
  io::atomic_write(dir + "/config.json", io::read_file(kWeights + "/config.json"));
  io::atomic_write(dir + "/pytorch_model-00001-of-00002.bin", "not read");
  io::atomic_write(dir + "/pytorch_model-00002-of-00002.bin", "not read");
  io::atomic_write(dir + "/pytorch_model.bin.index.json", "{}");
  const std::string msg = dir +
                          ": only PyTorch pickle weights (pytorch_model-00001-of-00002.bin, "
                          "pytorch_model-00002-of-00002.bin) and no *.safetensors file; the engine reads "
                          "safetensors only: convert them once with the command in docs/REAL_MODEL.md "
                          "(\"Checkpoints with only .bin files\") and point --weights at the result";
  const std::string out = make_temp_dir("pickle_out");
  RunResult r = caption(out + "/o", {"--list", write_list(out, 1)}, dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("caption: error: " + msg + "\n"), std::string::npos) << r.out;
  r = run_cmd({RECAP_BIN, "inspect", "--weights", dir});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.out, "recap-engine inspect: error: " + msg + "\n");
}

TEST(CaptionPrecision, StartLinesNameTheTokenizer) {
  const std::string dir = make_temp_dir("tok_id");
  const std::string list = write_list(dir, 1);
  // The demo's small tokenizer is not a known one; its hash is printed all the same.
  RunResult r = caption(dir + "/out", {"--list", list});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\ntokenizer: unrecognised (sha256 "
                       "8502b1b233252d23b2550c29a77bf4d59adac824f007cd58db50df6a2c75d608)\n"),
            std::string::npos)
      << r.out;
  // The Llama-3 tokenizer is recognised (the tiny model cannot use its ids: only the start
  // lines matter here).
  std::vector<std::string> a{RECAP_BIN,
                             "caption",
                             "--weights",
                             kWeights,
                             "--tokenizer",
                             kData + "/llama3-tokenizer/tokenizer.json",
                             "--out",
                             dir + "/out_l3",
                             "--list",
                             list,
                             "--threads",
                             "1",
                             "--max-new-tokens",
                             "2"};
  r = run_cmd(a);
  // Named first, then refused before any weight is read: its ids exceed the tiny vocabulary.
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("has 128256 token ids but the model in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ntokenizer: Llama-3 (sha256 "
                       "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78)\n"),
            std::string::npos)
      << r.out;
}

// `ulimit -v` is a memory limit too (schedulers set it per task): the plan counts what it
// leaves of the address space, so an 8B run under it is refused up front instead of failing
// while mapping weights.
TEST(PlanCli, UlimitVBoundsTheMemoryAvailable) {
#if defined(__SANITIZE_ADDRESS__)
  // An ASan binary reserves a 16 TiB shadow at start, which any `ulimit -v` refuses before
  // main() runs; the release build (scripts/test.sh) runs this test.
  GTEST_SKIP() << "ulimit -v cannot start an AddressSanitizer binary";
#endif
  const std::string cmd = "ulimit -v 3000000; exec " + shell_quote(RECAP_BIN) + " plan --weights " +
                          shell_quote(kWeights) + " --no-calibration";
  RunResult r = run_cmd({"/bin/sh", "-c", cmd});
  ASSERT_EQ(r.rc, 0) << r.out;
  const size_t at = r.out.find("memory available: ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
  EXPECT_NE(line.find("(RLIMIT_AS (ulimit -v))"), std::string::npos) << line;
  // 3000000 KiB = 2.86 GiB, less what the process has mapped already.
  const double gib = std::stod(line.substr(std::string("memory available: ").size()));
  EXPECT_LT(gib, 2.87) << line;
  EXPECT_GT(gib, 1.0) << line;
}
