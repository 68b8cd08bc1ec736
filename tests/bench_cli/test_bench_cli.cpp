// `recap-engine bench` and `recap-engine quantize` on the tiny model: the report's structure
// and the quantized cache's equivalence (a trace from the cache is bit-identical to a trace
// of the original checkpoint at the same precision). No timed assertions.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"

namespace {

namespace fs = std::filesystem;
const std::string kTiny = std::string(RECAP_TEST_DATA) + "/tiny";
const std::string kModel = kTiny + "/llava_orig_with_vt_fp32";
const std::string kBin = RECAP_BIN;
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImageIds = "1,106,818,574,937,-200,602,948,74,672,642,119,426,988,817,509";

struct CmdResult {
  int status = -1;
  std::string output;
};

CmdResult run(const std::string& cmd, bool with_stderr = true) {
  CmdResult r;
  FILE* p = popen((cmd + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("recap_benchcli_" + std::to_string(getpid()) + "_" + name)).string();
}

TEST(BenchCli, JsonReportOnTinyModel) {
  CmdResult r =
      run(kBin + " bench --weights " + kModel +
              " --precision int8 --quick --json --max-batch 3 --new-tokens 5 --prompt-tokens 6 --images 1"
              " --caption-images 0",
          /*with_stderr=*/false);
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["precision"], "int8");
  EXPECT_EQ(j["model"], kModel);
  const auto& d = j["detail"];
  const int64_t P = j["shapes"]["image_tokens"].get<int64_t>();
  EXPECT_GT(P, 0);
  EXPECT_EQ(d["prefill_tokens"].get<int64_t>(), P + 6);
  EXPECT_EQ(d["decode_batch"].get<int>(), 3);
  EXPECT_EQ(d["new_tokens"].get<int>(), 5);
  EXPECT_EQ(d["decode_steps_timed"].get<int>(), 2);
  for (const char* k :
       {"preprocess_ms", "vision_ms_per_image", "prefill_tok_s", "decode_b1_tok_s", "decode_bB_tok_s",
        "images_per_hour_batchB", "images_per_hour_batch1", "peak_rss_bytes"})
    EXPECT_GT(d[k].get<double>(), 0.0) << k;
  EXPECT_GT(j["load_s"].get<double>(), 0.0);
  EXPECT_GT(j["weight_bytes"].get<double>(), 0.0);
  EXPECT_GT(j["limits"]["read_bandwidth_gbs"].get<double>(), 0.0);
  // images/hour is the stated formula of the measured parts.
  const double sec = d["preprocess_ms"].get<double>() / 1000 + d["vision_ms_per_image"].get<double>() / 1000 +
                     static_cast<double>(P + 6) / d["prefill_tok_s"].get<double>() +
                     5.0 / d["decode_bB_tok_s"].get<double>();
  EXPECT_NEAR(d["images_per_hour_batchB"].get<double>(), 3600 / sec, 1e-6 * 3600 / sec);
  bool has_decode_fraction = false;
  for (const auto& row : j["results"])
    if (row["test"].get<std::string>().rfind("decode tg batch 1", 0) == 0) {
      EXPECT_EQ(row["bound"], "read bandwidth");
      EXPECT_GT(row["frac_of_limit"].get<double>(), 0.0);
      has_decode_fraction = true;
    }
  EXPECT_TRUE(has_decode_fraction);
  // The batched tower run (default batch 8) and the batch-B decode's binding bound.
  EXPECT_EQ(d["vision_batch"].get<int>(), 8);
  EXPECT_GT(d["vision_batch_ms_per_image"].get<double>(), 0.0);
  bool has_tower_batch_row = false;
  for (const auto& row : j["results"])
    if (row["test"] == "vision tower + projector (batch 8)") {
      EXPECT_EQ(row["value"].get<double>(), d["vision_batch_ms_per_image"].get<double>());
      EXPECT_EQ(row["frac_of_limit"].get<double>(), d["vision_batch_frac_of_peak"].get<double>());
      has_tower_batch_row = true;
    } else if (row["test"] == "decode tg batch 3 (aggregate)") {
      // The fraction of the bound that binds: the larger of the bandwidth and compute fractions.
      EXPECT_EQ(row["frac_of_limit"].get<double>(), d["decode_bB_frac_of_bound"].get<double>());
      EXPECT_EQ(d["decode_bB_frac_of_bound"].get<double>(),
                std::max(d["decode_bB_frac_of_bandwidth"].get<double>(),
                         d["decode_bB_frac_of_compute"].get<double>()));
      EXPECT_EQ(row["bound"], d["decode_bB_bound"]);
    }
  EXPECT_TRUE(has_tower_batch_row);
  // The limits used are the larger of the probes at the start and after the last phase.
  for (const char* k : {"read_bandwidth_gbs", "int8_dot_gops", "f32_fma_gflops"})
    EXPECT_EQ(j["limits"][k].get<double>(),
              std::max(d["limits_at_start"][k].get<double>(), d["limits_at_end"][k].get<double>()))
        << k;
  // --tower-batch 1 skips the batched run.
  r = run(kBin + " bench --weights " + kModel +
              " --precision int8 --quick --json --max-batch 2 --new-tokens 2 --prompt-tokens 3 --images 1"
              " --caption-images 0 --tower-batch 1",
          false);
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j1 = nlohmann::json::parse(r.output);
  EXPECT_EQ(j1["detail"]["vision_batch"].get<int>(), 0);
  for (const auto& row : j1["results"])
    EXPECT_EQ(row["test"].get<std::string>().find("(batch 8)"), std::string::npos) << row.dump();
}

TEST(BenchCli, MarkdownTable) {
  CmdResult r = run(kBin + " bench --weights " + kModel + " --tokenizer " + kTokenizer +
                        " --precision f32 --quick --max-batch 2 --new-tokens 3 --caption-images 2",
                    false);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s :
       {"| test | value |", "| prefill pp", "| decode tg batch 1 |", "| decode tg batch 2 (aggregate) |",
        "images/hour", "peak RSS", "| caption run, 2 images, 3 new tokens, max batch 2 |",
        "| limit: the same work at the machine's peaks |", "caption run: 2 images in "})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
}

