// One caption driver (engine/caption_driver) behind `recap-engine caption` and the C API: the
// same list run through both, with every caption option that changes the text (two sampled
// captions per image, --shear words, --first-sentence) and one undecodable image, gives the
// same records: key, status, every caption, token counts and stop reasons. (--shear tokens: the
// tiny model's captions have no spaces or periods, so it is the option whose cut shows.)
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../caption/cli_util.h"
#include "models/tokenizer.h"
#include "recap/recap.h"

namespace {

namespace rt = recap::testing;

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

struct Entry {
  std::string path;     // the image file (the list's url)
  std::string caption;  // original caption (the --shear words budget)
};

TEST(ApiCliParity, SameListGivesTheSameRecordsThroughTheCliAndTheCApi) {
  const std::string dir = rt::make_temp_dir("api_parity");
  // An "image" that is an HTML page: failed_to_decode through both paths.
  const std::string broken = dir + "/broken.jpg";
  {
    std::ofstream f(broken, std::ios::binary);
    f << "<!DOCTYPE html><html><body>not an image</body></html>";
  }
  const std::vector<Entry> entries = {
      {kImages + "/wide_gradient.png", "a wide gradient of soft colours at dusk"},
      {kImages + "/tall_alpha.png", "tall image"},
      {broken, "a page that is not an image"},
      {kImages + "/gray_square.jpg", "grey square on a plain background with nothing else in it"},
      {kImages + "/small_wide.png", "small"},
  };
  const std::string list = dir + "/list.jsonl";
  {
    std::ofstream f(list);
    for (auto& e : entries) f << nlohmann::json{{"url", e.path}, {"caption", e.caption}}.dump() << "\n";
  }
  constexpr int kMaxNew = 24, kMaxBatch = 4, kNumCaptions = 2;
  constexpr float kTemperature = 0.9f;
  constexpr uint64_t kSeed = 11;

  // ---- the CLI
  const rt::RunResult cli = rt::run_cmd({RECAP_BIN,
                                         "caption",
                                         "--weights",
                                         kWeights,
                                         "--tokenizer",
                                         kTokenizer,
                                         "--list",
                                         list,
                                         "--out",
                                         dir + "/out",
                                         "--precision",
                                         "f32",
                                         "--max-new-tokens",
                                         std::to_string(kMaxNew),
                                         "--max-batch",
                                         std::to_string(kMaxBatch),
                                         "--num-captions",
                                         std::to_string(kNumCaptions),
                                         "--temperature",
                                         "0.9",
                                         "--seed",
                                         std::to_string(kSeed),
                                         "--shear",
                                         "tokens",
                                         "--first-sentence",
                                         "--quiet"});
  ASSERT_EQ(cli.rc, 0) << cli.out;
  std::map<std::string, nlohmann::json> by_url;
  for (auto& j : rt::read_jsonl(dir + "/out/00000.jsonl")) by_url[j.at("url").get<std::string>()] = j;
  ASSERT_EQ(by_url.size(), entries.size()) << cli.out;

  // ---- the C API: the same images as encoded bytes, the same keys, captions and settings
  recap_model_params mp = recap_model_default_params();
  mp.weights_dir = kWeights.c_str();
  mp.tokenizer_path = kTokenizer.c_str();
  recap_model* model = nullptr;
  char* err = nullptr;
  ASSERT_EQ(recap_model_load(&mp, &model, &err), RECAP_OK) << (err ? err : "");
  std::vector<std::string> bytes, keys;
  for (auto& e : entries) {
    bytes.push_back(read_file(e.path));
    keys.push_back(by_url.at(e.path).at("key").get<std::string>());
  }
  std::vector<recap_image> images(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    images[i].encoded = reinterpret_cast<const uint8_t*>(bytes[i].data());
    images[i].encoded_size = bytes[i].size();
    images[i].key = keys[i].c_str();
    images[i].original_caption = entries[i].caption.c_str();
  }
  recap_caption_params cp = recap_caption_default_params();
  cp.max_new_tokens = kMaxNew;
  cp.max_batch = kMaxBatch;
  cp.num_captions = kNumCaptions;
  cp.temperature = kTemperature;
  cp.seed = kSeed;
  cp.shear = RECAP_SHEAR_TOKENS;
  cp.first_sentence = 1;
  recap_result* res = nullptr;
  ASSERT_EQ(
      recap_caption_batch(model, &cp, images.data(), images.size(), &res, nullptr, nullptr, nullptr, &err),
      RECAP_OK)
      << (err ? err : "");

  // ---- identical records
  const auto tok = recap::models::Tokenizer::from_file(kTokenizer);
  int sampled_apart = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(entries[i].path);
    const nlohmann::json& j = by_url.at(entries[i].path);
    const recap_result& r = res[i];
    EXPECT_EQ(r.index, i);
    EXPECT_EQ(std::string(r.key), j.at("key").get<std::string>());
    EXPECT_EQ(std::string(r.status_name), j.at("status").get<std::string>());
    if (entries[i].path == broken) {
      // The one failure: the same status and message (the CLI names the list's url, the C API
      // the key, as neither has the other), no caption, no tokens.
      ASSERT_EQ(j.at("status"), "failed_to_decode");
      EXPECT_EQ(r.status, RECAP_ERR_IMAGE);
      const std::string cli_error = j.at("error_message").get<std::string>();
      ASSERT_EQ(cli_error.rfind(broken + ": ", 0), 0u) << cli_error;
      EXPECT_EQ(std::string(r.error_message),
                "failed_to_decode: " + keys[i] + cli_error.substr(broken.size()));
      EXPECT_STREQ(r.caption, "");
      EXPECT_EQ(r.n_captions, 0u);
      EXPECT_EQ(r.captions, nullptr);
      EXPECT_EQ(r.stop_reasons, nullptr);
      EXPECT_STREQ(r.stop_reason, "");
      EXPECT_EQ(r.prompt_tokens, 0);
      EXPECT_EQ(r.new_tokens, 0);
      EXPECT_FALSE(j.contains("tokens_in"));
      continue;
    }
    ASSERT_EQ(j.at("status"), "success") << j.dump();
    EXPECT_EQ(r.status, RECAP_OK);
    EXPECT_STREQ(r.error_message, "");
    ASSERT_EQ(r.n_captions, static_cast<size_t>(kNumCaptions));
    const auto cli_captions = j.at("re_captions").get<std::vector<std::string>>();
    const auto cli_stops = j.at("stop_reason").get<std::vector<std::string>>();
    ASSERT_EQ(cli_captions.size(), static_cast<size_t>(kNumCaptions));
    ASSERT_EQ(cli_stops.size(), static_cast<size_t>(kNumCaptions));
    for (size_t c = 0; c < r.n_captions; ++c) {
      EXPECT_EQ(std::string(r.captions[c]), cli_captions[c]) << c;
      EXPECT_EQ(std::string(r.stop_reasons[c]), cli_stops[c]) << c;
      // What --shear tokens and --first-sentence promise, in both: no period, and of the 24
      // tokens generated only the original caption's count kept. (Checked where the original is
      // short: re-encoding a cut caption of the tiny model's byte soup is not always its ids.)
      const size_t original_tokens = tok.encode(entries[i].caption, false).size();
      if (original_tokens <= 3) {
        EXPECT_LE(tok.encode(cli_captions[c], false).size(), 3u) << cli_captions[c];
      }
      EXPECT_EQ(cli_captions[c].find('.'), std::string::npos) << cli_captions[c];
    }
    EXPECT_EQ(std::string(r.caption), j.at("re_caption").get<std::string>());
    EXPECT_EQ(std::string(r.caption), std::string(r.captions[0]));
    EXPECT_EQ(std::string(r.stop_reason), cli_stops[0]);
    EXPECT_EQ(r.prompt_tokens, j.at("tokens_in").get<int>());
    EXPECT_EQ(r.new_tokens, j.at("tokens_out").get<int>());
    EXPECT_EQ(r.new_tokens, kNumCaptions * kMaxNew);  // counted before the cut (as the CLI's tokens_out)
    if (cli_captions[0] != cli_captions[1]) ++sampled_apart;
  }
  // Two sampled captions per image really are two draws (else num_captions proved nothing).
  EXPECT_GT(sampled_apart, 0);
  recap_results_free(res, entries.size());
  recap_model_free(model);
}

