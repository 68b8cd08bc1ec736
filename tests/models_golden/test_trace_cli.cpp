// `recap-engine trace` end to end on the tiny models, checked by tests/tools/compare_golden.py
// against tests/data/tiny/golden.safetensors (needs python3 with numpy; setup installs it).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "golden_util.h"
#include "io/safetensors.h"

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kTiny = kData + "/tiny";
const std::string kGolden = kTiny + "/golden.safetensors";
const std::string kImageIds = "1,106,818,574,937,-200,602,948,74,672,642,119,426,988,817,509";
const std::string kTextIds = "1,795,298,917,400,657,35,862,324,853,343,328";

struct CmdResult {
  int status = -1;
  std::string output;  // stdout + stderr
};

CmdResult run(const std::string& cmd) {
  CmdResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Debian's python3 has numpy; a pyenv/venv python3 earlier on PATH may not.
std::string python() {
  for (const char* py : {"/usr/bin/python3", "python3"})
    if (run(std::string(py) + " -c 'import numpy'").status == 0) return py;
  return "";
}

std::string images() {
  std::string s;
  for (const char* f : {"wide_gradient.png", "tall_alpha.png", "gray_square.jpg", "small_wide.png"})
    s += " --image " + kTiny + "/images/" + f;
  return s;
}

std::string out_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("recap_trace_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// Runs compare_golden.py; expects exit 0 and returns its report.
std::string compare(const std::string& out, int min_keys) {
  const std::string py = python();
  EXPECT_FALSE(py.empty()) << "python3 with numpy is needed (scripts/setup.sh installs python3-numpy)";
  CmdResult c = run(py + " " + RECAP_SOURCE_DIR + "/tests/tools/compare_golden.py " + kGolden + " " + out);
  EXPECT_EQ(c.status, 0) << c.output;
  EXPECT_NE(c.output.find(" 0 failed"), std::string::npos) << c.output;
  // Make sure the comparison covered what we think it did.
  int compared = -1;
  const size_t at = c.output.find("compared ");
  if (at != std::string::npos) compared = std::stoi(c.output.substr(at + 9));
  EXPECT_GE(compared, min_keys) << c.output;
  return c.output;
}

TEST(TraceCli, FourImagesAndImagePromptMatchGolden) {
  const std::string out = out_path("image.safetensors");
  CmdResult r = run(std::string(RECAP_BIN) + " trace --weights " + kTiny + "/llava_orig_fp32" + images() +
                    " --input-ids=" + kImageIds + " --no-stop --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = compare(out, 27);
  for (const char* key : {"image.3.resized_u8", "vision.selected", "projector.out", "llm.inputs_embeds",
                          "llm.hidden_states", "llm.logits", "gen.ids"})
    EXPECT_NE(report.find(std::string("OK   ") + key), std::string::npos) << key << "\n" << report;
  std::filesystem::remove(out);
}

TEST(TraceCli, HfLayoutBf16TextOnlyMatchesGolden) {
  const std::string out = out_path("text.safetensors");
  CmdResult r = run(std::string(RECAP_BIN) + " trace --weights " + kTiny +
                    "/llava_hf_bf16 --input-ids=" + kTextIds + " --no-stop --text-only-names --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = compare(out, 5);
  EXPECT_NE(report.find("OK   text_only.gen_ids"), std::string::npos) << report;
  std::filesystem::remove(out);
}

TEST(TraceCli, BareClipDirVisionOnly) {
  const std::string out = out_path("clip.safetensors");
  CmdResult r = run(std::string(RECAP_BIN) + " trace --weights " + kTiny + "/clip_full_fp32" + images() +
                    " --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = compare(out, 19);
  EXPECT_NE(report.find("OK   vision.patch_features"), std::string::npos) << report;
  EXPECT_EQ(report.find("projector.out"), std::string::npos) << report;
  std::filesystem::remove(out);
}

std::vector<float> f32_tensor(const recap::io::SafetensorsFile& f, const std::string& name) {
  const auto& t = f.tensors().at(name);
  EXPECT_EQ(t.dtype, recap::io::DType::F32) << name;
  std::vector<float> v(t.nbytes / sizeof(float));
  std::memcpy(v.data(), t.data, v.size() * sizeof(float));
  return v;
}

// A reduced-precision trace is the f32 trace within the precision's derived NMSE bound
// (docs/NUMERICS.md; tiny model: 1 encoder layer run -> 7 GEMMs to projector.out, 2 decoder
// layers -> 10 to the logits, so 2*7*1e-2 and 2*17*1e-2 at int4), and not equal to it.
TEST(TraceCli, ReducedPrecisionIsWithinItsBound) {
  const std::string args = " --image " + kTiny + "/images/small_wide.png --input-ids=" + kImageIds +
                           " --max-new-tokens 4 --no-stop";
  const std::string ref = out_path("f32.safetensors"), q = out_path("int4.safetensors");
  CmdResult r =
      run(std::string(RECAP_BIN) + " trace --weights " + kTiny + "/llava_orig_bf16" + args + " --out " + ref);
  ASSERT_EQ(r.status, 0) << r.output;
  r = run(std::string(RECAP_BIN) + " trace --weights " + kTiny +
          "/llava_orig_bf16 --precision int4 --kv-dtype bf16" + args + " --out " + q);
  ASSERT_EQ(r.status, 0) << r.output;
  auto fr = recap::io::SafetensorsFile::open(ref);
  auto fq = recap::io::SafetensorsFile::open(q);
  const double proj =
      recap::models::testing::nmse(f32_tensor(*fq, "projector.out"), f32_tensor(*fr, "projector.out"));
  const double logits =
      recap::models::testing::nmse(f32_tensor(*fq, "llm.logits"), f32_tensor(*fr, "llm.logits"));
  EXPECT_GT(proj, 0.0);
  EXPECT_LE(proj, 2 * 7 * 1e-2);
  EXPECT_GT(logits, 0.0);
  EXPECT_LE(logits, 2 * 17 * 1e-2);
  EXPECT_EQ(fq->tensors().at("gen.ids").shape, std::vector<int64_t>({4}));
  std::filesystem::remove(ref);
  std::filesystem::remove(q);
}

TEST(TraceCli, ErrorsAreClear) {
  const std::string bin = RECAP_BIN;
  const std::string out = out_path("err.safetensors");
  // Not a model directory: usage error naming the path.
  CmdResult r = run(bin + " trace --weights " + kData + "/no_such_dir --input-ids=1,2 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("no_such_dir"), std::string::npos) << r.output;
  // A bare CLIP dir has no language model.
  r = run(bin + " trace --weights " + kTiny + "/clip_vision_fp32 --input-ids=1,2 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("no language model"), std::string::npos) << r.output;
  // Malformed ids, ids outside the vocabulary, an image token without an image, a missing image.
  r = run(bin + " trace --weights " + kTiny + "/llava_orig_fp32 --input-ids=1,x,3 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("'x'"), std::string::npos) << r.output;
  r = run(bin + " trace --weights " + kTiny + "/llava_orig_fp32 --input-ids=1,99999 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("99999"), std::string::npos) << r.output;
  r = run(bin + " trace --weights " + kTiny + "/llava_orig_fp32 --input-ids=1,-200,5 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("image"), std::string::npos) << r.output;
  r = run(bin + " trace --weights " + kTiny + "/llava_orig_fp32 --image " + kTiny +
          "/images/missing.png --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("missing.png"), std::string::npos) << r.output;
  // Nothing to do.
  r = run(bin + " trace --weights " + kTiny + "/llava_orig_fp32 --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
