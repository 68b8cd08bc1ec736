// `recap-engine inspect` end to end on every tiny layout, a sharded copy, --json, and the
// exit code 2 + one-line reason for unusable directories.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "config_test_util.h"

namespace {

using namespace recap::testutil;

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

RunResult run_inspect(const std::string& args) {
  TempDir tmp;
  const std::string out = tmp.path() + "/out", err = tmp.path() + "/err";
  const std::string cmd = quote(RECAP_BIN) + " inspect " + args + " >" + quote(out) + " 2>" + quote(err);
  int status = std::system(cmd.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

struct LayoutCase {
  const char* dir;
  const char* layout;
  const char* dtype;
  bool has_text;
};

class InspectLayout : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(InspectLayout, TextReport) {
  const LayoutCase& c = GetParam();
  RunResult r = run_inspect("--weights " + quote(tiny(c.dir)));
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find(std::string("layout:         ") + c.layout), std::string::npos) << r.out;
  // The family seam (models/family.h): a bare CLIP tower has no tokenizer and no template.
  EXPECT_NE(
      r.out.find(c.has_text
                     ? "family:         llava-llama3 (tokenizer llama3-bpe, default template llava-llama3)\n"
                     : "family:         clip-vision (tokenizer none, default template none)\n"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(std::string(c.dtype) + " x 37 tensors"), std::string::npos) << r.out;  // vision tower
  EXPECT_NE(r.out.find("hidden 64, intermediate 256, layers 2"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("projector:") != std::string::npos, c.has_text) << r.out;
  EXPECT_EQ(r.out.find("text:") != std::string::npos, c.has_text) << r.out;
  for (const char* p : {"f32 ", "bf16 ", "int8 ", "int4 "})
    EXPECT_NE(r.out.find(std::string("  ") + p), std::string::npos);
  EXPECT_NE(r.out.find("problems:       none"), std::string::npos) << r.out;
}

TEST_P(InspectLayout, JsonReport) {
  const LayoutCase& c = GetParam();
  RunResult r = run_inspect("--weights " + quote(tiny(c.dir)) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["family"]["name"], c.has_text ? "llava-llama3" : "clip-vision");
  EXPECT_EQ(j["family"]["tokenizer"], c.has_text ? "llama3-bpe" : "none");
  EXPECT_EQ(j["family"]["default_template"], c.has_text ? "llava-llama3" : "");
  json meta = read_json(tiny("golden_meta.json"));
  const json& sizes = meta["sizes"];
  EXPECT_EQ(j["layout"], c.layout);
  EXPECT_EQ(j["has_text"], c.has_text);
  EXPECT_EQ(j["usable"], true);
  EXPECT_TRUE(j["problems"].empty());
  const json& v = j["components"]["vision"];
  EXPECT_EQ(v["dims"]["hidden"], sizes["v_hidden"]);
  EXPECT_EQ(v["dims"]["layers"], sizes["v_layers"]);
  EXPECT_EQ(v["dims"]["heads"], sizes["v_heads"]);
  EXPECT_EQ(v["dims"]["intermediate"], sizes["v_ffn"]);
  EXPECT_EQ(v["dims"]["image_size"], sizes["image_size"]);
  EXPECT_EQ(v["dtypes"][c.dtype], 37);
  int64_t params = v["params"];
  if (c.has_text) {
    const json& t = j["components"]["text"];
    EXPECT_EQ(t["dims"]["hidden"], sizes["t_hidden"]);
    EXPECT_EQ(t["dims"]["layers"], sizes["t_layers"]);
    EXPECT_EQ(t["dims"]["kv_heads"], sizes["t_kv_heads"]);
    EXPECT_EQ(t["dims"]["vocab"], sizes["vocab"]);
    EXPECT_EQ(j["components"]["projector"]["dims"]["in"], sizes["v_hidden"]);
    params += t["params"].get<int64_t>() + j["components"]["projector"]["params"].get<int64_t>();
    // Every parameter of the tiny model except post_layernorm (2 x v_hidden) is used.
    EXPECT_EQ(params + 2 * sizes["v_hidden"].get<int64_t>(), meta["n_params"].get<int64_t>());
  }
  EXPECT_EQ(j["params_total"], params);
  // Memory estimate: int4 < int8 < bf16 < f32, and bytes on disk > 0.
  const json& m = j["memory_bytes"];
  EXPECT_LT(m["int4"].get<int64_t>(), m["int8"].get<int64_t>());
  EXPECT_LT(m["int8"].get<int64_t>(), m["bf16"].get<int64_t>());
  EXPECT_LT(m["bf16"].get<int64_t>(), m["f32"].get<int64_t>());
  EXPECT_GT(j["bytes_on_disk"].get<int64_t>(), 0);
}

INSTANTIATE_TEST_SUITE_P(Tiny, InspectLayout,
                         ::testing::Values(LayoutCase{"llava_orig_fp32", "llava-orig", "F32", true},
                                           LayoutCase{"llava_orig_bf16", "llava-orig", "BF16", true},
                                           LayoutCase{"llava_orig_fp16", "llava-orig", "F16", true},
                                           LayoutCase{"llava_orig_with_vt_fp32", "llava-orig", "F32", true},
                                           LayoutCase{"llava_hf_fp32", "llava-hf", "F32", true},
                                           LayoutCase{"llava_hf_bf16", "llava-hf", "BF16", true},
                                           LayoutCase{"llava_hf_fp16", "llava-hf", "F16", true},
                                           LayoutCase{"clip_vision_fp32", "clip-vision", "F32", false},
                                           LayoutCase{"clip_vision_bf16", "clip-vision", "BF16", false},
                                           LayoutCase{"clip_vision_fp16", "clip-vision", "F16", false},
                                           LayoutCase{"clip_full_fp32", "clip-full", "F32", false}),
                         [](const ::testing::TestParamInfo<LayoutCase>& i) {
                           return std::string(i.param.dir);
                         });

TEST(Inspect, ShardedCopy) {
  TempDir tmp;
  const std::string dir = make_sharded_copy(tmp, "llava_orig_with_vt_fp32", "sharded");
  RunResult r = run_inspect("--weights " + quote(dir) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["layout"], "llava-orig");
  EXPECT_EQ(j["files"].size(), 2u);
  RunResult single = run_inspect("--weights " + quote(tiny("llava_orig_with_vt_fp32")) + " --json");
  json s = json::parse(single.out);
  EXPECT_EQ(j["params_total"], s["params_total"]);
  EXPECT_EQ(j["memory_bytes"], s["memory_bytes"]);
  EXPECT_EQ(j["components"], s["components"]);
}

TEST(Inspect, HubIdTowerWithVisionWeightsAndConfig) {
  TempDir tmp;
  const std::string dir = copy_with_config(
      tmp, "llava_orig_fp32", [](json& c) { c["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"; });
  RunResult bad = run_inspect("--weights " + quote(dir));
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--vision-weights"), std::string::npos) << bad.err;
  RunResult r =
      run_inspect("--weights " + quote(dir) + " --vision-weights " + quote(tiny("clip_vision_bf16")) +
                  " --vision-config " + quote(tiny("clip_vision_fp32")) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["components"]["vision"]["dtypes"]["BF16"], 37);
  EXPECT_EQ(j["components"]["text"]["dtypes"]["F32"], 21);
  EXPECT_NE(j["vision_tower"]["config_source"].get<std::string>().find("--vision-config"), std::string::npos);
}

TEST(Inspect, RealShapedCheckpoint) {
  // The real checkpoint's names, shapes and dtypes (sparse files): SPEC 1.1's parameter and
  // byte counts must come out.
  TempDir tmp;
  const std::string dir = make_real_shaped_checkpoint(tmp, "real");
  RunResult r = run_inspect("--weights " + quote(dir) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["components"]["text"]["params"], 8030261248LL);     // Llama-3-8B
  EXPECT_EQ(j["components"]["projector"]["params"], 20979712LL);  // 1024->4096->4096
  EXPECT_EQ(j["components"]["vision"]["params"], 303505408LL);    // CLIP-L/336 without post_layernorm
  EXPECT_EQ(j["components"]["vision"]["dtypes"]["F32"], 389);
  EXPECT_EQ(j["components"]["text"]["dtypes"]["BF16"], 291);
  EXPECT_EQ(j["ignored_tensors"]["count"], 3);  // position_ids (I64) + post_layernorm w/b
  EXPECT_EQ(j["files"].size(), 4u);
  // 16-bit LLM + projector, f32 tower = 17.32 GB (SPEC 1.1), plus headers and position_ids.
  const int64_t data = (8030261248LL + 20979712LL) * 2 + (303505408LL + 2048) * 4 + 577 * 8;
  EXPECT_GE(j["bytes_on_disk"].get<int64_t>(), data);
  EXPECT_LT(j["bytes_on_disk"].get<int64_t>(), data + 200000);
  // Packed weights: bf16 ~ 2 bytes/param of the big matrices; int4 well under a third of it.
  const int64_t bf16 = j["memory_bytes"]["bf16"], int4 = j["memory_bytes"]["int4"],
                f32 = j["memory_bytes"]["f32"];
  EXPECT_GT(bf16, 2 * 8'300'000'000LL);
  EXPECT_LT(bf16, 2 * 8'400'000'000LL);
  EXPECT_GT(f32, 4 * 8'300'000'000LL);
  EXPECT_LT(int4, bf16 / 3);
  RunResult text = run_inspect("--weights " + quote(dir));
  EXPECT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("built-in preset openai/clip-vit-large-patch14-336"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("BF16 x 291 tensors"), std::string::npos) << text.out;
}

void expect_unusable(const RunResult& r, const std::string& must_contain) {
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.rfind("recap-engine inspect: error: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << r.err;
}

TEST(Inspect, UnusableDirectories) {
  TempDir tmp;
  expect_unusable(run_inspect("--weights /nonexistent/recap-model"), "/nonexistent/recap-model");
  const std::string empty = tmp.sub("empty");
  expect_unusable(run_inspect("--weights " + quote(empty)), empty + "/config.json");
  const std::string bad =
      copy_with_config(tmp, "llava_orig_fp32", [](json& c) { c["mm_projector_type"] = "linear"; });
  expect_unusable(run_inspect("--weights " + quote(bad)), "mm_projector_type = \"linear\"");
  expect_unusable(run_inspect("--weights " + quote(bad) + " --json"), "mm_projector_type");
}

TEST(Inspect, MissingTensorIsReportedAndUnusable) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_hf_fp32", [](json&) {});
  edit_tensors(dir, [](std::vector<TensorCopy>& ts) {
    std::erase_if(ts, [](const TensorCopy& t) { return t.name == "language_model.model.norm.weight"; });
  });
  RunResult r = run_inspect("--weights " + quote(dir));
  expect_unusable(r, "1 problem");
  EXPECT_NE(r.out.find("missing tensor 'language_model.model.norm.weight'"), std::string::npos) << r.out;
  RunResult rj = run_inspect("--weights " + quote(dir) + " --json");
  EXPECT_EQ(rj.code, 2);
  json j = json::parse(rj.out);
  EXPECT_EQ(j["usable"], false);
  ASSERT_EQ(j["problems"].size(), 1u);
}

TEST(Inspect, MissingWeightsOptionIsAUsageError) {
  RunResult r = run_inspect("");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--weights"), std::string::npos) << r.err;
}

}  // namespace
