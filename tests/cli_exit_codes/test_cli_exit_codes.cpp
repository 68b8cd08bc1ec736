// Exit codes of every recap-engine subcommand, run the way a user meets them (README "Exit
// codes"; tools/main.cpp maps every error through engine::exit_code_for): for each subcommand a
// usage error, a missing weights folder and a malformed config.json exit 2 naming what is
// wrong; a failure while doing the work exits 1; a signal during the work exits 75 and leaves
// no partial output. Each check asserts the exact code and the key part of the message.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <string>
#include <vector>

#include "../caption/cli_util.h"
#include "io/fileutil.h"

using namespace recap::testing;
namespace fs = std::filesystem;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kModel = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImage = kData + "/tiny/images/gray_square.jpg";
const std::string kBin = RECAP_BIN;

// Runs `args` with stdout and stderr captured separately (stderr carries the error line).
struct Outcome {
  int rc = -1;
  std::string out, err;
};

Outcome run(const std::vector<std::string>& args, const std::string& stdout_to = "") {
  const std::string dir = make_temp_dir("exitcodes_run");
  const std::string out = stdout_to.empty() ? dir + "/stdout" : stdout_to;
  const RunResult r = run_cmd(
      {"/bin/sh", "-c", join_args(args) + " >" + shell_quote(out) + " 2>" + shell_quote(dir + "/stderr")});
  Outcome o;
  o.rc = r.rc;
  if (stdout_to.empty()) o.out = io::read_file(dir + "/stdout");
  o.err = io::read_file(dir + "/stderr");
  fs::remove_all(dir);
  return o;
}

// A copy of the tiny model whose config.json is cut mid-object (a truncated download).
std::string model_with_malformed_config(const std::string& tag) {
  const std::string dir = make_temp_dir(tag.c_str()) + "/model";
  fs::copy(kModel, dir, fs::copy_options::recursive);
  const std::string cfg = io::read_file(dir + "/config.json");
  io::atomic_write(dir + "/config.json", cfg.substr(0, cfg.size() / 2));
  return dir;
}

// The error line main.cpp prints for subcommand `sub`, and the message must name `what`.
void expect_error(const Outcome& o, int code, const std::string& sub, const std::string& what) {
  EXPECT_EQ(o.rc, code) << o.err;
  EXPECT_EQ(o.err.rfind("recap-engine " + sub + ": error: "), o.err.find("recap-engine " + sub + ": error: "))
      << o.err;
  EXPECT_NE(o.err.find("recap-engine " + sub + ": error: "), std::string::npos) << o.err;
  EXPECT_NE(o.err.find(what), std::string::npos) << "expected '" << what << "' in:\n" << o.err;
}

struct TempDir {
  std::string path = make_temp_dir("exitcodes");
  ~TempDir() { fs::remove_all(path); }
};

// A background run of the CLI whose output goes to a log; killed if the test ends early.
struct Background {
  pid_t pid = -1;
  std::string log;
  Background(const std::vector<std::string>& args, std::string log_path) : log(std::move(log_path)) {
    pid = spawn_cmd(args, log);
  }
  std::string text() const {
    std::error_code ec;
    return fs::exists(log, ec) ? io::read_file(log) : std::string();
  }
  bool wait_for(const std::string& line) const {
    return wait_until([&] { return text().find(line) != std::string::npos; });
  }
  int signal_and_wait(int sig) {
    ::kill(pid, sig);
    const int rc = wait_exit(pid);
    pid = -1;
    return rc;
  }
  ~Background() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait_exit(pid);
    }
  }
};

// ------------------------------------------------------------------------------------ bench

TEST(ExitCodesBench, UsageErrorIsTwo) {
  expect_error(run({kBin, "bench", "--weights", kModel, "--max-batch", "0"}), 2, "bench",
               "--max-batch must be >= 1");
  expect_error(run({kBin, "bench", "--weights", kModel, "--precision", "int3"}), 2, "bench",
               "--precision: unknown weight format 'int3'");
  expect_error(run({kBin, "bench"}), 2, "bench", "give exactly one of --synthetic NAME or --weights DIR");
}

