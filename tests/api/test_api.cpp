// The C API (include/recap/recap.h) and the C++ wrapper (recap.hpp) on the tiny LLaVA model:
// every function, every error code a caller can provoke, per-sample failures, callbacks and
// cancellation, and greedy captions equal to `recap-engine caption`'s for the same images.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/image.h"
#include "recap/recap.h"
#include "recap/recap.hpp"

extern "C" int recap_test_c_smoke(const char* weights, const char* tokenizer, const unsigned char* bytes,
                                  size_t size, char* caption_out, size_t caption_cap);

#ifdef __SANITIZE_ADDRESS__
// Under ASan a huge allocation must fail like it does in the release build (std::bad_alloc),
// not abort the process: OutOfMemoryIsReportedNotFatal depends on it.
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1";
}
#endif

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
const std::vector<std::string> kImageNames = {"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                              "small_wide.png"};
constexpr int kMaxNew = 24;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string make_temp_dir(const std::string& tag) {
  std::string t = ::testing::TempDir() + "recap_api_" + tag + "_XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  char* d = ::mkdtemp(buf.data());
  EXPECT_NE(d, nullptr);
  return d ? std::string(d) : t;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string take(char* s) {
  std::string out = s ? s : "";
  recap_free_string(s);
  return out;
}

recap_model_params tiny_params() {
  recap_model_params p = recap_model_default_params();
  p.weights_dir = kWeights.c_str();
  p.tokenizer_path = kTokenizer.c_str();
  return p;
}

recap_caption_params short_params() {
  recap_caption_params p = recap_caption_default_params();
  p.max_new_tokens = kMaxNew;
  return p;
}

// Loads with the given params, expecting `want`; returns the error message.
std::string load_fails(const recap_model_params& p, recap_status want) {
  recap_model* m = reinterpret_cast<recap_model*>(0x1);
  char* err = nullptr;
  EXPECT_EQ(recap_model_load(&p, &m, &err), want);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(err, nullptr);
  return take(err);
}

struct Encoded {
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<recap_image> images;
};

Encoded demo_images() {
  Encoded e;
  for (auto& n : kImageNames) e.bytes.push_back(read_bytes(kImages + "/" + n));
  for (size_t i = 0; i < kImageNames.size(); ++i) {
    recap_image im{};
    im.encoded = e.bytes[i].data();
    im.encoded_size = e.bytes[i].size();
    im.key = kImageNames[i].c_str();
    e.images.push_back(im);
  }
  return e;
}

class Api : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    recap_model_params p = tiny_params();
    char* err = nullptr;
    ASSERT_EQ(recap_model_load(&p, &model_, &err), RECAP_OK) << (err ? err : "");
    EXPECT_EQ(err, nullptr);
    reference_ = cli_captions();
  }
  static void TearDownTestSuite() {
    recap_model_free(model_);
    model_ = nullptr;
  }

  // Greedy captions of the demo images as `recap-engine caption` writes them (image file name
  // -> re_caption), from the shard's JSONL.
  static std::map<std::string, std::string> cli_captions() {
    const std::string dir = make_temp_dir("cli");
    const std::string list = dir + "/list.jsonl";
    {
      std::ofstream f(list);
      for (auto& n : kImageNames)
        f << nlohmann::json{{"url", kImages + "/" + n}, {"caption", "x"}}.dump() << "\n";
    }
    const std::string cmd = std::string(RECAP_BIN) + " caption --weights " + kWeights + " --tokenizer " +
                            kTokenizer + " --list " + list + " --out " + dir + "/out --max-new-tokens " +
                            std::to_string(kMaxNew) +
                            " --quiet --overwrite --precision f32";  // the API's default
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::map<std::string, std::string> out;
    std::ifstream f(dir + "/out/00000.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      std::string url = j.at("url").get<std::string>();
      out[url.substr(url.rfind('/') + 1)] = j.at("re_caption").get<std::string>();
    }
    EXPECT_EQ(out.size(), kImageNames.size());
    return out;
  }

  static recap_model* model_;
  static std::map<std::string, std::string> reference_;
};
recap_model* Api::model_ = nullptr;
std::map<std::string, std::string> Api::reference_;

// ------------------------------------------------------------------ static functions

