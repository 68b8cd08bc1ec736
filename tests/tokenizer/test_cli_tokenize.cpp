// `recap-engine tokenize` end to end: ids of the golden cases, malformed lines, stdin, --decode.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kTokenizer = kData + "/llama3-tokenizer/tokenizer.json";

struct Result {
  int exit_code = -1;
  std::string out;
};

// Runs a shell command, capturing stdout (stderr goes to `err_file` when given).
Result run(const std::string& cmd) {
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir() {
  fs::path dir = fs::temp_directory_path() / ("recap_cli_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string bin() {
  return std::string("'") + RECAP_BIN + "'";
}

}  // namespace

TEST(CliTokenize, GoldenCasesFileMatch) {
  fs::path cases = kData + "/tokenizer/llama3_tok_cases.jsonl";
  fs::path dir = temp_dir();
  Result r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --jsonl '" + cases.string() + "' 2>'" +
                 (dir / "err").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << slurp(dir / "err");
  std::istringstream expected_in(slurp(cases)), got_in(r.out);
  std::string e_line, g_line;
  int n = 0;
  while (std::getline(expected_in, e_line)) {
    ASSERT_TRUE(std::getline(got_in, g_line)) << "missing output line " << n + 1;
    json e = json::parse(e_line), g = json::parse(g_line);
    EXPECT_EQ(g["text"], e["text"]) << "line " << n + 1;
    EXPECT_EQ(g["ids"], e["ids"]) << "line " << n + 1 << " " << e["text"];
    ++n;
  }
  EXPECT_EQ(n, 1134);
  EXPECT_FALSE(std::getline(got_in, g_line));
  fs::remove_all(dir);
}

TEST(CliTokenize, TextAndDecode) {
  Result r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --text 'Hello world<|eot_id|>'");
  ASSERT_EQ(r.exit_code, 0);
  json j = json::parse(r.out);
  EXPECT_EQ(j["ids"], json::array({9906, 1917, 128009}));
  EXPECT_EQ(j["text"], "Hello world<|eot_id|>");
  // The documented key order: {"text": ..., "ids": [...]}.
  EXPECT_EQ(r.out.rfind("{\"text\":", 0), 0u) << r.out;

  r = run(bin() + " tokenize --tokenizer '" + kTokenizer +
          "' --decode --skip-special --text '9906,1917,128009'");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(json::parse(r.out)["text"], "Hello world");

  // An id the vocabulary lacks is skipped (as HF's decode does) with a warning naming it.
  r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --decode --text '9906,999999' 2>&1");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("id 999999 is not in the vocabulary"), std::string::npos) << r.out;
  // Never wrapped into another id: 2^32 + 1 is not id 1.
  r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --decode --text '9906,4294967297' 2>&1");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("id 4294967297 is not in the vocabulary"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"text\":\"Hello\""), std::string::npos) << r.out;

  r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --plain --text '<|eot_id|>'");
  ASSERT_EQ(r.exit_code, 0);
  for (const auto& id : json::parse(r.out)["ids"]) EXPECT_LT(id.get<int>(), 128000);
}

TEST(CliTokenize, MalformedLinesReportedAndSkipped) {
  fs::path dir = temp_dir();
  {
    std::ofstream in(dir / "in.jsonl");
    in << "{\"text\": \"a cat\"}\n"
       << "{\"text\": broken\n"
       << "\n"
       << "{\"caption\": \"no text\"}\n"
       << "{\"text\": \" on a mat\"}\n";
  }
  std::string err = (dir / "err").string();
  Result r = run("cat '" + (dir / "in.jsonl").string() + "' | " + bin() + " tokenize --tokenizer '" +
                 kTokenizer + "' --jsonl - 2>'" + err + "'");
  EXPECT_EQ(r.exit_code, 1);
  std::istringstream out(r.out);
  std::string l1, l2, l3;
  ASSERT_TRUE(std::getline(out, l1));
  ASSERT_TRUE(std::getline(out, l2));
  EXPECT_FALSE(std::getline(out, l3));
  EXPECT_EQ(json::parse(l1)["text"], "a cat");
  EXPECT_EQ(json::parse(l2)["text"], " on a mat");
  std::string errors = slurp(err);
  EXPECT_NE(errors.find("<stdin>:2:"), std::string::npos) << errors;
  EXPECT_NE(errors.find("<stdin>:4:"), std::string::npos) << errors;
  EXPECT_EQ(errors.find("<stdin>:3:"), std::string::npos) << errors;

  r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' --jsonl '" + (dir / "in.jsonl").string() +
          "' 2>'" + err + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(slurp(err).find((dir / "in.jsonl").string() + ":2:"), std::string::npos) << slurp(err);
  fs::remove_all(dir);
}

TEST(CliTokenize, UsageAndBadTokenizer) {
  fs::path dir = temp_dir();
  std::string err = (dir / "err").string();
  Result r = run(bin() + " tokenize --tokenizer '" + kTokenizer + "' 2>'" + err + "'");
  EXPECT_EQ(r.exit_code, 2);
  { std::ofstream(dir / "bad.json") << "{\"model\": {}}"; }
  r = run(bin() + " tokenize --tokenizer '" + (dir / "bad.json").string() + "' --text x 2>'" + err + "'");
  EXPECT_EQ(r.exit_code, 2);  // an unusable tokenizer file is a configuration error
  EXPECT_EQ(slurp(err),
            "recap-engine tokenize: error: " + (dir / "bad.json").string() + ": missing model.vocab\n");
  fs::remove_all(dir);
}