// The README documents 2 for an unusable weights directory; bench exited 1 before issue 15.
TEST(ExitCodesBench, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run({kBin, "bench", "--weights", missing, "--quick"}), 2, "bench", missing);
}

TEST(ExitCodesBench, MalformedConfigIsTwo) {
  const std::string m = model_with_malformed_config("exitcodes_bench");
  expect_error(run({kBin, "bench", "--weights", m, "--quick"}), 2, "bench",
               m + "/config.json: malformed JSON");
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesBench, ReportThatCannotBeWrittenIsOne) {
  // --caption-images 0 keeps the report under stdio's buffer, so the failure shows at the final
  // flush with its errno; a longer report fails mid-run and main only learns "write error"
  // (exit 1 all the same).
  const Outcome o =
      run({kBin, "bench", "--weights", kModel, "--quick", "--json", "--max-batch", "1", "--new-tokens", "1",
           "--prompt-tokens", "1", "--images", "1", "--caption-images", "0", "--threads", "1"},
          "/dev/full");
  expect_error(o, 1, "bench", "writing the standard output: No space left on device");
}

TEST(ExitCodesBench, SignalDuringTheRunIsSeventyFive) {
  TempDir t;
  // --caption-images 0: the synthetic model has no tokenizer, and the phase is not what is tested.
  Background job(
      {kBin, "bench", "--synthetic", "llava-llama3-8b", "--quick", "--caption-images", "0", "--threads", "1"},
      t.path + "/log");
  ASSERT_GT(job.pid, 0);
  ASSERT_TRUE(job.wait_for("measuring machine limits")) << job.text();
  EXPECT_EQ(job.signal_and_wait(SIGTERM), 75) << job.text();
  EXPECT_NE(job.text().find("stop requested"), std::string::npos) << job.text();
}

// ------------------------------------------------------------------------------- eval-quant

std::vector<std::string> eval_quant(const std::string& weights) {
  return {kBin,        "eval-quant", "--weights",        weights, "--tokenizer", kTokenizer,
          "--threads", "1",          "--max-new-tokens", "2"};
}

TEST(ExitCodesEvalQuant, UsageErrorIsTwo) {
  auto a = eval_quant(kModel);
  a.insert(a.end(), {"--reference", "int8"});
  expect_error(run(a), 2, "eval-quant", "--reference 'int8': expected one of f32, bf16");
}

TEST(ExitCodesEvalQuant, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run(eval_quant(missing)), 2, "eval-quant", missing);
}

TEST(ExitCodesEvalQuant, MalformedConfigIsTwo) {
  const std::string m = model_with_malformed_config("exitcodes_evalq");
  expect_error(run(eval_quant(m)), 2, "eval-quant", m + "/config.json: malformed JSON");
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesEvalQuant, ReportThatCannotBeWrittenIsOne) {
  TempDir t;
  io::atomic_write(t.path + "/one.txt", kImage + "\n");
  auto a = eval_quant(kModel);
  a.insert(a.end(), {"--list", t.path + "/one.txt", "--precision", "int8", "--reference", "f32", "--json"});
  expect_error(run(a, "/dev/full"), 1, "eval-quant", "writing the standard output: No space left on device");
}

// ---------------------------------------------------------------------------------- inspect

TEST(ExitCodesInspect, UsageErrorIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_vision_config";
  expect_error(run({kBin, "inspect", "--weights", kModel, "--vision-config", missing}), 2, "inspect",
               missing);
  EXPECT_EQ(run({kBin, "inspect", "--weights", kModel, "--no-such-flag"}).rc, 2);
}

TEST(ExitCodesInspect, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run({kBin, "inspect", "--weights", missing}), 2, "inspect", missing);
}

TEST(ExitCodesInspect, MalformedConfigIsTwo) {
  const std::string m = model_with_malformed_config("exitcodes_inspect");
  expect_error(run({kBin, "inspect", "--weights", m}), 2, "inspect", m + "/config.json: malformed JSON");
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesInspect, ReportThatCannotBeWrittenIsOne) {
  // inspect flushes its report itself (before a problem line), so the cause is not known here.
  expect_error(run({kBin, "inspect", "--weights", kModel, "--json"}, "/dev/full"), 1, "inspect",
               "writing the standard output: ");
}