TEST(ApiStatic, VersionMatchesTheProject) {
  EXPECT_STREQ(recap_version(), RECAP_PROJECT_VERSION);
  EXPECT_EQ(recap::version(), RECAP_PROJECT_VERSION);
  const std::string macros = std::to_string(RECAP_VERSION_MAJOR) + "." + std::to_string(RECAP_VERSION_MINOR) +
                             "." + std::to_string(RECAP_VERSION_PATCH);
  EXPECT_EQ(macros, RECAP_PROJECT_VERSION);
}

TEST(ApiStatic, EveryStatusHasItsOwnString) {
  const recap_status all[] = {RECAP_OK,
                              RECAP_ERR_INVALID_ARGUMENT,
                              RECAP_ERR_IO,
                              RECAP_ERR_FORMAT,
                              RECAP_ERR_UNSUPPORTED,
                              RECAP_ERR_IMAGE,
                              RECAP_ERR_OUT_OF_MEMORY,
                              RECAP_ERR_CANCELLED,
                              RECAP_ERR_INTERNAL};
  std::set<std::string> seen;
  for (auto s : all) {
    ASSERT_NE(recap_status_string(s), nullptr);
    EXPECT_NE(std::string(recap_status_string(s)), "unknown status") << s;
    seen.insert(recap_status_string(s));
  }
  EXPECT_EQ(seen.size(), std::size(all));
  EXPECT_STREQ(recap_status_string(static_cast<recap_status>(-99)), "unknown status");
  EXPECT_EQ(RECAP_OK, 0);
}

TEST(ApiStatic, DefaultParams) {
  recap_model_params m = recap_model_default_params();
  EXPECT_EQ(m.weights_dir, nullptr);
  EXPECT_EQ(m.vision_weights_dir, nullptr);
  EXPECT_EQ(m.tokenizer_path, nullptr);
  EXPECT_EQ(m.precision, RECAP_PRECISION_F32);
  EXPECT_EQ(m.kv_dtype, RECAP_KV_F32);
  EXPECT_EQ(m.threads, 0);
  recap_caption_params c = recap_caption_default_params();
  EXPECT_EQ(c.template_name, nullptr);
  EXPECT_EQ(c.prompt, nullptr);
  EXPECT_EQ(c.max_new_tokens, 128);
  EXPECT_EQ(c.temperature, 0.f);
  EXPECT_EQ(c.top_k, 0);
  EXPECT_EQ(c.top_p, 1.f);
  EXPECT_EQ(c.seed, 0u);
  EXPECT_EQ(c.max_batch, 8);
  EXPECT_EQ(c.vision_batch, 0);
}

TEST(ApiStatic, FreeFunctionsAcceptNull) {
  recap_free_string(nullptr);
  recap_results_free(nullptr, 5);
  recap_model_free(nullptr);
}

// ------------------------------------------------------------------ load errors

TEST(ApiLoad, InvalidArguments) {
  recap_model* m = nullptr;
  char* err = nullptr;
  EXPECT_EQ(recap_model_load(nullptr, &m, &err), RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(take(err).find("params"), std::string::npos);
  recap_model_params p = tiny_params();
  EXPECT_EQ(recap_model_load(&p, nullptr, nullptr), RECAP_ERR_INVALID_ARGUMENT);  // error may be NULL too

  p.weights_dir = nullptr;
  EXPECT_NE(load_fails(p, RECAP_ERR_INVALID_ARGUMENT).find("weights_dir"), std::string::npos);
  p = tiny_params();
  p.precision = static_cast<recap_precision>(42);
  EXPECT_NE(load_fails(p, RECAP_ERR_INVALID_ARGUMENT).find("precision 42"), std::string::npos);
  p = tiny_params();
  p.kv_dtype = static_cast<recap_kv_dtype>(-3);
  EXPECT_NE(load_fails(p, RECAP_ERR_INVALID_ARGUMENT).find("kv_dtype"), std::string::npos);
  p = tiny_params();
  p.threads = -1;
  EXPECT_NE(load_fails(p, RECAP_ERR_INVALID_ARGUMENT).find("threads"), std::string::npos);
}

TEST(ApiLoad, MissingFilesAreIoErrors) {
  recap_model_params p = tiny_params();
  const std::string missing = kData + "/tiny/no_such_checkpoint";
  p.weights_dir = missing.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_IO).find(missing), std::string::npos);

  p = tiny_params();
  const std::string no_tok = kData + "/no_such_tokenizer.json";
  p.tokenizer_path = no_tok.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_IO).find(no_tok), std::string::npos);

  p = tiny_params();
  p.tokenizer_path = nullptr;  // the checkpoint has no tokenizer.json of its own
  EXPECT_NE(load_fails(p, RECAP_ERR_IO).find("tokenizer"), std::string::npos);

  p = tiny_params();
  p.vision_weights_dir = missing.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_IO).find(missing), std::string::npos);

  const std::string empty = make_temp_dir("empty");  // a directory without config.json
  p = tiny_params();
  p.weights_dir = empty.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_IO).find("config.json"), std::string::npos);
}

