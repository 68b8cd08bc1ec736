// Tokenizer speed: load time of the 9 MB tokenizer.json, encode bytes/s on caption-like English
// text (the caption cases of tests/data/tokenizer), decode, and prompt building.
// Data: $RECAP_TOKENIZER (tokenizer.json) and $RECAP_TOKENIZER_CASES (jsonl with "text"), defaulting
// to the copies in tests/data next to this source file.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/chat_template.h"
#include "models/tokenizer.h"

namespace {

using recap::models::Tokenizer;

std::string data_path(const char* env, const char* rel) {
  if (const char* v = std::getenv(env)) return v;
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "data" / rel).string();
}

const Tokenizer& tokenizer() {
  static const Tokenizer tok =
      Tokenizer::from_file(data_path("RECAP_TOKENIZER", "llama3-tokenizer/tokenizer.json"));
  return tok;
}

// Caption-like English: the "caption" category of the golden cases (alt-text style sentences).
const std::vector<std::string>& captions() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> out;
    std::ifstream in(data_path("RECAP_TOKENIZER_CASES", "tokenizer/llama3_tok_cases.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("category", "") == "caption") out.push_back(j["text"].get<std::string>());
    }
    if (out.empty()) throw std::runtime_error("no caption cases found (set RECAP_TOKENIZER_CASES)");
    return out;
  }();
  return texts;
}

void BM_LoadTokenizerJson(benchmark::State& state) {
  std::string path = data_path("RECAP_TOKENIZER", "llama3-tokenizer/tokenizer.json");
  for (auto _ : state) {
    Tokenizer t = Tokenizer::from_file(path);
    benchmark::DoNotOptimize(t.vocab_size());
  }
}
BENCHMARK(BM_LoadTokenizerJson)->Unit(benchmark::kMillisecond)->Iterations(3);

// One encode call per caption, as the caption pipeline and `tokenize` do.
void BM_EncodeCaptions(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  const auto& texts = captions();
  size_t bytes = 0, tokens = 0;
  for (auto _ : state) {
    for (const auto& t : texts) {
      auto ids = tok.encode(t);
      tokens += ids.size();
      bytes += t.size();
      benchmark::DoNotOptimize(ids.data());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeCaptions)->Unit(benchmark::kMillisecond);

// One long text (all captions joined by newlines, repeated to ~1 MB).
void BM_EncodeLongText(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  std::string text;
  while (text.size() < (1u << 20))
    for (const auto& t : captions()) text += t + "\n";
  for (auto _ : state) {
    auto ids = tok.encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeLongText)->Unit(benchmark::kMillisecond);

void BM_DecodeCaptions(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  std::vector<std::vector<int32_t>> ids;
  size_t bytes = 0;
  for (const auto& t : captions()) {
    ids.push_back(tok.encode(t));
    bytes += t.size();
  }
  for (auto _ : state)
    for (const auto& v : ids) benchmark::DoNotOptimize(tok.decode_output(v).data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_DecodeCaptions)->Unit(benchmark::kMillisecond);

void BM_BuildDefaultPrompt(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  auto tmpl = recap::models::builtin_template("llava-llama3");
  recap::models::PromptInputs in;
  for (auto _ : state) benchmark::DoNotOptimize(recap::models::build_prompt_ids(tmpl, tok, in).data());
}
BENCHMARK(BM_BuildDefaultPrompt)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