TEST(BenchCli, UsageErrors) {
  EXPECT_EQ(run(kBin + " bench").status, 2);
  CmdResult r = run(kBin + " bench --synthetic nope");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown --synthetic preset 'nope'"), std::string::npos) << r.output;
  r = run(kBin + " bench --weights " + kModel + " --precision int3");
  EXPECT_EQ(r.status, 2) << r.output;
  r = run(kBin + " bench --weights " + kModel + " --max-batch 0");
  EXPECT_EQ(r.status, 2) << r.output;
  r = run(kBin + " bench --weights " + kModel + " --tower-batch -1");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--tower-batch must be >= 0"), std::string::npos) << r.output;
  r = run(kBin + " bench --weights /nonexistent/dir");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/dir"), std::string::npos) << r.output;
}

// The caption phase runs the real caption job on the loaded model: every image captioned with
// exactly --new-tokens tokens (--ignore-eos), beside the limit of the same work at the peaks.
TEST(BenchCli, CaptionPhaseOnTinyModel) {
  CmdResult r = run(kBin + " bench --weights " + kModel + " --tokenizer " + kTokenizer +
                        " --precision int8 --quick --json --max-batch 2 --new-tokens 7 --caption-images 3",
                    /*with_stderr=*/false);
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  const auto& d = j["detail"];
  ASSERT_TRUE(d.contains("caption_run")) << d.dump(2);
  const auto& c = d["caption_run"];
  EXPECT_EQ(c["images"].get<int64_t>(), 3);
  EXPECT_EQ(c["new_tokens"].get<int64_t>(), 3 * 7);
  EXPECT_EQ(c["max_batch"].get<int>(), 2);
  for (const char* k : {"images_per_hour", "frac_of_limit", "seconds"})
    EXPECT_GT(c[k].get<double>(), 0.0) << k;
  EXPECT_GT(d["limit_images_per_hour"].get<double>(), 0.0);
  // frac_of_limit is what it says: the measured rate over the limit.
  EXPECT_DOUBLE_EQ(c["frac_of_limit"].get<double>(),
                   c["images_per_hour"].get<double>() / d["limit_images_per_hour"].get<double>());
  // The limit is the sum of its stated parts.
  const auto& lim = d["limit"];
  EXPECT_NEAR(lim["seconds_per_image"].get<double>(),
              lim["prefill_s"].get<double>() + lim["tower_s"].get<double>() + lim["decode_s"].get<double>(),
              1e-9 * lim["seconds_per_image"].get<double>());
  EXPECT_NEAR(d["limit_images_per_hour"].get<double>(), 3600 / lim["seconds_per_image"].get<double>(),
              1e-9 * d["limit_images_per_hour"].get<double>());
  // The prompt went through the template: the image's positions plus its text.
  EXPECT_GT(c["prompt_positions"].get<double>(),
            static_cast<double>(j["shapes"]["image_tokens"].get<int64_t>()));
}