TEST(ApiLoad, MalformedFilesAreFormatErrors) {
  const std::string dir = make_temp_dir("badcfg");
  write_text(dir + "/config.json", "{\"architectures\": [\"LlavaLlamaForCausalLM\"], ");  // truncated JSON
  recap_model_params p = tiny_params();
  p.weights_dir = dir.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_FORMAT).find("config.json"), std::string::npos);

  // A valid config.json with a weights file that is not safetensors.
  const std::string bad_st = make_temp_dir("badst");
  write_text(
      bad_st + "/config.json",
      std::string(std::istreambuf_iterator<char>(std::ifstream(kWeights + "/config.json").rdbuf()), {}));
  write_text(bad_st + "/model.safetensors", "garbage, not a safetensors header");
  const std::string clip = kData + "/tiny/clip_vision_fp32";
  p = tiny_params();
  p.weights_dir = bad_st.c_str();
  p.vision_weights_dir = clip.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_FORMAT).find("model.safetensors"), std::string::npos);

  const std::string bad_tok = dir + "/tokenizer.json";
  write_text(bad_tok, "this is not a tokenizer");
  p = tiny_params();
  p.tokenizer_path = bad_tok.c_str();
  EXPECT_FALSE(load_fails(p, RECAP_ERR_FORMAT).empty());
}

TEST(ApiLoad, VisionOnlyCheckpointIsUnsupported) {
  recap_model_params p = tiny_params();
  const std::string clip = kData + "/tiny/clip_vision_fp32";
  p.weights_dir = clip.c_str();
  EXPECT_NE(load_fails(p, RECAP_ERR_UNSUPPORTED).find("not a LLaVA checkpoint"), std::string::npos);
}

TEST(ApiLoad, LogCallbackReceivesTheLoadLine) {
  struct Log {
    std::vector<std::pair<recap_log_level, std::string>> lines;
  } log;
  recap_set_log_callback([](recap_log_level level, const char* message,
                            void* user) { static_cast<Log*>(user)->lines.emplace_back(level, message); },
                         &log);
  recap_model_params p = tiny_params();
  p.precision = RECAP_PRECISION_BF16;
  p.threads = 1;
  recap_model* m = nullptr;
  ASSERT_EQ(recap_model_load(&p, &m, nullptr), RECAP_OK);
  // A failing sample is logged too.
  const uint8_t junk[] = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
  recap_image im{};
  im.encoded = junk;
  im.encoded_size = sizeof junk;
  recap_caption_params cp = short_params();
  char* cap = nullptr;
  EXPECT_EQ(recap_caption_image(m, &cp, &im, &cap, nullptr), RECAP_ERR_IMAGE);
  EXPECT_EQ(cap, nullptr);
  recap_set_log_callback(nullptr, nullptr);
  recap_model_free(m);
  ASSERT_GE(log.lines.size(), 2u);
  EXPECT_EQ(log.lines[0].first, RECAP_LOG_INFO);
  EXPECT_NE(log.lines[0].second.find("bf16"), std::string::npos) << log.lines[0].second;
  EXPECT_NE(log.lines[0].second.find("threads 1"), std::string::npos) << log.lines[0].second;
  EXPECT_NE(log.lines.back().second.find("failed_to_decode"), std::string::npos) << log.lines.back().second;
}

// ------------------------------------------------------------------ captioning

