// The one tower-failure policy through the C API, pinned to the CLI's: when the vision tower
// throws on a batch, recap_caption_batch still returns RECAP_OK; exactly the samples of that
// batch fail (status RECAP_ERR_INTERNAL, status_name "failed_to_caption", the tower's error) and
// every other sample gets the caption `recap-engine caption` writes for it. The tower is made to
// throw by the test-only failpoint RECAP_FAILPOINTS=vision_tower_batch:2 (engine/failpoints.h),
// which a process reads once: this binary sets it before its first C API call, and runs the CLI
// with the variable removed from the child's environment.
//
// Which images form the second tower batch depends on the order the loader finishes them, so
// the test asserts what holds for every order (one to vision_batch samples fail, all with the
// failpoint's error), as tests/caption/test_tower_failure_cli.cpp does for the CLI.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../caption/cli_util.h"
#include "recap/recap.h"

namespace {

namespace rt = recap::testing;

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
const std::vector<std::string> kImageNames{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                           "small_wide.png"};
constexpr int kSamples = 6, kVisionBatch = 2, kMaxBatch = 4, kMaxNew = 12;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Runs the same six images through `recap-engine caption` without the failpoint (the CLI's
// records of the same settings); returns its sidecar records in list order.
std::vector<nlohmann::json> cli_records(const std::string& dir, std::vector<std::string>* paths) {
  std::string list;
  for (int i = 0; i < kSamples; ++i) {
    paths->push_back(kImages + "/" + kImageNames[i % kImageNames.size()]);
    list += nlohmann::json{{"url", paths->back()}, {"caption", "cap " + std::to_string(i)}}.dump() + "\n";
  }
  {
    std::ofstream f(dir + "/list.jsonl");
    f << list;
  }
  const rt::RunResult cli = rt::run_cmd({"env",
                                         "-u",
                                         "RECAP_FAILPOINTS",
                                         RECAP_BIN,
                                         "caption",
                                         "--weights",
                                         kWeights,
                                         "--tokenizer",
                                         kTokenizer,
                                         "--list",
                                         dir + "/list.jsonl",
                                         "--out",
                                         dir + "/out",
                                         "--precision",
                                         "f32",
                                         "--threads",
                                         "2",
                                         "--max-new-tokens",
                                         std::to_string(kMaxNew),
                                         "--max-batch",
                                         std::to_string(kMaxBatch),
                                         "--vision-batch",
                                         std::to_string(kVisionBatch),
                                         "--quiet"});
  EXPECT_EQ(cli.rc, 0) << cli.out;
  std::map<std::string, nlohmann::json> by_key;
  for (auto& j : rt::read_jsonl(dir + "/out/00000.jsonl")) by_key[j.at("key").get<std::string>()] = j;
  std::vector<nlohmann::json> in_order;
  for (auto& [key, j] : by_key) in_order.push_back(j);  // keys are the list positions, zero-padded
  return in_order;
}

recap_model* load_model() {
  recap_model_params mp = recap_model_default_params();
  mp.weights_dir = kWeights.c_str();
  mp.tokenizer_path = kTokenizer.c_str();
  mp.threads = 2;  // the vision worker thread (the CLI test runs the inline path too)
  recap_model* model = nullptr;
  char* err = nullptr;
  const recap_status s = recap_model_load(&mp, &model, &err);
  EXPECT_EQ(s, RECAP_OK) << (err ? err : "");
  recap_free_string(err);
  return model;
}

}  // namespace

TEST(ApiTowerFailure, FailedTowerBatchFailsOnlyItsSamplesAndTheCallSucceeds) {
  const std::string dir = rt::make_temp_dir("api_tower_fail");
  std::vector<std::string> paths;
  const std::vector<nlohmann::json> cli = cli_records(dir, &paths);
  ASSERT_EQ(cli.size(), static_cast<size_t>(kSamples));

  // Armed before this process's first C API call (recap_model_load reads it).
  ASSERT_EQ(setenv("RECAP_FAILPOINTS", "vision_tower_batch:2", 1), 0);
  recap_model* model = load_model();
  ASSERT_NE(model, nullptr);

  std::vector<std::string> bytes, keys, captions;
  for (int i = 0; i < kSamples; ++i) {
    bytes.push_back(read_file(paths[i]));
    captions.push_back("cap " + std::to_string(i));
    keys.push_back(cli[i].at("key").get<std::string>());
  }
  std::vector<recap_image> images(kSamples);
  for (int i = 0; i < kSamples; ++i) {
    images[i].encoded = reinterpret_cast<const uint8_t*>(bytes[i].data());
    images[i].encoded_size = bytes[i].size();
    images[i].key = keys[i].c_str();
    images[i].original_caption = captions[i].c_str();
  }
  recap_caption_params cp = recap_caption_default_params();
  cp.max_new_tokens = kMaxNew;
  cp.max_batch = kMaxBatch;
  cp.vision_batch = kVisionBatch;

  // The first call holds the process's second tower batch.
  recap_result* res = nullptr;
  char* err = nullptr;
  ASSERT_EQ(
      recap_caption_batch(model, &cp, images.data(), images.size(), &res, nullptr, nullptr, nullptr, &err),
      RECAP_OK)
      << (err ? err : "");
  int failed = 0;
  for (int i = 0; i < kSamples; ++i) {
    SCOPED_TRACE(keys[i]);
    const recap_result& r = res[i];
    EXPECT_EQ(r.index, static_cast<size_t>(i));
    EXPECT_EQ(std::string(r.key), keys[i]);
    ASSERT_EQ(cli[i].at("status"), "success") << cli[i].dump();
    if (r.status != RECAP_OK) {
      ++failed;
      EXPECT_EQ(r.status, RECAP_ERR_INTERNAL);
      EXPECT_STREQ(r.status_name, "failed_to_caption");
      EXPECT_STREQ(r.error_message, "failed_to_caption: vision tower: failpoint vision_tower_batch:2");
      EXPECT_STREQ(r.caption, "");
      EXPECT_EQ(r.n_captions, 0u);
      EXPECT_EQ(r.new_tokens, 0);
      continue;
    }
    EXPECT_STREQ(r.status_name, "success");
    EXPECT_STREQ(r.error_message, "");
    EXPECT_EQ(std::string(r.caption), cli[i].at("re_caption").get<std::string>());
    EXPECT_EQ(r.prompt_tokens, cli[i].at("tokens_in").get<int>());
    EXPECT_EQ(r.new_tokens, cli[i].at("tokens_out").get<int>());
  }
  EXPECT_GE(failed, 1);
  EXPECT_LE(failed, kVisionBatch);
  recap_results_free(res, images.size());

  // The count is the process's: a second call's batches are past number 2, so every sample is
  // captioned, each as the CLI captions it.
  res = nullptr;
  ASSERT_EQ(
      recap_caption_batch(model, &cp, images.data(), images.size(), &res, nullptr, nullptr, nullptr, &err),
      RECAP_OK)
      << (err ? err : "");
  for (int i = 0; i < kSamples; ++i) {
    SCOPED_TRACE(keys[i]);
    EXPECT_EQ(res[i].status, RECAP_OK) << res[i].error_message;
    EXPECT_EQ(std::string(res[i].caption), cli[i].at("re_caption").get<std::string>());
  }
  recap_results_free(res, images.size());
  recap_model_free(model);
}

// A malformed RECAP_FAILPOINTS is refused by recap_model_load, the first call that does work:
// RECAP_ERR_INVALID_ARGUMENT naming the variable, no model. (A child process: the variable is
// read once per process.)
TEST(ApiTowerFailureDeathTest, MalformedFailpointsIsRefusedByModelLoad) {
  EXPECT_EXIT(
      {
        setenv("RECAP_FAILPOINTS", "vision_tower_batch:two", 1);
        recap_model_params mp = recap_model_default_params();
        mp.weights_dir = kWeights.c_str();
        mp.tokenizer_path = kTokenizer.c_str();
        recap_model* model = nullptr;
        char* err = nullptr;
        const recap_status s = recap_model_load(&mp, &model, &err);
        std::fprintf(stderr, "status %d model %s error [%s]\n", static_cast<int>(s), model ? "set" : "null",
                     err ? err : "");
        std::exit(s == RECAP_ERR_INVALID_ARGUMENT && !model ? 0 : 1);
      },
      ::testing::ExitedWithCode(0),
      "model null error \\[RECAP_FAILPOINTS=\"vision_tower_batch:two\": vision_tower_batch needs a batch "
      "number >= 1 \\(vision_tower_batch:N\\), not \"two\"\\]");
}