// A params struct not initialised by this header's recap_caption_default_params (another API
// version's layout) is refused before any field past struct_size is read.
TEST(ApiParams, StructSizeOfAnotherLayoutIsRefused) {
  recap_caption_params cp = recap_caption_default_params();
  EXPECT_EQ(cp.struct_size, sizeof(recap_caption_params));
  EXPECT_EQ(cp.num_captions, 1);
  EXPECT_EQ(cp.shear, RECAP_SHEAR_NONE);
  EXPECT_EQ(cp.first_sentence, 0);
  EXPECT_EQ(cp.max_image_pixels, 89478485u);
  cp.struct_size = sizeof(recap_caption_params) - 8;
  recap_image im{};
  const uint8_t byte = 0;
  im.encoded = &byte;
  im.encoded_size = 1;
  char* err = nullptr;
  recap_result* res = nullptr;
  // The size is checked before the model is used (any non-NULL handle would be refused the
  // same way; a real one keeps the test honest).
  recap_model_params mp = recap_model_default_params();
  mp.weights_dir = kWeights.c_str();
  mp.tokenizer_path = kTokenizer.c_str();
  recap_model* model = nullptr;
  ASSERT_EQ(recap_model_load(&mp, &model, nullptr), RECAP_OK);
  EXPECT_EQ(recap_caption_batch(model, &cp, &im, 1, &res, nullptr, nullptr, nullptr, &err),
            RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(res, nullptr);
  const std::string msg = err ? err : "";
  recap_free_string(err);
  EXPECT_EQ(msg,
            "recap_caption_params.struct_size is " + std::to_string(sizeof(recap_caption_params) - 8) +
                ", not " + std::to_string(sizeof(recap_caption_params)) +
                " (API version 2): initialise the params with recap_caption_default_params() and rebuild "
                "against this recap.h");
  // num_captions beyond max_batch, and a shear that is not a recap_shear, are the call's errors.
  cp = recap_caption_default_params();
  cp.max_batch = 2;
  cp.num_captions = 3;
  EXPECT_EQ(recap_caption_batch(model, &cp, &im, 1, &res, nullptr, nullptr, nullptr, &err),
            RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err ? err : ""), "num_captions 3 exceeds max_batch 2");
  recap_free_string(err);
  cp = recap_caption_default_params();
  const int bad_shear = 7;
  std::memcpy(&cp.shear, &bad_shear, sizeof bad_shear);
  EXPECT_EQ(recap_caption_batch(model, &cp, &im, 1, &res, nullptr, nullptr, nullptr, &err),
            RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err ? err : ""), "shear 7 is not a recap_shear value");
  recap_free_string(err);
  recap_model_free(model);
}

}  // namespace