TEST_F(Api, BatchArgumentErrors) {
  auto e = demo_images();
  recap_caption_params cp = short_params();
  recap_result* res = reinterpret_cast<recap_result*>(0x1);
  char* err = nullptr;
  auto fails = [&](recap_model* m, const recap_caption_params* p, const recap_image* im, size_t n,
                   recap_status want) {
    res = reinterpret_cast<recap_result*>(0x1);
    EXPECT_EQ(recap_caption_batch(m, p, im, n, &res, nullptr, nullptr, nullptr, &err), want);
    EXPECT_EQ(res, nullptr);
    return take(err);
  };
  EXPECT_NE(fails(nullptr, &cp, e.images.data(), 4, RECAP_ERR_INVALID_ARGUMENT).find("model"),
            std::string::npos);
  EXPECT_NE(fails(model_, &cp, nullptr, 4, RECAP_ERR_INVALID_ARGUMENT).find("images"), std::string::npos);
  EXPECT_NE(fails(model_, &cp, e.images.data(), 0, RECAP_ERR_INVALID_ARGUMENT).find("empty"),
            std::string::npos);
  auto with = [&](auto mutate) {
    recap_caption_params p = short_params();
    mutate(p);
    return fails(model_, &p, e.images.data(), 4, RECAP_ERR_INVALID_ARGUMENT);
  };
  EXPECT_NE(with([](auto& p) { p.max_new_tokens = 0; }).find("max_new_tokens"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.max_batch = 0; }).find("max_batch"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.vision_batch = -1; }).find("vision_batch"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.temperature = -0.5f; }).find("temperature"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.top_k = -1; }).find("top_k"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.top_p = 0.f; }).find("top_p"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.top_p = 1.5f; }).find("top_p"), std::string::npos);
  EXPECT_NE(with([](auto& p) { p.template_name = "no-such-template"; }).find("no-such-template"),
            std::string::npos);

  // Template files: missing -> IO, malformed -> FORMAT.
  const std::string dir = make_temp_dir("tmpl");
  const std::string missing = dir + "/missing.json", bad = dir + "/bad.json";
  write_text(bad, "{\"template\": ");
  recap_caption_params p = short_params();
  p.template_name = missing.c_str();
  EXPECT_NE(fails(model_, &p, e.images.data(), 4, RECAP_ERR_IO).find(missing), std::string::npos);
  p.template_name = bad.c_str();
  EXPECT_NE(fails(model_, &p, e.images.data(), 4, RECAP_ERR_FORMAT).find("bad.json"), std::string::npos);

  // A prompt field the template does not know is the call's error, whatever the sample.
  const std::string field_tmpl = dir + "/field.txt";
  write_text(field_tmpl, "<image>\n{no_such_field}");
  p.template_name = field_tmpl.c_str();
  EXPECT_NE(fails(model_, &p, e.images.data(), 4, RECAP_ERR_INVALID_ARGUMENT).find("template"),
            std::string::npos);
}

TEST_F(Api, GreedyCaptionsEqualTheCli) {
  ASSERT_EQ(reference_.size(), kImageNames.size());
  auto e = demo_images();
  for (int max_batch : {1, 2, 8}) {
    recap_caption_params cp = short_params();
    cp.max_batch = max_batch;
    cp.vision_batch = max_batch == 2 ? 3 : 0;
    recap_result* res = nullptr;
    char* err = nullptr;
    ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 4, &res, nullptr, nullptr, nullptr, &err),
              RECAP_OK)
        << take(err);
    EXPECT_EQ(err, nullptr);
    for (size_t i = 0; i < 4; ++i) {
      SCOPED_TRACE(kImageNames[i] + " max_batch " + std::to_string(max_batch));
      EXPECT_EQ(res[i].index, i);
      EXPECT_STREQ(res[i].key, kImageNames[i].c_str());
      EXPECT_EQ(res[i].status, RECAP_OK);
      EXPECT_STREQ(res[i].error_message, "");
      EXPECT_EQ(res[i].caption, reference_.at(kImageNames[i]));
      EXPECT_FALSE(std::string(res[i].caption).empty());
      EXPECT_GT(res[i].prompt_tokens, 0);
      EXPECT_GT(res[i].new_tokens, 0);
      EXPECT_LE(res[i].new_tokens, kMaxNew);
    }
    recap_results_free(res, 4);
  }
}

TEST_F(Api, DecodedRgbGivesTheSameCaptionAsTheEncodedFile) {
  for (auto& name : kImageNames) {
    auto img = recap::io::decode_image_file(kImages + "/" + name);
    recap_image im{};
    im.rgb = img.rgb.data();
    im.width = img.width;
    im.height = img.height;
    recap_caption_params cp = short_params();
    char* cap = nullptr;
    char* err = nullptr;
    ASSERT_EQ(recap_caption_image(model_, &cp, &im, &cap, &err), RECAP_OK) << take(err);
    EXPECT_EQ(take(cap), reference_.at(name)) << name;
  }
}

