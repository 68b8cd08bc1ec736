// recap-engine tokenize: token ids of texts with a Llama-3 tokenizer.json (no BOS added, special
// tokens parsed), one JSON object per line; users count caption tokens with it. --decode goes the
// other way.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "models/tokenizer.h"
#include "tools/cli.h"

namespace {

// Ordered: the output keeps the documented key order {"text": ..., "ids": [...]}.
using json = nlohmann::ordered_json;
using recap::models::Tokenizer;

struct TokenizeOptions {
  std::string tokenizer;
  std::string text;
  std::string jsonl;
  bool decode = false;
  bool skip_special = false;
  bool plain = false;
};

std::vector<int64_t> parse_id_list(const std::string& s) {
  std::vector<int64_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t pos = 0;
    long long v = std::stoll(item, &pos);
    while (pos < item.size() && (item[pos] == ' ' || item[pos] == '\t')) ++pos;
    if (pos != item.size()) throw std::invalid_argument("not an integer: \"" + item + "\"");
    ids.push_back(static_cast<int64_t>(v));
  }
  return ids;
}

void emit(const json& j) {
  std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
}

json process(const Tokenizer& tok, const TokenizeOptions& o, const json& in) {
  json out = json::object();
  if (o.decode) {
    const json& ids = in.at("ids");
    if (!ids.is_array()) throw std::invalid_argument("\"ids\" is not an array");
    // HF's decode skips ids it does not know; so do we, but not silently. Non-integers are
    // errors (never truncated or wrapped into some other id).
    std::vector<int32_t> v;
    for (const json& x : ids) {
      if (!x.is_number_integer()) throw std::invalid_argument("\"ids\" holds a non-integer: " + x.dump());
      const bool negative = !x.is_number_unsigned() && x.get<int64_t>() < 0;
      if (negative || x.get<uint64_t>() >= static_cast<uint64_t>(tok.vocab_size())) {
        std::fprintf(stderr,
                     "recap-engine tokenize: warning: id %s is not in the vocabulary (size %d); skipped\n",
                     x.dump().c_str(), tok.vocab_size());
        continue;
      }
      v.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    out["ids"] = ids;
    out["text"] = tok.decode(v, o.skip_special);
  } else {
    const json& text = in.at("text");
    if (!text.is_string()) throw std::invalid_argument("\"text\" is not a string");
    out["text"] = text;
    out["ids"] = tok.encode(text.get_ref<const std::string&>(), !o.plain);
  }
  return out;
}

int run_tokenize(const TokenizeOptions& o) {
  using namespace recap::cli;
  using recap::engine::UsageError;
  if (!o.jsonl.empty() && !o.text.empty()) throw UsageError("give either --text or --jsonl");
  // An unusable tokenizer file is configuration: models::TokenizerError, exit 2.
  const Tokenizer tok = Tokenizer::from_file(o.tokenizer);
  if (o.jsonl.empty()) {
    json in = json::object();
    if (o.decode) {
      try {
        in["ids"] = parse_id_list(o.text);
      } catch (const std::exception& e) {
        throw UsageError(std::string("--text with --decode takes comma-separated ids: ") + e.what());
      }
    } else {
      in["text"] = o.text;
    }
    emit(process(tok, o, in));
    return kExitOk;
  }

  std::unique_ptr<std::ifstream> file;
  std::istream* input = &std::cin;
  std::string name = o.jsonl == "-" ? "<stdin>" : o.jsonl;
  if (o.jsonl != "-") {
    file = std::make_unique<std::ifstream>(o.jsonl, std::ios::binary);
    // The input the user named: a missing or unreadable --jsonl is usage (2).
    if (!*file) throw UsageError(o.jsonl + ": cannot open (--jsonl)");
    input = file.get();
  }
  std::string line;
  size_t lineno = 0, bad = 0, done = 0;
  while (std::getline(*input, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      json in = json::parse(line);
      if (!in.is_object()) throw std::invalid_argument("not a JSON object");
      emit(process(tok, o, in));
      ++done;
    } catch (const std::exception& e) {
      ++bad;
      std::fprintf(stderr, "%s:%zu: skipped malformed line: %s\n", name.c_str(), lineno, e.what());
    }
  }
  std::fflush(stdout);  // the good lines come before the error line when both go to one place
  if (input->bad()) throw std::runtime_error(name + ": read error");
  // Every good line was written; the malformed ones were named on stderr: a runtime failure (1)
  // of the run as a whole, like a caption shard in which samples failed.
  if (bad > 0)
    throw std::runtime_error(std::to_string(bad) + " of " + std::to_string(bad + done) + " lines of " + name +
                             " were malformed");
  return kExitOk;
}

recap::cli::CommandRegistrar reg_tokenize(
    "tokenize", "Token ids of texts (JSONL {\"text\": ...} -> {\"text\": ..., \"ids\": [...]}), no BOS added",
    [](CLI::App* sub) -> std::function<int()> {
      auto o = std::make_shared<TokenizeOptions>();
      sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json (Meta-Llama-3-8B-Instruct's)")
          ->required()
          ->check(CLI::ExistingFile);
      auto* text = sub->add_option("--text", o->text, "one text (with --decode: comma-separated ids)");
      auto* jsonl = sub->add_option("--jsonl", o->jsonl, "JSONL file of {\"text\": ...} lines ('-' = stdin)");
      text->excludes(jsonl);
      sub->add_flag("--decode", o->decode, "decode {\"ids\": [...]} lines to {\"ids\": ..., \"text\": ...}");
      sub->add_flag("--skip-special", o->skip_special, "with --decode: drop special tokens");
      sub->add_flag("--plain", o->plain, "tokenize special-token strings such as <|eot_id|> as plain text");
      sub->callback([sub, text, jsonl]() {
        if (text->count() == 0 && jsonl->count() == 0) throw CLI::RequiredError("--text or --jsonl");
        (void)sub;
      });
      return [o]() { return run_tokenize(*o); };
    });

}  // namespace