// ------------------------------------------------------------------------------ merge-stats

TEST(ExitCodesMergeStats, UsageErrorIsTwo) {
  TempDir t;
  expect_error(run({kBin, "merge-stats", "--out", t.path, "--shards", "1"}), 2, "merge-stats",
               "--shards/--shards-file select among the inputs: pass --list or --input too");
  EXPECT_EQ(run({kBin, "merge-stats", "--out", t.path, "--samples-per-shard", "many"}).rc, 2);
}

// merge-stats has no weights: its folder is the caption output directory.
TEST(ExitCodesMergeStats, MissingOutputFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_out";
  expect_error(run({kBin, "merge-stats", "--out", missing}), 2, "merge-stats",
               missing + ": cannot open the output directory");
}

TEST(ExitCodesMergeStats, MalformedRunPlanIsTwo) {
  TempDir t;
  io::atomic_write(t.path + "/_recap_plan.json", "{\"shards\": {\"00000\": ");
  expect_error(run({kBin, "merge-stats", "--out", t.path}), 2, "merge-stats",
               t.path + "/_recap_plan.json: not a readable run plan");
}

TEST(ExitCodesMergeStats, IncompleteOutputIsOneAndAnUnwritableTodoFileIsOne) {
  TempDir t;
  io::atomic_write(t.path + "/.00000.log.partial", "");
  const Outcome o = run({kBin, "merge-stats", "--out", t.path});
  EXPECT_EQ(o.rc, 1) << o.out << o.err;
  EXPECT_EQ(o.err, "");  // not done is an outcome, not an error: the summary says which
  EXPECT_NE(o.out.find("00000"), std::string::npos) << o.out;
  // The todo file cannot be written (its directory is a file): a runtime failure.
  io::atomic_write(t.path + "/file", "");
  expect_error(run({kBin, "merge-stats", "--out", t.path, "--todo-file", t.path + "/file/todo.txt"}), 1,
               "merge-stats", t.path + "/file/");
  EXPECT_FALSE(fs::exists(t.path + "/file/todo.txt"));
}

// ------------------------------------------------------------------------------------- plan

TEST(ExitCodesPlan, UsageErrorIsTwo) {
  expect_error(run({kBin, "plan", "--weights", kModel, "--max-batch", "-1", "--no-calibration"}), 2, "plan",
               "--max-batch must be at least 1 (or 0: chosen from memory)");
  expect_error(run({kBin, "plan", "--weights", kModel, "--kv-dtype", "f8", "--no-calibration"}), 2, "plan",
               "unknown KV cache dtype 'f8'");
}

TEST(ExitCodesPlan, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run({kBin, "plan", "--weights", missing, "--no-calibration"}), 2, "plan", missing);
}

TEST(ExitCodesPlan, MalformedConfigIsTwo) {
  const std::string m = model_with_malformed_config("exitcodes_plan");
  expect_error(run({kBin, "plan", "--weights", m, "--no-calibration"}), 2, "plan",
               m + "/config.json: malformed JSON");
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesPlan, ReportThatCannotBeWrittenIsOne) {
  expect_error(run({kBin, "plan", "--weights", kModel, "--no-calibration", "--json"}, "/dev/full"), 1, "plan",
               "writing the standard output: No space left on device");
}

// --------------------------------------------------------------------------------- quantize

TEST(ExitCodesQuantize, UsageErrorIsTwo) {
  TempDir t;
  expect_error(run({kBin, "quantize", "--weights", kModel, "--precision", "int5", "--out", t.path + "/c"}), 2,
               "quantize", "--precision: unknown weight format 'int5'");
  EXPECT_FALSE(fs::exists(t.path + "/c"));
}

TEST(ExitCodesQuantize, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run({kBin, "quantize", "--weights", missing, "--out", t.path + "/c"}), 2, "quantize", missing);
  EXPECT_FALSE(fs::exists(t.path + "/c"));
}