TEST_F(Api, PerSampleFailuresKeepTheRestOfTheBatch) {
  auto e = demo_images();
  const uint8_t html[] = "<!DOCTYPE html><html></html>";
  std::vector<uint8_t> truncated(e.bytes[2].begin(), e.bytes[2].begin() + 100);  // JPEG cut short
  std::vector<recap_image> batch;
  batch.push_back(e.images[0]);
  recap_image bad{};
  bad.encoded = html;
  bad.encoded_size = sizeof html;
  bad.key = "html";
  batch.push_back(bad);
  batch.push_back(e.images[1]);
  recap_image none{};  // no pixels at all; no key -> the index
  batch.push_back(none);
  recap_image cut{};
  cut.encoded = truncated.data();
  cut.encoded_size = truncated.size();
  batch.push_back(cut);
  recap_image zero{};
  zero.encoded = html;
  zero.encoded_size = 0;
  batch.push_back(zero);
  recap_image rgb_bad{};
  rgb_bad.rgb = html;
  rgb_bad.width = 0;
  rgb_bad.height = 3;
  batch.push_back(rgb_bad);
  batch.push_back(e.images[3]);

  recap_caption_params cp = short_params();
  cp.max_batch = 2;
  recap_result* res = nullptr;
  ASSERT_EQ(
      recap_caption_batch(model_, &cp, batch.data(), batch.size(), &res, nullptr, nullptr, nullptr, nullptr),
      RECAP_OK);
  const recap_status want[] = {RECAP_OK,
                               RECAP_ERR_IMAGE,
                               RECAP_OK,
                               RECAP_ERR_INVALID_ARGUMENT,
                               RECAP_ERR_IMAGE,
                               RECAP_ERR_IMAGE,
                               RECAP_ERR_INVALID_ARGUMENT,
                               RECAP_OK};
  for (size_t i = 0; i < batch.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(res[i].status, want[i]) << res[i].error_message;
    if (want[i] == RECAP_OK) {
      EXPECT_STREQ(res[i].error_message, "");
    } else {
      EXPECT_STREQ(res[i].caption, "");
      EXPECT_STRNE(res[i].error_message, "");
      EXPECT_EQ(res[i].new_tokens, 0);
    }
  }
  EXPECT_EQ(res[0].caption, reference_.at(kImageNames[0]));
  EXPECT_EQ(res[2].caption, reference_.at(kImageNames[1]));
  EXPECT_EQ(res[7].caption, reference_.at(kImageNames[3]));
  EXPECT_STREQ(res[1].key, "html");
  EXPECT_STREQ(res[3].key, "3");
  EXPECT_NE(std::string(res[1].error_message).find("failed_to_decode"), std::string::npos)
      << res[1].error_message;
  recap_results_free(res, batch.size());
}

TEST_F(Api, PromptBeyondTheModelPositionsIsAPerSampleError) {
  auto e = demo_images();
  recap_caption_params cp = short_params();
  cp.max_new_tokens = 9000;  // the tiny model has 8192 positions
  recap_result* res = nullptr;
  ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 1, &res, nullptr, nullptr, nullptr, nullptr),
            RECAP_OK);
  EXPECT_EQ(res[0].status, RECAP_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(res[0].error_message).find("8192"), std::string::npos) << res[0].error_message;
  recap_results_free(res, 1);
}

TEST_F(Api, CallbacksSeeEverySampleOnceAndProgressCountsUp) {
  auto e = demo_images();
  struct Seen {
    std::vector<size_t> indices;
    std::vector<std::string> captions;
    std::vector<std::pair<size_t, size_t>> progress;
  } seen;
  recap_caption_params cp = short_params();
  cp.max_batch = 3;
  recap_result* res = nullptr;
  auto on_result = [](const recap_result* r, void* user) -> int {
    auto* s = static_cast<Seen*>(user);
    s->indices.push_back(r->index);
    s->captions.push_back(r->caption);
    return 0;
  };
  auto on_progress = [](size_t done, size_t total, void* user) {
    static_cast<Seen*>(user)->progress.emplace_back(done, total);
  };
  ASSERT_EQ(
      recap_caption_batch(model_, &cp, e.images.data(), 4, &res, on_result, on_progress, &seen, nullptr),
      RECAP_OK);
  ASSERT_EQ(seen.indices.size(), 4u);
  EXPECT_EQ(std::set<size_t>(seen.indices.begin(), seen.indices.end()).size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(seen.captions[k], res[seen.indices[k]].caption);
    EXPECT_EQ(seen.progress.at(k), std::make_pair(k + 1, size_t{4}));
  }
  recap_results_free(res, 4);
  // results may be NULL: the callbacks alone deliver the captions.
  seen = Seen{};
  ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 4, nullptr, on_result, nullptr, &seen, nullptr),
            RECAP_OK);
  EXPECT_EQ(seen.indices.size(), 4u);
}

