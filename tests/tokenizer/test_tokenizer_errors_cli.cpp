// A hostile or broken tokenizer.json (issue 14) is a configuration error: `recap-engine caption`
// and `recap-engine tokenize` exit 2 with one message naming the file and what is wrong, never a
// raw JSON exception (exit 1) or an allocation sized by a huge id.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";

struct CliRun {
  int code = -1;
  std::string out;  // stdout + stderr
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

CliRun run_limited(const std::string& args) {
  const std::string cmd = "ulimit -v 2097152; exec " + quote(RECAP_BIN) + " " + args + " 2>&1";
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "recap_tokerr_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

json demo_tokenizer() {
  std::ifstream in(kTokenizer);
  return json::parse(in);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

struct BadTokenizer {
  const char* name;
  std::string text;  // the whole tokenizer.json
  std::string what;  // the message after "<file>: "
};

std::vector<BadTokenizer> cases() {
  std::vector<BadTokenizer> out;
  {
    // A vocab id beyond double range: json throws out_of_range (number overflow) while parsing.
    json j = demo_tokenizer();
    j["model"]["vocab"]["hello"] = "@ID@";
    std::string text = j.dump();
    text.replace(text.find("\"@ID@\""), 6, "1e999");
    out.push_back({"vocab_id_number_overflow", text,
                   "malformed JSON: [json.exception.out_of_range.406] number overflow parsing '1e999'"});
  }
  {
    // An added token id that does not fit in 32 bits.
    json j = demo_tokenizer();
    j["added_tokens"][1]["id"] = 4294967297ull;
    out.push_back({"added_id_over_int32", j.dump(),
                   "added token id 4294967297 out of range [0, 4194303]: " + j["added_tokens"][1].dump()});
  }
  {
    // An id that fits in 32 bits but would size per-id tables of ~1G entries.
    json j = demo_tokenizer();
    j["model"]["vocab"]["!"] = 1000000000;
    out.push_back(
        {"vocab_id_huge", j.dump(), "model.vocab[\"!\"] has id 1000000000, out of range [0, 4194303]"});
  }
  {
    json j = demo_tokenizer();
    j["model"]["vocab"] = json::array({1, 2, 3});
    out.push_back({"vocab_not_object", j.dump(), "model.vocab is a array, expected an object"});
  }
  {
    // A field of the wrong type that load_json reads through json::value(): no raw type_error.
    json j = demo_tokenizer();
    j["added_tokens"][0]["special"] = "yes";
    out.push_back({"special_not_bool", j.dump(),
                   "unexpected value: [json.exception.type_error.302] type must be boolean, but is string"});
  }
  return out;
}

TEST(TokenizerErrorsCli, CaptionExits2NamingTheFile) {
  for (const BadTokenizer& c : cases()) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    const std::string tok = tmp.file("tokenizer.json");
    write_text(tok, c.text);
    write_text(tmp.file("l.jsonl"), "{\"url\": \"" + kData + "/tiny/images/gray_square.jpg\"}\n");
    const CliRun r =
        run_limited("caption --weights " + quote(kWeights) + " --tokenizer " + quote(tok) +
                    " --threads 1 --list " + quote(tmp.file("l.jsonl")) + " --out " + quote(tmp.file("out")));
    EXPECT_EQ(r.code, 2) << r.out;
    const std::string expected = "caption: error: " + tok + ": " + c.what + "\n";
    ASSERT_GE(r.out.size(), expected.size()) << r.out;
    EXPECT_EQ(r.out.substr(r.out.size() - expected.size()), expected) << r.out;
  }
}

TEST(TokenizerErrorsCli, TokenizeExits2NamingTheFile) {
  for (const BadTokenizer& c : cases()) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    const std::string tok = tmp.file("tokenizer.json");
    write_text(tok, c.text);
    const CliRun r = run_limited("tokenize --tokenizer " + quote(tok) + " --text hello");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_EQ(r.out, "recap-engine tokenize: error: " + tok + ": " + c.what + "\n");
  }
}

}  // namespace