TEST(ExitCodesQuantize, MalformedConfigIsTwo) {
  TempDir t;
  const std::string m = model_with_malformed_config("exitcodes_quant");
  expect_error(run({kBin, "quantize", "--weights", m, "--out", t.path + "/c"}), 2, "quantize",
               m + "/config.json: malformed JSON");
  EXPECT_FALSE(fs::exists(t.path + "/c"));
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesQuantize, UnwritableOutputIsOne) {
  TempDir t;
  io::atomic_write(t.path + "/file", "");
  expect_error(
      run({kBin, "quantize", "--weights", kModel, "--precision", "int8", "--out", t.path + "/file/c"}), 1,
      "quantize", t.path + "/file/c: cannot create directory");
}

// A signal while packing: exit 75, no cache, no temporary file, no output directory left.
TEST(ExitCodesQuantize, SignalWhileWritingIsSeventyFiveAndLeavesNothing) {
  TempDir t;
  const std::string out = t.path + "/cache";
  Background job({kBin, "quantize", "--synthetic", "llava-llama3-8b", "--precision", "int8", "--threads", "1",
                  "--out", out},
                 t.path + "/log");
  ASSERT_GT(job.pid, 0);
  ASSERT_TRUE(job.wait_for("[quantize] 1/")) << job.text();
  const int rc = job.signal_and_wait(SIGTERM);
  const std::string text = job.text();
  EXPECT_EQ(rc, 75) << text;
  EXPECT_NE(text.find("recap-engine quantize: error: stopped by a signal after "), std::string::npos) << text;
  EXPECT_NE(text.find("no cache was written to " + out), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(out)) << "a partial output was left behind";
}

// --------------------------------------------------------------------------------- tokenize

TEST(ExitCodesTokenize, UsageErrorIsTwo) {
  expect_error(run({kBin, "tokenize", "--tokenizer", kTokenizer, "--decode", "--text", "1,x"}), 2, "tokenize",
               "--text with --decode takes comma-separated ids");
  TempDir t;
  const std::string missing = t.path + "/no_such.jsonl";
  expect_error(run({kBin, "tokenize", "--tokenizer", kTokenizer, "--jsonl", missing}), 2, "tokenize",
               missing + ": cannot open (--jsonl)");
}

// tokenize has no weights folder: its one model file is the tokenizer.
TEST(ExitCodesTokenize, MissingTokenizerIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such/tokenizer.json";
  const Outcome o = run({kBin, "tokenize", "--tokenizer", missing, "--text", "a"});
  EXPECT_EQ(o.rc, 2) << o.err;
  EXPECT_NE(o.err.find(missing), std::string::npos) << o.err;
}

TEST(ExitCodesTokenize, MalformedTokenizerIsTwo) {
  TempDir t;
  const std::string tok = io::read_file(kTokenizer);
  io::atomic_write(t.path + "/tokenizer.json", tok.substr(0, tok.size() / 2));
  expect_error(run({kBin, "tokenize", "--tokenizer", t.path + "/tokenizer.json", "--text", "a"}), 2,
               "tokenize", t.path + "/tokenizer.json");
}

TEST(ExitCodesTokenize, MalformedLinesAndAnUnwritableOutputAreOne) {
  TempDir t;
  io::atomic_write(t.path + "/in.jsonl", "{\"text\": \"a\"}\n{\"text\": \n");
  const Outcome o = run({kBin, "tokenize", "--tokenizer", kTokenizer, "--jsonl", t.path + "/in.jsonl"});
  expect_error(o, 1, "tokenize", "1 of 2 lines of " + t.path + "/in.jsonl were malformed");
  EXPECT_EQ(o.out.find("{\"text\":\"a\",\"ids\":["), 0u) << o.out;  // the good line was written
  expect_error(run({kBin, "tokenize", "--tokenizer", kTokenizer, "--text", "a"}, "/dev/full"), 1, "tokenize",
               "writing the standard output: No space left on device");
}

// ------------------------------------------------------------------------------------ trace