TEST_F(Api, CancelFromTheResultCallback) {
  auto e = demo_images();
  recap_caption_params cp = short_params();
  cp.max_batch = 1;
  int calls = 0;
  recap_result* res = nullptr;
  char* err = nullptr;
  const recap_status st = recap_caption_batch(
      model_, &cp, e.images.data(), 4, &res,
      [](const recap_result*, void* user) -> int { return ++*static_cast<int*>(user); }, nullptr, &calls,
      &err);
  EXPECT_EQ(st, RECAP_ERR_CANCELLED);
  EXPECT_NE(take(err).find("cancel"), std::string::npos);
  EXPECT_EQ(calls, 1);
  ASSERT_NE(res, nullptr);
  int ok = 0, cancelled = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (res[i].status == RECAP_OK) {
      ++ok;
      EXPECT_EQ(res[i].caption, reference_.at(kImageNames[i]));
    } else {
      EXPECT_EQ(res[i].status, RECAP_ERR_CANCELLED);
      ++cancelled;
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(cancelled, 3);
  recap_results_free(res, 4);

  // Cancelled with sequences still running (max_batch 4): the model stays usable and exact.
  cp.max_batch = 4;
  calls = 0;
  EXPECT_EQ(recap_caption_batch(
                model_, &cp, e.images.data(), 4, nullptr,
                [](const recap_result*, void* user) -> int { return ++*static_cast<int*>(user); }, nullptr,
                &calls, nullptr),
            RECAP_ERR_CANCELLED);
  ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 4, &res, nullptr, nullptr, nullptr, nullptr),
            RECAP_OK);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(res[i].caption, reference_.at(kImageNames[i]));
  recap_results_free(res, 4);
}

// RECAP_ERR_INTERNAL: what the library reports for an exception it did not expect. A C++
// exception escaping a caller's callback is one (the library itself throws none past the
// API); it comes back as INTERNAL with the message, results NULL, and the model stays usable.
TEST_F(Api, ExceptionFromACallbackIsAnInternalError) {
  auto e = demo_images();
  recap_caption_params cp = short_params();
  recap_result* res = nullptr;
  char* err = nullptr;
  const recap_status st = recap_caption_batch(
      model_, &cp, e.images.data(), 4, &res,
      [](const recap_result*, void*) -> int { throw std::runtime_error("callback exploded"); }, nullptr,
      nullptr, &err);
  EXPECT_EQ(st, RECAP_ERR_INTERNAL);
  const std::string msg = take(err);
  EXPECT_NE(msg.find("callback exploded"), std::string::npos) << msg;
  EXPECT_EQ(res, nullptr);
  ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 4, &res, nullptr, nullptr, nullptr, nullptr),
            RECAP_OK);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(res[i].caption, reference_.at(kImageNames[i]));
  recap_results_free(res, 4);
}

TEST_F(Api, SamplingIsReproducibleAndIndependentOfTheBatch) {
  auto e = demo_images();
  auto run = [&](int max_batch, uint64_t seed, size_t n) {
    recap_caption_params cp = short_params();
    cp.temperature = 1.5f;
    cp.top_k = 50;
    cp.top_p = 0.95f;
    cp.seed = seed;
    cp.max_batch = max_batch;
    recap_result* res = nullptr;
    EXPECT_EQ(recap_caption_batch(model_, &cp, e.images.data(), n, &res, nullptr, nullptr, nullptr, nullptr),
              RECAP_OK);
    std::vector<std::string> caps;
    for (size_t i = 0; i < n; ++i) caps.push_back(res[i].caption);
    recap_results_free(res, n);
    return caps;
  };
  auto a = run(4, 7, 4);
  EXPECT_EQ(a, run(1, 7, 4));
  EXPECT_EQ(a[0], run(2, 7, 1)[0]);
  EXPECT_NE(a, run(4, 8, 4));  // another seed draws other tokens (24 draws x 4 samples)
}