TEST(BenchCli, CaptionPhaseNeedsATokenizer) {
  // The tiny checkpoint ships no tokenizer.json: refused before anything is measured.
  CmdResult r = run(kBin + " bench --weights " + kModel + " --quick --caption-images 2");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("no tokenizer.json in the weights directory " + kModel), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--caption-images 0 skips that phase"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[bench] measuring"), std::string::npos) << r.output;
  r = run(kBin + " bench --synthetic llava-llama3-8b --quick");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--synthetic needs --tokenizer"), std::string::npos) << r.output;
}

// Every tensor of a's trace equals b's, byte for byte.
void expect_identical(const std::string& a, const std::string& b) {
  auto fa = recap::io::SafetensorsFile::open(a);
  auto fb = recap::io::SafetensorsFile::open(b);
  ASSERT_EQ(fa->tensors().size(), fb->tensors().size());
  int compared = 0;
  for (const auto& [name, ta] : fa->tensors()) {
    auto it = fb->tensors().find(name);
    ASSERT_NE(it, fb->tensors().end()) << name;
    const auto& tb = it->second;
    ASSERT_EQ(ta.shape, tb.shape) << name;
    ASSERT_EQ(ta.nbytes, tb.nbytes) << name;
    EXPECT_EQ(std::memcmp(ta.data, tb.data, ta.nbytes), 0) << name << " differs";
    compared++;
  }
  for (const char* k : {"llm.logits", "gen.ids", "projector.out", "vision.selected"})
    EXPECT_TRUE(fa->tensors().count(k)) << k;
  EXPECT_GE(compared, 8);
}

