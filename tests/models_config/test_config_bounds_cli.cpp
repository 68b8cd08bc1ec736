// Config values out of range (issue 14) exit 2 from `recap-engine inspect` and `recap-engine
// caption` with one message naming the file, the key, the value and the allowed range, before
// anything is sized by them. Each child runs under RLIMIT_AS 2 GiB: a value that reached an
// allocation (a 1e9-layer model, a 1e12-position RoPE table) would die of std::bad_alloc (exit 1)
// instead of exiting 2.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "config_test_util.h"

namespace {

using namespace recap::testutil;

const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";

struct CliRun {
  int code = -1;
  std::string out;  // stdout + stderr
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs RECAP_BIN with `args` under `ulimit -v` 2 GiB.
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

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct BadValue {
  const char* key;    // top-level key of the tiny LLaVA config.json
  const char* value;  // JSON text written in its place
  const char* what;   // the rest of the message after "<file>: "
};

// A copy of the tiny LLaVA checkpoint whose config.json has `key` set to the raw text `value`.
std::string model_with(const TempDir& tmp, const BadValue& c) {
  const std::string dir = copy_with_config(tmp, "llava_orig_with_vt_fp32", [](json&) {});
  const std::string path = dir + "/config.json";
  const std::string text = slurp(path);
  // Replace the value text after "key": up to the end of its line (without the comma).
  std::string edited = text;
  std::string entry(1, '"');
  entry.append(c.key).append("\": ");
  const size_t at = edited.find(entry);
  EXPECT_NE(at, std::string::npos) << c.key << " not found in " << path;
  if (at != std::string::npos) {
    const size_t begin = at + entry.size();
    const size_t end = edited.find_first_of(",\n", begin);
    edited.replace(begin, end - begin, c.value);
  }
  write_text(path, edited);
  return dir;
}

// c.what with "{LINE}" replaced by the config.json line holding c.key (parse errors give it).
std::string expected_what(const std::string& dir, const BadValue& c) {
  std::istringstream in(slurp(dir + "/config.json"));
  std::string line, what = c.what;
  std::string needle(1, '"');
  needle.append(c.key).push_back('"');
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find(needle) != std::string::npos) break;
  }
  if (const size_t at = what.find("{LINE}"); at != std::string::npos)
    what.replace(at, 6, std::to_string(number));
  return what;
}

class ConfigBounds : public ::testing::TestWithParam<BadValue> {};

TEST_P(ConfigBounds, InspectExits2NamingFileKeyValueRange) {
  const BadValue& c = GetParam();
  TempDir tmp;
  const std::string dir = model_with(tmp, c);
  const CliRun r = run_limited("inspect --weights " + quote(dir));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out, "recap-engine inspect: error: " + dir + "/config.json: " + expected_what(dir, c) + "\n");
}

TEST_P(ConfigBounds, CaptionExits2NamingFileKeyValueRange) {
  const BadValue& c = GetParam();
  TempDir tmp;
  const std::string dir = model_with(tmp, c);
  write_text(tmp.path() + "/l.jsonl",
             "{\"url\": \"" + std::string(RECAP_TEST_DATA) + "/tiny/images/gray_square.jpg\"}\n");
  const CliRun r = run_limited("caption --weights " + quote(dir) + " --tokenizer " + quote(kTokenizer) +
                               " --threads 1 --list " + quote(tmp.path() + "/l.jsonl") + " --out " +
                               quote(tmp.path() + "/out"));
  EXPECT_EQ(r.code, 2) << r.out;
  const std::string expected = "caption: error: " + dir + "/config.json: " + expected_what(dir, c) + "\n";
  ASSERT_GE(r.out.size(), expected.size()) << r.out;
  EXPECT_EQ(r.out.substr(r.out.size() - expected.size()), expected) << r.out;
  EXPECT_FALSE(fs::exists(tmp.path() + "/out/00000.tar"));
}

INSTANTIATE_TEST_SUITE_P(
    Values, ConfigBounds,
    ::testing::Values(
        BadValue{"num_hidden_layers", "1e9", "num_hidden_layers = 1000000000.0: out of range [1, 1024]"},
        BadValue{"max_position_embeddings", "1e12",
                 "max_position_embeddings = 1000000000000.0: out of range [1, 1048576]"},
        BadValue{"max_position_embeddings", "1000000000000",
                 "max_position_embeddings = 1000000000000: out of range [1, 1048576]"},
        BadValue{"hidden_size", "0", "hidden_size = 0: out of range [1, 65536]"},
        BadValue{"hidden_size", "-1", "hidden_size = -1: out of range [1, 65536]"},
        BadValue{"intermediate_size", "4000000000",
                 "intermediate_size = 4000000000: out of range [1, 262144]"},
        BadValue{"vocab_size", "99999999999", "vocab_size = 99999999999: out of range [1, 4194304]"},
        BadValue{"rms_norm_eps", "-1e-05", "rms_norm_eps = -1e-05: out of range (0, 1]"},
        BadValue{"rms_norm_eps", "0", "rms_norm_eps = 0: out of range (0, 1]"},
        BadValue{"rope_theta", "-500000.0", "rope_theta = -500000.0: out of range (0, 1e+12]"},
        BadValue{"rope_theta", "1e300", "rope_theta = 1e+300: out of range (0, 1e+12]"},
        BadValue{"rope_theta", "1e999",
                 "malformed JSON at rope_theta: [json.exception.out_of_range.406] number overflow parsing "
                 "'1e999' (NaN, Infinity and numbers beyond double range are not valid JSON)"},
        BadValue{
            "rms_norm_eps", "NaN",
            "malformed JSON at rms_norm_eps: [json.exception.parse_error.101] parse error at line {LINE}, "
            "column 19: syntax error while parsing value - invalid literal; last read: '\"rms_norm_eps\": "
            "N' (NaN, Infinity and numbers beyond double range are not "
            "valid JSON)"}),
    [](const ::testing::TestParamInfo<BadValue>& i) { return "Case" + std::to_string(i.index); });

// Dims each in range whose product is absurd: the parameter count is checked before allocation.
TEST(ConfigBoundsImplied, ParameterCountOverTheLimitExits2) {
  TempDir tmp;
  const std::string dir = copy_with_config(tmp, "llava_orig_with_vt_fp32", [](json& c) {
    c["hidden_size"] = 65536;
    c["intermediate_size"] = 262144;
    c["num_hidden_layers"] = 1024;
    c["num_attention_heads"] = 512;
    c["num_key_value_heads"] = 512;
  });
  const CliRun r = run_limited("inspect --weights " + quote(dir));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out,
            "recap-engine inspect: error: " + dir +
                "/config.json: the config implies a parameter count of 7.03732e+13, more than the limit "
                "2e+11 (text: hidden_size 65536, intermediate_size 262144, num_hidden_layers 1024, vocab "
                "1024, max_position_embeddings 8192; vision: hidden_size 64, num_hidden_layers 2)\n");
}

}  // namespace
