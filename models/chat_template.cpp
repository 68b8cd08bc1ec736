// Prompt building (see chat_template.h).
#include "models/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

namespace recap::models {

namespace {

using json = nlohmann::json;

constexpr std::string_view kImageMarker = "<image>";

// LLaVA MPT-style rendering (LLaVA-pp / MedTrinity conv_llama3): system + sep + role + msg + sep + role.
constexpr const char* kLlavaLlama3System =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nA chat between a curious user and an "
    "artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the "
    "user's questions.";
constexpr const char* kLlavaNextSystem =
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language.";
constexpr const char* kUserHeader = "<|start_header_id|>user<|end_header_id|>\n\n";
constexpr const char* kAssistantHeader = "<|start_header_id|>assistant<|end_header_id|>\n\n";
constexpr const char* kEot = "<|eot_id|>";

std::string mpt_text(const std::string& sep, const std::string& user_role, const std::string& image,
                     const std::string& assistant_role) {
  return "{system}" + sep + user_role + image + "{prompt}" + sep + assistant_role;
}

bool is_field_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.';
}

struct Renderer {
  const ChatTemplate& t;
  const PromptInputs& in;
  RenderedPrompt out;
  int markers = 0;

  Renderer(const ChatTemplate& tmpl, const PromptInputs& inputs) : t(tmpl), in(inputs) {
    out.chunks.emplace_back();
    out.literal.emplace_back();
  }