TEST_F(Api, CaptionImageErrors) {
  auto e = demo_images();
  char* cap = nullptr;
  char* err = nullptr;
  EXPECT_EQ(recap_caption_image(model_, nullptr, nullptr, &cap, &err), RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cap, nullptr);
  EXPECT_NE(take(err).find("image"), std::string::npos);
  EXPECT_EQ(recap_caption_image(model_, nullptr, &e.images[0], nullptr, &err), RECAP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(take(err).find("caption"), std::string::npos);
  EXPECT_EQ(recap_caption_image(nullptr, nullptr, &e.images[0], &cap, &err), RECAP_ERR_INVALID_ARGUMENT);
  take(err);
  const uint8_t junk[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
  recap_image im{};
  im.encoded = junk;
  im.encoded_size = sizeof junk;
  EXPECT_EQ(recap_caption_image(model_, nullptr, &im, &cap, &err), RECAP_ERR_IMAGE);
  EXPECT_EQ(cap, nullptr);
  EXPECT_NE(take(err).find("failed_to_decode"), std::string::npos);
  // params NULL: the defaults (128 new tokens at most).
  ASSERT_EQ(recap_caption_image(model_, nullptr, &e.images[0], &cap, &err), RECAP_OK);
  EXPECT_EQ(err, nullptr);
  EXPECT_FALSE(take(cap).empty());
}

TEST_F(Api, OutOfMemoryIsReportedNotFatal) {
  auto e = demo_images();
  recap_caption_params cp = short_params();
  char* err = nullptr;
  recap_result* res = nullptr;
  // A KV cache beyond the block index range is refused before allocating anything.
  cp.max_batch = 2147483647;
  EXPECT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 1, &res, nullptr, nullptr, nullptr, &err),
            RECAP_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(res, nullptr);
  EXPECT_NE(take(err).find("too large"), std::string::npos);
  // A KV cache of 150M sequences (terabytes): the allocation itself fails (std::bad_alloc), unless
  // the kernel grants any virtual size (vm.overcommit_memory=1), where it cannot be provoked safely.
  // (The driver sizes a sequence as the CLI does: the tiny model's prompt + 25% room + 24 new
  // tokens is 11 blocks, so 150M sequences stay inside the 2^31 block index range checked above.)
  std::ifstream oc("/proc/sys/vm/overcommit_memory");
  int overcommit = 0;
  oc >> overcommit;
  if (overcommit != 1) {
    cp.max_batch = 150000000;
    EXPECT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 1, &res, nullptr, nullptr, nullptr, &err),
              RECAP_ERR_OUT_OF_MEMORY);
    EXPECT_EQ(res, nullptr);
    EXPECT_EQ(take(err), "out of memory");
  }
  // ... and the model still works.
  cp.max_batch = 2;
  ASSERT_EQ(recap_caption_batch(model_, &cp, e.images.data(), 1, &res, nullptr, nullptr, nullptr, nullptr),
            RECAP_OK);
  EXPECT_EQ(res[0].caption, reference_.at(kImageNames[0]));
  recap_results_free(res, 1);
  if (overcommit == 1) GTEST_SKIP() << "vm.overcommit_memory=1: the failing-allocation half was not run";
}

TEST_F(Api, ConcurrentCallsOnOneModelAreSerialisedAndExact) {
  auto e = demo_images();
  std::vector<std::vector<std::string>> got(3);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] {
      recap_caption_params cp = short_params();
      cp.max_batch = static_cast<int>(t) + 1;
      recap_result* res = nullptr;
      if (recap_caption_batch(model_, &cp, e.images.data(), 4, &res, nullptr, nullptr, nullptr, nullptr) !=
          RECAP_OK)
        return;
      for (size_t i = 0; i < 4; ++i) got[t].push_back(res[i].caption);
      recap_results_free(res, 4);
    });
  for (auto& th : threads) th.join();
  for (auto& g : got) {
    ASSERT_EQ(g.size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(g[i], reference_.at(kImageNames[i]));
  }
}

