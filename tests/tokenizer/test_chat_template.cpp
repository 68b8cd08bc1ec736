// Prompt building: SPEC 7.2 id sequences with the real Llama 3 tokenizer, user templates, fields.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "models/chat_template.h"
#include "models/tokenizer.h"

namespace fs = std::filesystem;
using namespace recap::models;

namespace {

const Tokenizer& llama3() {
  static const Tokenizer tok =
      Tokenizer::from_file(std::string(RECAP_TEST_DATA) + "/llama3-tokenizer/tokenizer.json");
  return tok;
}

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const char* kSystemText =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("recap_tmpl_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  return path.string();
}

}  // namespace

TEST(ChatTemplate, DefaultTemplateGivesSpecSequence) {
  const Tokenizer& tok = llama3();
  ChatTemplate t = builtin_template("llava-llama3");
  EXPECT_EQ(t.name, "llava-llama3");
  auto ids = build_prompt_ids(t, tok, PromptInputs{});

  auto system_ids = tok.encode(kSystemText);
  auto prompt_ids = tok.encode(kDefaultCaptionPrompt);
  // Spot checks of a few ids known independently (SPEC 6.3 and the HF golden cases).
  ASSERT_GE(prompt_ids.size(), 5u);
  EXPECT_EQ(prompt_ids.back(), 13);                                                     // "."
  EXPECT_NE(std::find(prompt_ids.begin(), prompt_ids.end(), 420), prompt_ids.end());    // " this"
  EXPECT_NE(std::find(prompt_ids.begin(), prompt_ids.end(), 2217), prompt_ids.end());   // " image"
  EXPECT_NE(std::find(system_ids.begin(), system_ids.end(), 264), system_ids.end());    // " a"
  EXPECT_NE(std::find(system_ids.begin(), system_ids.end(), 11190), system_ids.end());  // " helpful"

  auto expected = cat({{128000, 128000, 128006, 9125, 128007, 271},
                       system_ids,
                       {128009, 128006, 882, 128007, 271, -200, 198},
                       prompt_ids,
                       {128009, 128006, 78191, 128007, 271}});
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kImageTokenId), 1);
  // The rendered text is SPEC 7.2's exact prompt string.
  EXPECT_EQ(render_prompt(t, PromptInputs{}).text(),
            std::string("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n") + kSystemText +
                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\n" + kDefaultCaptionPrompt +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, TextOnlyLeavesOutImageLine) {
  const Tokenizer& tok = llama3();
  ChatTemplate t = builtin_template("llava-llama3");
  PromptInputs in;
  in.has_image = false;
  auto ids = build_prompt_ids(t, tok, in);
  auto expected = cat({{128000, 128000, 128006, 9125, 128007, 271},
                       tok.encode(kSystemText),
                       {128009, 128006, 882, 128007, 271},
                       tok.encode(kDefaultCaptionPrompt),
                       {128009, 128006, 78191, 128007, 271}});
  EXPECT_EQ(ids, expected);
}

TEST(ChatTemplate, OtherBuiltins) {
  const Tokenizer& tok = llama3();
  auto prompt_ids = tok.encode(kDefaultCaptionPrompt);
  auto plain = build_prompt_ids(builtin_template("llama3-plain"), tok, PromptInputs{});
  EXPECT_EQ(
      plain,
      cat({{128000, 128006, 882, 128007, 271, -200, 198}, prompt_ids, {128009, 128006, 78191, 128007, 271}}));
  auto next = build_prompt_ids(builtin_template("llava-next-llama3"), tok, PromptInputs{});
  auto next_system = tok.encode(
      "You are a helpful language and vision assistant. You are able to understand the visual content that "
      "the "
      "user provides, and assist the user with a variety of tasks using natural language.");
  EXPECT_EQ(next, cat({{128000, 128000, 128006, 9125, 128007, 271},
                       next_system,
                       {128009, 128006, 882, 128007, 271, -200, 198},
                       prompt_ids,
                       {128009, 128006, 78191, 128007, 271}}));
  EXPECT_THROW(builtin_template("vicuna"), std::invalid_argument);
}

TEST(ChatTemplate, StopTokensMergeGenerationEos) {
  const Tokenizer& tok = llama3();
  EXPECT_EQ(stop_token_ids(builtin_template("llava-next-llama3"), tok, {}), (std::vector<int32_t>{128009}));
  EXPECT_EQ(stop_token_ids(builtin_template("llava-llama3"), tok, {128001, 128009}),
            (std::vector<int32_t>{128001, 128009}));
  ChatTemplate t = builtin_template("llava-llama3");
  t.stop_tokens = {"<|no_such|>"};
  EXPECT_THROW(stop_token_ids(t, tok, {128001}), std::runtime_error);
}