  // Appends template text, expanding placeholders; depth 1 is the inside of {system}/{prompt}.
  void expand(std::string_view text, int depth, const char* where) {
    for (size_t i = 0; i < text.size();) {
      char c = text[i];
      if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
        out.chunks.back().push_back('{');
        i += 2;
        continue;
      }
      if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
        out.chunks.back().push_back('}');
        i += 2;
        continue;
      }
      if (c == '{') {
        size_t j = i + 1;
        while (j < text.size() && is_field_char(text[j])) ++j;
        if (j > i + 1 && j < text.size() && text[j] == '}') {
          std::string name(text.substr(i + 1, j - i - 1));
          placeholder(name, depth, where);
          i = j + 1;
          continue;
        }
      }
      if (c == '<' && text.substr(i, kImageMarker.size()) == kImageMarker) {
        i += kImageMarker.size();
        ++markers;
        if (in.has_image) {
          out.chunks.emplace_back();
          out.literal.emplace_back();
        } else if (i < text.size() && text[i] == '\n') {
          ++i;  // text-only: "<image>\n" is left out of the user turn
        }
        continue;
      }
      out.chunks.back().push_back(c);
      ++i;
    }
  }

  void placeholder(const std::string& name, int depth, const char* where) {
    if (name == "system" || name == "prompt") {
      if (depth > 0)
        throw std::runtime_error("template " + t.name + ": {" + name + "} used inside " + where +
                                 " (placeholders {system}/{prompt} do not nest)");
      if (name == "system") {
        expand(t.system, 1, "{system}");
      } else {
        expand(in.prompt.empty() ? t.prompt : in.prompt, 1, "{prompt}");
      }
      return;
    }
    auto it = in.fields.find(name);
    if (it == in.fields.end()) {
      std::string known;
      for (const auto& [k, v] : in.fields) known += (known.empty() ? "" : ", ") + k;
      throw std::runtime_error("template " + t.name + ": {" + name + "} in " + where +
                               " is not a field of the sample (fields: " + (known.empty() ? "none" : known) +
                               "; write {{ and }} for literal braces)");
    }
    std::string& chunk = out.chunks.back();
    size_t begin = chunk.size();
    chunk += it->second;
    if (chunk.size() > begin) out.literal.back().push_back(TextRange{begin, chunk.size()});
  }
};

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw std::runtime_error("template file " + path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("template file " + path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<std::string> builtin_template_names() {
  return {"llava-llama3", "llama3-plain", "llava-next-llama3"};
}

ChatTemplate builtin_template(const std::string& name) {
  ChatTemplate t;
  t.name = name;
  t.stop_tokens = {kEot};
  if (name == "llava-llama3") {
    // SPEC 7.2 (A): conv_llama3, MPT style; double BOS via tokenizer_image_token.
    t.system = kLlavaLlama3System;
    t.text = mpt_text(kEot, kUserHeader, "<image>\n", kAssistantHeader);
    t.bos_per_chunk = true;
  } else if (name == "llama3-plain") {
    // SPEC 7.2 (B1): Meta's chat format, no system turn, a single BOS as Meta's own tokenization.
    t.text = std::string("<|begin_of_text|>") + kUserHeader + "<image>\n{prompt}" + kEot + kAssistantHeader;
    t.bos_per_chunk = false;
  } else if (name == "llava-next-llama3") {
    // SPEC 7.2 (B2): LLaVA-NeXT conv_llava_llama_3 rendered by Meta's chat template, tokenized by
    // tokenizer_image_token with Meta's tokenizer (auto BOS): double BOS as in (A).
    t.system = kLlavaNextSystem;
    t.text = std::string("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}") + kEot +
             kUserHeader + "<image>\n{prompt}" + kEot + kAssistantHeader;
    t.bos_per_chunk = true;
  } else {
    std::string names;
    for (const auto& n : builtin_template_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown template \"" + name + "\" (built-in: " + names +
                                "; or a file path)");
  }
  return t;
}

std::string template_name_for(const ModelConfig& cfg, const std::string& requested) {
  if (!requested.empty()) return requested;
  if (cfg.default_template.empty())
    throw std::invalid_argument(cfg.weights_dir + ": a " + family_spec(cfg.family).name +
                                " checkpoint has no language model, so no chat template");
  return cfg.default_template;
}

ChatTemplate resolve_template_for(const ModelConfig& cfg, const std::string& requested) {
  return resolve_template(template_name_for(cfg, requested));
}

ChatTemplate load_template_file(const std::string& path) {
  std::string content = read_text_file(path);
  auto fail = [&](const std::string& msg) -> void {
    throw std::runtime_error("template file " + path + ": " + msg);
  };
  if (std::filesystem::path(path).extension() != ".json") {
    if (utf8_lossy(content) != content) fail("is not valid UTF-8 text");
    ChatTemplate t;
    t.name = path;
    t.text = content;
    t.bos_per_chunk = false;  // a text template is tokenized exactly as written
    return t;
  }
  json j;
  try {
    j = json::parse(content);
  } catch (const json::exception& e) {  // parse_error; out_of_range for a number overflow (1e999)
    fail(std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) fail("expected a JSON object");
  static const std::set<std::string> kKeys = {"name", "base",  "template", "system",        "roles",
                                              "sep",  "image", "prompt",   "bos_per_chunk", "stop"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKeys.count(it.key())) fail("unknown key \"" + it.key() + "\"");
  auto get_string = [&](const char* key) {
    const json& v = j[key];
    if (!v.is_string()) fail(std::string("\"") + key + "\" must be a string");
    return v.get<std::string>();
  };

  ChatTemplate t;
  bool have_text = false;
  if (j.contains("base")) {
    try {
      t = builtin_template(get_string("base"));
    } catch (const std::invalid_argument& e) {
      fail(e.what());
    }
    have_text = true;
  } else {
    t.stop_tokens.clear();
  }
  t.name = j.contains("name") ? get_string("name") : path;
  if (j.contains("template") && j.contains("roles"))
    fail("give either \"template\" or \"roles\"/\"sep\", not both");
  if (j.contains("template")) {
    t.text = get_string("template");
    have_text = true;
  } else if (j.contains("roles")) {
    const json& roles = j["roles"];
    if (!roles.is_array() || roles.size() != 2 || !roles[0].is_string() || !roles[1].is_string())
      fail("\"roles\" must be [user_prefix, assistant_prefix]");
    std::string sep = j.contains("sep") ? get_string("sep") : "";
    std::string image = j.contains("image") ? get_string("image") : "<image>\n";
    t.text = mpt_text(sep, roles[0].get<std::string>(), image, roles[1].get<std::string>());
    have_text = true;
  } else if (j.contains("sep") || j.contains("image")) {
    fail("\"sep\" and \"image\" are only used together with \"roles\"");
  }
  if (!have_text) fail("needs \"template\", \"roles\" (with \"sep\") or \"base\"");
  if (j.contains("system")) t.system = get_string("system");
  if (j.contains("prompt")) t.prompt = get_string("prompt");
  if (j.contains("bos_per_chunk")) {
    if (!j["bos_per_chunk"].is_boolean()) fail("\"bos_per_chunk\" must be true or false");
    t.bos_per_chunk = j["bos_per_chunk"].get<bool>();
  }
  if (j.contains("stop")) {
    const json& stop = j["stop"];
    if (!stop.is_array()) fail("\"stop\" must be an array of token strings");
    t.stop_tokens.clear();
    for (const auto& s : stop) {
      if (!s.is_string()) fail("\"stop\" must be an array of token strings, got " + s.dump());
      t.stop_tokens.push_back(s.get<std::string>());
    }
  }
  return t;
}

ChatTemplate resolve_template(const std::string& name_or_path) {
  for (const auto& n : builtin_template_names())
    if (n == name_or_path) return builtin_template(n);
  std::error_code ec;
  if (!std::filesystem::exists(name_or_path, ec)) {
    std::string names;
    for (const auto& n : builtin_template_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::runtime_error("template \"" + name_or_path + "\" is neither a built-in (" + names +
                             ") nor an existing file");
  }
  return load_template_file(name_or_path);
}

std::string template_to_json(const ChatTemplate& t) {
  json j = json::object();
  j["name"] = t.name;
  j["template"] = t.text;
  j["system"] = t.system;
  j["prompt"] = t.prompt;
  j["bos_per_chunk"] = t.bos_per_chunk;
  j["stop"] = t.stop_tokens;
  // A file name or --prompt need not be UTF-8; JSON text must be, so such bytes become U+FFFD
  // here instead of a json::type_error (found by tests/fuzz/fuzz_chat_template).
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string RenderedPrompt::text() const {
  std::string s;
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (k) s += kImageMarker;
    s += chunks[k];
  }
  return s;
}

RenderedPrompt render_prompt(const ChatTemplate& t, const PromptInputs& in) {
  Renderer r(t, in);
  r.expand(t.text, 0, "the template");
  if (in.has_image && r.markers != 1)
    throw std::runtime_error("template " + t.name +
                             ": needs exactly one <image> for a sample with an image, found " +
                             std::to_string(r.markers));
  return std::move(r.out);
}

std::vector<int32_t> build_prompt_ids(const ChatTemplate& t, const Tokenizer& tok, const PromptInputs& in) {
  RenderedPrompt r = render_prompt(t, in);
  int32_t bos = tok.bos_id();
  if (t.bos_per_chunk && bos < 0)
    throw std::runtime_error("template " + t.name + " needs a BOS token (bos_per_chunk) but tokenizer " +
                             tok.path() + " has none");
  // tokenizer_image_token: with BOS auto-added to every chunk, offset = 1: keep one leading BOS,
  // strip it from each chunk, one -200 between chunks => [bos] + c0 + [-200] + c1 ...
  std::vector<int32_t> ids;
  if (t.bos_per_chunk) ids.push_back(bos);
  for (size_t k = 0; k < r.chunks.size(); ++k) {
    if (k) ids.push_back(kImageTokenId);
    auto part = tok.encode(r.chunks[k], /*parse_special=*/true, r.literal[k]);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

std::vector<int32_t> stop_token_ids(const ChatTemplate& t, const Tokenizer& tok,
                                    const std::vector<int64_t>& generation_eos) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id < 0 || id >= tok.vocab_size()) return;
    if (std::find(ids.begin(), ids.end(), static_cast<int32_t>(id)) == ids.end())
      ids.push_back(static_cast<int32_t>(id));
  };
  for (int64_t id : generation_eos) add(id);
  for (const auto& s : t.stop_tokens) {
    int32_t id = tok.token_id(s);
    if (id < 0)
      throw std::runtime_error("template " + t.name + ": stop token \"" + s + "\" is not in tokenizer " +
                               tok.path());
    add(id);
  }
  return ids;
}

}  // namespace recap::models