TEST_F(Api, CallableFromC99) {
  auto bytes = read_bytes(kImages + "/" + kImageNames[2]);
  char caption[4096];
  EXPECT_EQ(recap_test_c_smoke(kWeights.c_str(), kTokenizer.c_str(), bytes.data(), bytes.size(), caption,
                               sizeof caption),
            0);
  EXPECT_EQ(std::string(caption), reference_.at(kImageNames[2]));
}

// ------------------------------------------------------------------ the C++ wrapper

TEST_F(Api, CppWrapper) {
  recap::ModelParams mp;
  mp.weights_dir = kWeights;
  mp.tokenizer_path = kTokenizer;
  recap::Model model(mp);
  std::vector<recap::Image> images;
  for (auto& n : kImageNames) images.push_back(recap::Image::from_file(kImages + "/" + n, n));
  recap::CaptionParams cp;
  cp.max_new_tokens = kMaxNew;
  cp.max_batch = 3;
  size_t streamed = 0, last_done = 0;
  auto results = model.caption(
      images, cp,
      [&](const recap::Result& r) {
        EXPECT_TRUE(r.ok());
        ++streamed;
        return true;
      },
      [&](size_t done, size_t total) {
        EXPECT_EQ(total, 4u);
        last_done = done;
      });
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(streamed, 4u);
  EXPECT_EQ(last_done, 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(results[i].key, kImageNames[i]);
    EXPECT_EQ(results[i].caption, reference_.at(kImageNames[i]));
  }
  EXPECT_EQ(model.caption_one(images[1], cp), reference_.at(kImageNames[1]));

  auto img = recap::io::decode_image_file(kImages + "/" + kImageNames[3]);
  EXPECT_EQ(model.caption_one(recap::Image::from_rgb(img.rgb, img.width, img.height), cp),
            reference_.at(kImageNames[3]));

  // Per-sample failure: a result, not an exception; caption_one throws the sample's status.
  auto bad = recap::Image::from_bytes({'n', 'o', 'p', 'e'}, "bad");
  auto mixed = model.caption({images[0], bad}, cp);
  EXPECT_TRUE(mixed[0].ok());
  EXPECT_EQ(mixed[1].status, RECAP_ERR_IMAGE);
  try {
    model.caption_one(bad, cp);
    ADD_FAILURE() << "no exception";
  } catch (const recap::Error& e) {
    EXPECT_EQ(e.status(), RECAP_ERR_IMAGE);
  }

  // Cancelling returns the results; the unfinished ones are RECAP_ERR_CANCELLED.
  cp.max_batch = 1;
  auto cancelled = model.caption(images, cp, [](const recap::Result&) { return false; });
  ASSERT_EQ(cancelled.size(), 4u);
  int n_cancelled = 0;
  for (auto& r : cancelled) n_cancelled += r.status == RECAP_ERR_CANCELLED;
  EXPECT_EQ(n_cancelled, 3);

  // A callback's exception cancels the batch and reaches the caller.
  EXPECT_THROW(
      model.caption(images, cp, [](const recap::Result&) -> bool { throw std::logic_error("stop"); }),
      std::logic_error);

  // Whole-call failures throw recap::Error with the status.
  cp.max_new_tokens = 0;
  try {
    model.caption(images, cp);
    ADD_FAILURE() << "no exception";
  } catch (const recap::Error& e) {
    EXPECT_EQ(e.status(), RECAP_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("max_new_tokens"), std::string::npos);
  }
  EXPECT_THROW(model.caption(std::vector<recap::Image>{}), recap::Error);

  // Load failures.
  recap::ModelParams missing = mp;
  missing.weights_dir = kData + "/nope";
  try {
    recap::Model m(missing);
    ADD_FAILURE() << "no exception";
  } catch (const recap::Error& e) {
    EXPECT_EQ(e.status(), RECAP_ERR_IO);
  }
  EXPECT_THROW(recap::Image::from_file(kData + "/nope.png"), recap::Error);

  // Moves keep the model alive; the log callback wrapper routes lines.
  recap::Model moved = std::move(model);
  cp.max_new_tokens = kMaxNew;
  std::vector<std::string> lines;
  recap::set_log_callback([&](recap_log_level, const std::string& m) { lines.push_back(m); });
  moved.caption({bad}, cp);
  recap::set_log_callback(nullptr);
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines.back().find("bad"), std::string::npos);
}

}  // namespace