void quantize_and_compare(const std::string& precision) {
  const std::string cache = tmp("cache_" + precision);
  CmdResult q = run(kBin + " quantize --weights " + kModel + " --precision " + precision + " --out " + cache);
  ASSERT_EQ(q.status, 0) << q.output;
  EXPECT_TRUE(fs::exists(cache + "/recap-packed.safetensors"));
  EXPECT_TRUE(fs::exists(cache + "/config.json"));
  EXPECT_TRUE(fs::exists(cache + "/generation_config.json"));
  // Every packed matrix sits at a 64-byte aligned file offset.
  {
    auto f = recap::io::SafetensorsFile::open(cache + "/recap-packed.safetensors");
    EXPECT_EQ(f->metadata().at("recap.format"), "recap-packed-v1");
    EXPECT_EQ(f->metadata().at("recap.precision"), precision);
    for (const auto& [name, t] : f->tensors()) {
      if (t.dtype == recap::io::DType::U8) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << name;
      }
    }
  }
  // inspect understands the cache: usable, its precision, and the logical parameter counts of
  // the original checkpoint (the cache drops only the vision layers past the selected one).
  {
    CmdResult ic = run(kBin + " inspect --json --weights " + cache, false);
    ASSERT_EQ(ic.status, 0) << ic.output;
    CmdResult io = run(kBin + " inspect --json --weights " + kModel, false);
    ASSERT_EQ(io.status, 0) << io.output;
    auto jc = nlohmann::json::parse(ic.output);
    auto jo = nlohmann::json::parse(io.output);
    EXPECT_TRUE(jc["usable"].get<bool>());
    EXPECT_TRUE(jc["problems"].empty()) << jc["problems"].dump();
    EXPECT_EQ(jc["quantized_cache"]["precision"], precision);
    EXPECT_GT(jc["quantized_cache"]["matrices"].get<int64_t>(), 0);
    EXPECT_EQ(jc["layout"], jo["layout"]);
    EXPECT_EQ(jc["components"]["text"]["params"], jo["components"]["text"]["params"]);
    EXPECT_EQ(jc["components"]["projector"]["params"], jo["components"]["projector"]["params"]);
    EXPECT_EQ(jc["components"]["text"]["dims"], jo["components"]["text"]["dims"]);
    EXPECT_LE(jc["components"]["vision"]["params"].get<int64_t>(),
              jo["components"]["vision"]["params"].get<int64_t>());
    EXPECT_GT(jc["components"]["vision"]["params"].get<int64_t>(), 0);
    EXPECT_EQ(jc["memory_bytes"], jo["memory_bytes"]);
  }
  const std::string args = " --image " + kTiny + "/images/wide_gradient.png --image " + kTiny +
                           "/images/gray_square.jpg --input-ids=" + kImageIds +
                           " --no-stop --max-new-tokens 6" + " --precision " + precision;
  const std::string out_orig = tmp("orig_" + precision + ".safetensors");
  const std::string out_cache = tmp("cache_" + precision + ".safetensors");
  CmdResult a = run(kBin + " trace --weights " + kModel + args + " --out " + out_orig);
  ASSERT_EQ(a.status, 0) << a.output;
  CmdResult b = run(kBin + " trace --weights " + cache + args + " --out " + out_cache);
  ASSERT_EQ(b.status, 0) << b.output;
  expect_identical(out_orig, out_cache);

  // The cache holds one precision; asking for another is a clear error.
  CmdResult c = run(kBin + " trace --weights " + cache + " --input-ids=1,2,3 --precision f32 --out " +
                    tmp("bad.safetensors"));
  EXPECT_EQ(c.status, 2) << c.output;
  EXPECT_NE(c.output.find("run with --precision " + precision), std::string::npos) << c.output;
  // Quantizing a cache again is refused.
  CmdResult d = run(kBin + " quantize --weights " + cache + " --precision int4 --out " + tmp("again"));
  EXPECT_EQ(d.status, 2);
  EXPECT_NE(d.output.find("already a quantized cache"), std::string::npos) << d.output;
  // bench reads the cache too.
  CmdResult e = run(kBin + " bench --weights " + cache + " --precision " + precision +
                        " --quick --json --max-batch 2 --new-tokens 2 --caption-images 0",
                    false);
  EXPECT_EQ(e.status, 0) << e.output;

  fs::remove_all(cache);
  fs::remove(out_orig);
  fs::remove(out_cache);
}

TEST(QuantizeCli, Int8CacheTracesIdenticallyToOriginal) {
  quantize_and_compare("int8");
}
TEST(QuantizeCli, Int4CacheTracesIdenticallyToOriginal) {
  quantize_and_compare("int4");
}

TEST(QuantizeCli, TruncatedCacheIsAClearError) {
  const std::string cache = tmp("cache_trunc");
  ASSERT_EQ(run(kBin + " quantize --weights " + kModel + " --precision int8 --out " + cache).status, 0);
  const std::string f = cache + "/recap-packed.safetensors";
  fs::resize_file(f, fs::file_size(f) / 2);
  CmdResult r = run(kBin + " trace --weights " + cache + " --input-ids=1,2,3 --precision int8 --out " +
                    tmp("t.safetensors"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("recap-packed.safetensors"), std::string::npos) << r.output;
  fs::remove_all(cache);
}

TEST(QuantizeCli, UsageErrors) {
  EXPECT_EQ(run(kBin + " quantize --weights " + kModel + " --precision int4").status, 2);  // no --out
  CmdResult r = run(kBin + " quantize --precision int4 --out " + tmp("x"));
  EXPECT_EQ(r.status, 2) << r.output;
  r = run(kBin + " quantize --weights " + kModel + " --precision int5 --out " + tmp("x"));
  EXPECT_EQ(r.status, 2) << r.output;
}

}  // namespace