TEST(ChatTemplate, SampleFieldsAreLiteralText) {
  const Tokenizer& tok = llama3();
  ChatTemplate t = builtin_template("llava-llama3");
  PromptInputs in;
  in.prompt = "Rewrite the caption \"{original_caption}\" for image {key}. Use {{braces}}.";
  in.fields = {{"original_caption", "a dog <image> on <|eot_id|> grass"}, {"key", "000123"}};
  auto r = render_prompt(t, in);
  ASSERT_EQ(r.chunks.size(), 2u);  // the "<image>" inside the caption is no image slot
  EXPECT_NE(r.chunks[1].find("\"a dog <image> on <|eot_id|> grass\" for image 000123. Use {braces}."),
            std::string::npos);
  auto ids = build_prompt_ids(t, tok, in);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kImageTokenId), 1);
  // <|eot_id|>: 1 after the system turn, 1 after the user turn; none from the caption.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 2);
  // The caption's text round-trips.
  EXPECT_NE(tok.decode(ids).find("a dog <image> on <|eot_id|> grass"), std::string::npos);

  in.prompt = "Caption: {alt_text}";
  try {
    render_prompt(t, in);
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("{alt_text}"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("original_caption"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, UserJsonTemplateFile) {
  const Tokenizer& tok = llama3();
  fs::path dir = temp_dir();
  // The MPT fields of LLaVA's conv_llama3 give the built-in default exactly.
  auto path = write_file(dir / "conv.json", R"({
    "name": "mine",
    "system": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "roles": ["<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n"],
    "sep": "<|eot_id|>",
    "stop": ["<|eot_id|>"]
  })");
  ChatTemplate t = resolve_template(path);
  EXPECT_EQ(t.name, "mine");
  EXPECT_TRUE(t.bos_per_chunk);
  EXPECT_EQ(build_prompt_ids(t, tok, PromptInputs{}),
            build_prompt_ids(builtin_template("llava-llama3"), tok, PromptInputs{}));

  // A base template with a new prompt that uses a sample field.
  path =
      write_file(dir / "based.json",
                 R"({"base": "llama3-plain", "prompt": "Describe the image. Original: {original_caption}"})");
  t = resolve_template(path);
  PromptInputs in;
  in.fields["original_caption"] = "a cat";
  EXPECT_EQ(build_prompt_ids(t, tok, in), cat({{128000, 128006, 882, 128007, 271, -200, 198},
                                               tok.encode("Describe the image. Original: a cat"),
                                               {128009, 128006, 78191, 128007, 271}}));

  // Errors name the file and the problem.
  for (auto [content, needle] : std::vector<std::pair<std::string, std::string>>{
           {R"({"roles": ["a"], "sep": ""})", "roles"},
           {R"({"template": "x", "colour": 1})", "unknown key \"colour\""},
           {R"({"system": "x"})", "needs \"template\""},
           {R"({"base": "nope"})", "unknown template"},
           {R"({"template": 5})", "\"template\" must be a string"},
           {"{ bad json", "malformed JSON"},
           {R"({"template": "x", "n": 1e999})",
            "malformed JSON: [json.exception.out_of_range.406] number overflow"}}) {
    auto p = write_file(dir / "bad.json", content);
    try {
      load_template_file(p);
      ADD_FAILURE() << "expected an error for " << content;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(resolve_template((dir / "missing.json").string()), std::runtime_error);
  fs::remove_all(dir);
}

TEST(ChatTemplate, UserTextTemplateFile) {
  const Tokenizer& tok = llama3();
  fs::path dir = temp_dir();
  auto path = write_file(dir / "plain.txt", "<|begin_of_text|>USER: <image>\n{prompt} ASSISTANT:");
  ChatTemplate t = resolve_template(path);
  EXPECT_FALSE(t.bos_per_chunk);  // tokenized exactly as written
  PromptInputs in;
  in.prompt = "What is it?";
  EXPECT_EQ(build_prompt_ids(t, tok, in),
            cat({{128000}, tok.encode("USER: "), {-200}, tok.encode("\nWhat is it? ASSISTANT:")}));
  in.has_image = false;
  EXPECT_EQ(build_prompt_ids(t, tok, in), cat({{128000}, tok.encode("USER: What is it? ASSISTANT:")}));

  // A text template must be UTF-8 (found by fuzz_chat_template: it used to escape as a raw
  // json::type_error from template_to_json).
  path = write_file(dir / "latin1.txt", "USER: <image>\n{p\xfe\xff\xff\xfft}\nASSISTANT:");
  try {
    resolve_template(path);
    ADD_FAILURE() << "loaded a template that is not UTF-8";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "template file " + path + ": is not valid UTF-8 text");
  }
  // Names and prompts need not be UTF-8: the canonical JSON replaces such bytes.
  ChatTemplate odd = builtin_template("llama3-plain");
  odd.name = "caf\xe9";
  EXPECT_NE(template_to_json(odd).find("\"name\":\"caf\xef\xbf\xbd\""), std::string::npos)
      << template_to_json(odd);

  // A template without <image> cannot take an image.
  path = write_file(dir / "noimage.txt", "{prompt}");
  EXPECT_THROW(build_prompt_ids(resolve_template(path), tok, PromptInputs{}), std::runtime_error);
  in.has_image = false;
  EXPECT_EQ(build_prompt_ids(resolve_template(path), tok, in), tok.encode("What is it?"));
  fs::remove_all(dir);
}
