// Tokenizer tests against the Hugging Face reference ids in tests/data/tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "models/tokenizer.h"
#include "models/unicode_tables.h"

namespace fs = std::filesystem;
using recap::models::Tokenizer;
using recap::models::TokenizerError;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kTokenizerJson = kData + "/llama3-tokenizer/tokenizer.json";

const Tokenizer& llama3() {
  static const Tokenizer tok = Tokenizer::from_file(kTokenizerJson);
  return tok;
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string label;
};

std::vector<Case> load_cases(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<Case> cases;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    Case c;
    c.text = j.at("text").get<std::string>();
    c.ids = j.at("ids").get<std::vector<int32_t>>();
    c.label = path + ":" + std::to_string(lineno) +
              (j.contains("category") ? " [" + j["category"].get<std::string>() + "]" : "");
    cases.push_back(std::move(c));
  }
  return cases;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::ostringstream s;
  for (size_t k = 0; k < ids.size(); ++k) s << (k ? "," : "") << ids[k];
  return s.str();
}

void check_golden(const std::string& file, size_t expected_count) {
  auto cases = load_cases(kData + "/tokenizer/" + file);
  ASSERT_EQ(cases.size(), expected_count);
  int failures = 0, round_trip_failures = 0;
  for (const auto& c : cases) {
    auto ids = llama3().encode(c.text);
    if (ids != c.ids) {
      if (++failures <= 10)
        ADD_FAILURE() << c.label << " text " << nlohmann::json(c.text).dump() << "\n  expected "
                      << ids_str(c.ids) << "\n  got      " << ids_str(ids);
    }
    std::string back = llama3().decode(ids);
    if (back != c.text && ++round_trip_failures <= 10)
      ADD_FAILURE() << c.label << " round trip: " << nlohmann::json(c.text).dump() << " -> "
                    << nlohmann::json(back).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(round_trip_failures, 0);
}

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("recap_tok_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  return path.string();
}

std::string error_of(const std::string& path) {
  try {
    Tokenizer::from_file(path);
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "(no error)";
}

// A small valid byte-level tokenizer.json: the 256 byte symbols, "ab" from merge "a b".
nlohmann::json minimal_tokenizer_json() {
  nlohmann::json j = nlohmann::json::parse(R"({
    "version": "1.0", "added_tokens": [
      {"id": 258, "content": "<|end|>", "special": true, "lstrip": false, "rstrip": false, "single_word": false, "normalized": false},
      {"id": 259, "content": "<x>", "special": false, "lstrip": false, "rstrip": false, "single_word": false, "normalized": false}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": ""}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "ignore_merges": false, "vocab": {}, "merges": []}})");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  // GPT-2 byte symbols.
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    uint32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    j["model"]["vocab"][s] = b;
  }
  j["model"]["vocab"]["ab"] = 256;
  j["model"]["vocab"]["abab"] = 257;
  j["model"]["merges"] = nlohmann::json::array({"a b", nlohmann::json::array({"ab", "ab"})});
  return j;
}

}  // namespace

TEST(Tokenizer, GoldenLlama3Cases) {
  check_golden("llama3_tok_cases.jsonl", 1134);
}

TEST(Tokenizer, GoldenLlamaCppVocabCases) {
  check_golden("llamacpp_vocab_test.jsonl", 44);
}

TEST(Tokenizer, Llama3Metadata) {
  const Tokenizer& t = llama3();
  EXPECT_EQ(t.vocab_size(), 128256);
  EXPECT_EQ(t.bos_id(), 128000);
  EXPECT_FALSE(t.add_bos_by_default());  // this tokenizer.json revision has a ByteLevel post-processor
  EXPECT_TRUE(t.clean_up_tokenization_spaces());
  EXPECT_EQ(t.token_id("<|eot_id|>"), 128009);
  EXPECT_EQ(t.token_id("<|end_of_text|>"), 128001);
  EXPECT_EQ(t.token_id("system"), 9125);
  EXPECT_EQ(t.token_id("ĊĊ"), 271);
  EXPECT_EQ(t.token_id("no such token"), -1);
  EXPECT_TRUE(t.is_special(128000));
  EXPECT_TRUE(t.is_special(128255));
  EXPECT_FALSE(t.is_special(9125));
  EXPECT_FALSE(t.is_special(-1));
  EXPECT_FALSE(t.is_special(128256));
  EXPECT_EQ(t.token_bytes(271), "\n\n");
  EXPECT_EQ(t.token_bytes(128009), "<|eot_id|>");
}

TEST(Tokenizer, SpecialTokensParsedOrNot) {
  const Tokenizer& t = llama3();
  EXPECT_EQ(t.encode("<|eot_id|>"), (std::vector<int32_t>{128009}));
  EXPECT_EQ(t.encode("a<|start_header_id|>user<|end_header_id|>\n\n"),
            (std::vector<int32_t>{64, 128006, 882, 128007, 271}));
  auto plain = t.encode("<|eot_id|>", /*parse_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_LT(id, 128000);
  EXPECT_EQ(t.decode(plain), "<|eot_id|>");
  // Near misses stay text.
  for (const char* s : {"<|eot_id|", "<|eot_id >", "<|EOT_ID|>", "<|reserved_special_token_251|>"}) {
    for (int32_t id : t.encode(s)) EXPECT_LT(id, 128000) << s;
  }
}

TEST(Tokenizer, LiteralRangesNeverBecomeSpecialTokens) {
  const Tokenizer& t = llama3();
  std::string text = "A<|eot_id|>B<|eot_id|>";
  // The first "<|eot_id|>" (bytes 1..11) is protected, the second is not.
  auto ids = t.encode(text, true, {{1, 11}});
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), 128009);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 1);
  EXPECT_EQ(t.decode(ids), text);
}

TEST(Tokenizer, DecodeSkipSpecial) {
  const Tokenizer& t = llama3();
  std::vector<int32_t> ids = {128000, 128006, 78191, 128007, 271, 9906, 1917, 128009, 128255};
  EXPECT_EQ(t.decode(ids),
            "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nHello world<|eot_id|>"
            "<|reserved_special_token_250|>");
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "assistant\n\nHello world");
  // Unknown ids are dropped, not a crash.
  EXPECT_EQ(t.decode({9906, -5, 1 << 20, 1917}), "Hello world");
}

TEST(Tokenizer, DecodeInvalidUtf8Lossy) {
  const Tokenizer& t = llama3();
  // " 🦙" is 11410 99 247 (" " f0 9f | a6 | 99): without the middle token the bytes f0 9f 99 are
  // an incomplete sequence, replaced by a single U+FFFD.
  EXPECT_EQ(t.decode({11410, 99, 247}), " 🦙");
  EXPECT_EQ(t.decode({11410, 247}), " \xEF\xBF\xBD");
  EXPECT_EQ(t.decode({247, 9906}), "\xEF\xBF\xBDHello");
}

TEST(Tokenizer, Utf8Lossy) {
  using recap::models::utf8_lossy;
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\xA6\x99"), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\xA6"), r);  // truncated: one maximal subpart
  EXPECT_EQ(utf8_lossy("\xF0\x9F\xA6x"), r + "x");
  EXPECT_EQ(utf8_lossy("\x80\x80"), r + r);          // stray continuations: one each
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), r + r);          // overlong lead byte
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);  // surrogate: E0..9F rule
  EXPECT_EQ(utf8_lossy("\xE2\x82"), r);
  EXPECT_EQ(utf8_lossy("\xFF"), r);
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), r + r + r + r);
}

TEST(Tokenizer, DecodeOutputCleansAndStrips) {
  const Tokenizer& t = llama3();
  auto ids = t.encode(" A dog , running . It 's big ! <|eot_id|>");
  EXPECT_EQ(t.decode_output(ids), "A dog, running. It's big!");
  // Replacements apply in order: " ?" first, then " ' ", then " n't".
  EXPECT_EQ(recap::models::clean_up_tokenization("do n't ' x ' ?"), "don't'x '?");
  EXPECT_EQ(recap::models::strip_python_whitespace("\x1f \u3000 x y\n\t"), "x y");
}

TEST(Tokenizer, UnicodeClasses) {
  using namespace recap::models::unicode;
  EXPECT_EQ(classify('a'), kLetter);
  EXPECT_EQ(classify('7'), kNumber);
  EXPECT_EQ(classify(' '), kWhitespace);
  EXPECT_EQ(classify(0x1C), kOther);  // not \s, although Python's isspace() says so
  EXPECT_EQ(classify(0x85), kWhitespace);
  EXPECT_EQ(classify(0x3000), kWhitespace);
  EXPECT_EQ(classify(0x4E00), kLetter);
  EXPECT_EQ(classify(0xBD), kNumber);  // ½
  EXPECT_EQ(classify(0x1F999), kOther);
  EXPECT_EQ(classify(0x200B), kOther);
}

TEST(Tokenizer, MinimalTokenizerMergesBothFormats) {
  fs::path dir = temp_dir() / "minimal";
  fs::create_directories(dir);
  auto path = write_file(dir / "tokenizer.json", minimal_tokenizer_json().dump());
  Tokenizer t = Tokenizer::from_file(path);
  EXPECT_EQ(t.vocab_size(), 260);
  EXPECT_TRUE(t.add_bos_by_default());
  EXPECT_EQ(t.bos_id(), -1);  // no <|begin_of_text|> and no config
  EXPECT_EQ(t.encode("abab"), (std::vector<int32_t>{257}));
  EXPECT_EQ(t.encode("ababa"), (std::vector<int32_t>{257, 'a'}));
  EXPECT_EQ(t.encode("abc<|end|>ab<x>"), (std::vector<int32_t>{256, 'c', 258, 256, 259}));
  // parse_special=false: special added tokens are text, non-special ones still match.
  auto ids = t.encode("<|end|><x>", false);
  EXPECT_EQ(ids.back(), 259);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 258), 0);
  EXPECT_EQ(t.decode(t.encode("abc<|end|>"), true), "abc");
  fs::remove_all(dir);
}

TEST(Tokenizer, ErrorsNameFileAndProblem) {
  fs::path dir = temp_dir() / "errors";
  fs::create_directories(dir);
  std::string missing = (dir / "nope.json").string();
  EXPECT_NE(error_of(missing).find("cannot open tokenizer file " + missing), std::string::npos)
      << error_of(missing);

  auto malformed = write_file(dir / "malformed.json", "{\"model\": {\"vocab\": ");
  EXPECT_NE(error_of(malformed).find(malformed + ": malformed JSON"), std::string::npos)
      << error_of(malformed);

  auto j = minimal_tokenizer_json();
  j["model"].erase("vocab");
  auto no_vocab = write_file(dir / "no_vocab.json", j.dump());
  EXPECT_NE(error_of(no_vocab).find(no_vocab + ": missing model.vocab"), std::string::npos)
      << error_of(no_vocab);

  j = minimal_tokenizer_json();
  j["model"]["merges"].push_back("a zz");
  auto bad_merge = write_file(dir / "bad_merge.json", j.dump());
  EXPECT_NE(error_of(bad_merge).find("model.merges[2] uses a token missing from the vocab: \"zz\""),
            std::string::npos)
      << error_of(bad_merge);

  j = minimal_tokenizer_json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  auto bad_regex = write_file(dir / "bad_regex.json", j.dump());
  EXPECT_NE(error_of(bad_regex).find("not the Llama-3 regex"), std::string::npos) << error_of(bad_regex);

  j = minimal_tokenizer_json();
  j["model"]["vocab"].erase("a");
  auto no_byte = write_file(dir / "no_byte.json", j.dump());
  EXPECT_NE(error_of(no_byte).find("lacks the byte symbol"), std::string::npos) << error_of(no_byte);

  auto not_object = write_file(dir / "array.json", "[1,2]");
  EXPECT_NE(error_of(not_object).find("expected an object"), std::string::npos) << error_of(not_object);

  EXPECT_NE(error_of(dir.string()).find("is a directory"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Tokenizer, FindTokenizer) {
  using recap::models::find_tokenizer;
  fs::path dir = temp_dir() / "weights";
  fs::create_directories(dir);
  try {
    find_tokenizer(dir.string(), "");
    ADD_FAILURE() << "expected an error";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("Meta-Llama-3-8B-Instruct"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(find_tokenizer(dir.string(), (dir / "missing.json").string()), TokenizerError);
  EXPECT_EQ(find_tokenizer(dir.string(), kTokenizerJson), kTokenizerJson);
  write_file(dir / "tokenizer.json", "{}");
  EXPECT_EQ(find_tokenizer(dir.string(), ""), (dir / "tokenizer.json").string());
  EXPECT_EQ(find_tokenizer(dir.string(), kTokenizerJson), kTokenizerJson);  // explicit wins
  fs::remove_all(dir);
}

TEST(Tokenizer, PreTokenizerRegexSemantics) {
  using recap::models::llama3_pre_tokenize;
  auto split = [](std::string_view s) {
    std::vector<std::string> out;
    for (auto p : llama3_pre_tokenize(s)) out.emplace_back(p);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split(""), V{});
  EXPECT_EQ(split("Hello  world"), (V{"Hello", " ", " world"}));  // \s+(?!\S) leaves one space
  EXPECT_EQ(split("abc   "), (V{"abc", "   "}));                  // at the end: the whole run
  EXPECT_EQ(split("a\n\n b"), (V{"a", "\n\n", " b"}));            // \s*[\r\n]+ ends at the last LF
  EXPECT_EQ(split(" \n  x"), (V{" \n", " ", " x"}));
  EXPECT_EQ(split("1234567"), (V{"123", "456", "7"}));                  // \p{N}{1,3}
  EXPECT_EQ(split("x'S'LL'd'Ve"), (V{"x", "'S", "'LL", "'d", "'Ve"}));  // (?i:...) contractions
  EXPECT_EQ(split("x'ſ"), (V{"x", "'ſ"}));                              // U+017F folds to s (Oniguruma)
  EXPECT_EQ(split("x'q"), (V{"x", "'q"}));                              // [^\r\n\p{L}\p{N}]?\p{L}+
  EXPECT_EQ(split(" ...\n\nok"), (V{" ...\n\n", "ok"}));                // " ?[^\s\p{L}\p{N}]+[\r\n]*"
  // \s is White_Space: U+3000 is a space, U+001C is not (unlike Python's isspace()).
  EXPECT_EQ(split("\u3000!"), (V{"\u3000", "!"}));
  EXPECT_EQ(split("\x1c!"), (V{"\x1c!"}));
  EXPECT_EQ(split("\u3000x"), (V{"\u3000x"}));
  // Invalid UTF-8 bytes are characters of class "other"; the pieces still tile the text.
  EXPECT_EQ(split("a\xff\xfe b"), (V{"a", "\xff\xfe", " b"}));
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
  const Tokenizer& t = llama3();
  auto cases = load_cases(kData + "/tokenizer/llama3_tok_cases.jsonl");
  std::vector<std::vector<std::vector<int32_t>>> results(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < results.size(); ++k)
    threads.emplace_back([&, k] {
      for (const auto& c : cases) results[k].push_back(t.encode(c.text));
    });
  for (auto& th : threads) th.join();
  for (const auto& r : results) {
    ASSERT_EQ(r.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(r[i], cases[i].ids) << cases[i].label;
  }
}

TEST(Tokenizer, RandomTextRoundTripsAndRandomIdsDecode) {
  const Tokenizer& t = llama3();
  std::mt19937 rng(1234);
  // Code points from ASCII, Latin, CJK, emoji, spaces of every kind, and controls.
  const uint32_t pool[] = {'a',    'Z',    '0',     '9',    ' ',    '\n',   '\r',   '\t',    '\'',
                           '.',    '<',    '|',     '>',    0x1C,   0x85,   0xA0,   0xE9,    0x17F,
                           0x3000, 0x4E2D, 0x1F999, 0x200D, 0xFE0F, 0x0663, 0x2028, 0x10FFFF};
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) {
      uint32_t cp = pool[rng() % (sizeof(pool) / sizeof(pool[0]))];
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else {
        s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
    }
    auto ids = t.encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
    EXPECT_EQ(t.decode(ids), s) << nlohmann::json(s).dump();
    // Pre-tokenizer pieces tile the text.
    size_t total = 0;
    for (auto p : recap::models::llama3_pre_tokenize(s)) total += p.size();
    EXPECT_EQ(total, s.size());
  }
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<int32_t> ids;
    for (int k = 0; k < 20; ++k) ids.push_back(static_cast<int32_t>(rng() % 130000) - 100);
    std::string text = t.decode(ids);
    EXPECT_EQ(recap::models::utf8_lossy(text), text);  // always valid UTF-8
  }
}