std::vector<std::string> trace(const std::string& weights, const std::string& out) {
  return {kBin, "trace", "--weights", weights, "--input-ids=1,2", "--max-new-tokens", "1", "--out", out};
}

TEST(ExitCodesTrace, UsageErrorIsTwo) {
  TempDir t;
  expect_error(
      run({kBin, "trace", "--weights", kModel, "--input-ids=1,x", "--out", t.path + "/t.safetensors"}), 2,
      "trace", "--input-ids: 'x' is not an integer");
  expect_error(run({kBin, "trace", "--weights", kModel, "--image", t.path + "/missing.png", "--out",
                    t.path + "/t.safetensors"}),
               2, "trace", t.path + "/missing.png");
  EXPECT_FALSE(fs::exists(t.path + "/t.safetensors"));
}

TEST(ExitCodesTrace, MissingWeightsFolderIsTwo) {
  TempDir t;
  const std::string missing = t.path + "/no_such_model";
  expect_error(run(trace(missing, t.path + "/t.safetensors")), 2, "trace", missing);
}

TEST(ExitCodesTrace, MalformedConfigIsTwo) {
  TempDir t;
  const std::string m = model_with_malformed_config("exitcodes_trace");
  expect_error(run(trace(m, t.path + "/t.safetensors")), 2, "trace", m + "/config.json: malformed JSON");
  fs::remove_all(fs::path(m).parent_path());
}

TEST(ExitCodesTrace, UnwritableOutputIsOne) {
  TempDir t;
  io::atomic_write(t.path + "/file", "");
  expect_error(run(trace(kModel, t.path + "/file/t.safetensors")), 1, "trace",
               t.path + "/file/t.safetensors");
}

// ---------------------------------------------------------------------------------- caption

// caption prints its own error lines (engine/caption_pipeline.cpp); the codes are the same.
std::vector<std::string> caption(const std::string& weights, const std::string& dir) {
  io::atomic_write(dir + "/l.jsonl", "{\"url\": \"" + kImage + "\"}\n");
  return {kBin,        "caption", "--weights",        weights, "--tokenizer",
          kTokenizer,  "--list",  dir + "/l.jsonl",   "--out", dir + "/out",
          "--threads", "1",       "--max-new-tokens", "2"};
}

TEST(ExitCodesCaption, UsageMissingWeightsAndMalformedConfigAreTwo) {
  TempDir t;
  auto a = caption(kModel, t.path);
  a.insert(a.end(), {"--max-batch", "-1"});  // 0 is "chosen from memory"
  Outcome o = run(a);
  EXPECT_EQ(o.rc, 2) << o.err;
  EXPECT_NE(o.err.find("--max-batch must be at least 1 (or 0: chosen from memory)"), std::string::npos)
      << o.err;
  const std::string missing = t.path + "/no_such_model";
  o = run(caption(missing, t.path));
  EXPECT_EQ(o.rc, 2) << o.err;
  EXPECT_NE(o.err.find(missing), std::string::npos) << o.err;
  const std::string m = model_with_malformed_config("exitcodes_caption");
  o = run(caption(m, t.path));
  EXPECT_EQ(o.rc, 2) << o.err;
  EXPECT_NE(o.err.find(m + "/config.json: malformed JSON"), std::string::npos) << o.err;
  fs::remove_all(fs::path(m).parent_path());
}

// ---------------------------------------------------------------------------------- the CLI

TEST(ExitCodesCli, ParseErrorsAreTwoAndHelpIsZero) {
  EXPECT_EQ(run({kBin}).rc, 2);
  EXPECT_EQ(run({kBin, "no-such-subcommand"}).rc, 2);
  EXPECT_EQ(run({kBin, "plan", "--weights", kModel, "--max-batch", "eight"}).rc, 2);
  const Outcome help = run({kBin, "quantize", "--help"});
  EXPECT_EQ(help.rc, 0) << help.err;
  EXPECT_NE(help.out.find("--out"), std::string::npos) << help.out;
  EXPECT_EQ(run({kBin, "--help"}).rc, 0);
  EXPECT_EQ(run({kBin, "--version"}).rc, 0);
}

}  // namespace
