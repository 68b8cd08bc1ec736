// Llama-3 byte-level BPE tokenizer (see tokenizer.h and docs/TOKENIZER.md).
#include "models/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "models/unicode_tables.h"

namespace recap::models {

namespace {

using json = nlohmann::json;
namespace uc = unicode;

// The pre-tokenizer regex this implementation reproduces by hand (SPEC 6.2).
constexpr const char* kLlama3SplitRegex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

constexpr uint32_t kInvalidCodepoint = 0xFFFFFFFFu;
// Token ids index per-id tables sized max id + 1, so an id is at most this (Llama 3 uses 128255;
// 4M ids of tables is ~150 MB, a huge id in a hostile file would be tens of GB).
constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;
// tokenizer.json of Llama 3 is 9 MB; the parsed DOM takes ~10x the text.
constexpr std::uintmax_t kMaxTokenizerFileBytes = 256u << 20;

// Decodes the code point at s[i]; an invalid or truncated sequence yields kInvalidCodepoint and
// length 1 (the byte is then treated as a character of class "other").
inline uint32_t decode_utf8(const unsigned char* s, size_t n, size_t i, size_t* len) {
  unsigned char c = s[i];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  auto cont = [&](size_t k) { return i + k < n && (s[i + k] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF && cont(1)) {
    *len = 2;
    return ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
  }
  if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    uint32_t cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
    if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) {
      *len = 3;
      return cp;
    }
  }
  if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    uint32_t cp =
        ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
    if (cp >= 0x10000 && cp <= 0x10FFFF) {
      *len = 4;
      return cp;
    }
  }
  *len = 1;
  return kInvalidCodepoint;
}

inline uc::CodepointClass class_of(uint32_t cp) {
  return cp == kInvalidCodepoint ? uc::kOther : uc::classify(cp);
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in order.
struct ByteUnicode {
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[512];  // -1: not a byte symbol (all byte symbols are < U+0144)
  ByteUnicode() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t{-1});
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : 256 + extra++;
      byte_to_cp[b] = cp;
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteUnicode& byte_unicode() {
  static const ByteUnicode table;
  return table;
}

// ByteLevel decoding of one token string: every char maps back to its byte, or (HF behaviour)
// the token's own UTF-8 bytes when some char is not a byte symbol. *all_mapped tells which.
std::string byte_level_to_bytes(std::string_view token, bool* all_mapped) {
  const auto& bu = byte_unicode();
  std::string out;
  out.reserve(token.size());
  const auto* s = reinterpret_cast<const unsigned char*>(token.data());
  for (size_t i = 0; i < token.size();) {
    size_t len;
    uint32_t cp = decode_utf8(s, token.size(), i, &len);
    if (cp >= 512 || bu.cp_to_byte[cp] < 0) {
      if (all_mapped) *all_mapped = false;
      return std::string(token);
    }
    out.push_back(static_cast<char>(bu.cp_to_byte[cp]));
    i += len;
  }
  if (all_mapped) *all_mapped = true;
  return out;
}

// Case folding for the (?i:'s|'t|'re|'ve|'m|'ll|'d) alternative: ASCII letters, plus the two
// non-ASCII code points whose simple case folding is an ASCII letter (U+017F long s -> s,
// U+212A Kelvin sign -> k), as Oniguruma folds them.
inline uint32_t fold_for_contraction(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp == 0x017F) return 's';
  if (cp == 0x212A) return 'k';
  return cp;
}

std::string read_whole_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw TokenizerError(std::string(what) + " " + path + ": is a directory, expected a file");
  if (const std::uintmax_t size = std::filesystem::file_size(path, ec); !ec && size > kMaxTokenizerFileBytes)
    throw TokenizerError(std::string(what) + " " + path + ": " + std::to_string(size) +
                         " bytes, more than the limit of " + std::to_string(kMaxTokenizerFileBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw TokenizerError(std::string("cannot open ") + what + " " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw TokenizerError(std::string("cannot read ") + what + " " + path);
  return ss.str();
}

std::string json_type_for_error(const json& j) {
  return std::string(j.type_name());
}

struct MergeValue {
  int32_t rank;
  int32_t id;
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

struct TrieNode {
  std::vector<std::pair<unsigned char, int32_t>> children;
  int32_t token = -1;  // index into added tokens when a token ends here
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct PairHash {
  size_t operator()(uint64_t k) const noexcept {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
};

// Merges: open addressing over (left id, right id) keys, load factor <= 1/2. Faster to build and
// probe than std::unordered_map for the 280k Llama-3 merges.
class PairMap {
 public:
  static constexpr uint64_t kEmpty = ~0ull;  // (-1, -1): ids are never negative
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, MergeValue{0, 0});
    mask_ = cap - 1;
  }
  void insert_or_assign(uint64_t key, MergeValue v) {
    size_t i = PairHash{}(key)&mask_;
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    keys_[i] = key;
    vals_[i] = v;
  }
  const MergeValue* find(uint64_t key) const {
    if (keys_.empty()) return nullptr;
    for (size_t i = PairHash{}(key)&mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  std::vector<uint64_t> keys_;
  std::vector<MergeValue> vals_;
  size_t mask_ = 0;
};

bool is_word_char(uint32_t cp) {
  if (cp == '_') return true;
  auto c = class_of(cp);
  return c == uc::kLetter || c == uc::kNumber;
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  // Vocab by byte-level string (as written in tokenizer.json) and by the raw bytes it stands for.
  std::vector<std::string> byte_level_storage;  // owns the keys of vocab_byte_level; never resized after load
  std::unordered_map<std::string_view, int32_t> vocab_byte_level;
  std::vector<std::string> raw_storage;  // owns the keys of vocab_raw; never resized after load
  std::unordered_map<std::string_view, int32_t> vocab_raw;
  PairMap merges;
  int32_t byte_token[256];
  bool ignore_merges = false;

  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;  // content -> index into added
  std::vector<TrieNode> trie;
  bool can_start_added[256] = {};

  std::vector<std::string> id_bytes;  // decoded bytes per id
  std::vector<uint8_t> id_known;
  std::vector<uint8_t> id_special;
  int32_t n_vocab = 0;

  int32_t bos = -1;
  bool add_bos = false;
  bool cleanup = true;

  void load_json(const json& j);
  void load_config(const std::string& config_path);

  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  // Longest added token (index) starting at i, and its end; -1 if none.
  int32_t match_added(std::string_view text, size_t i, size_t* end) const;
};

void Tokenizer::Impl::load_json(const json& j) {
  auto fail = [&](const std::string& msg) { throw TokenizerError(path + ": " + msg); };
  if (!j.is_object()) fail("top level is a JSON " + json_type_for_error(j) + ", expected an object");
  auto mit = j.find("model");
  if (mit == j.end() || !mit->is_object()) fail("missing \"model\" object (not a tokenizer.json?)");
  const json& model = *mit;
  if (auto t = model.find("type"); t != model.end() && !(t->is_string() && *t == "BPE"))
    fail("model.type is " + t->dump() + "; only byte-level \"BPE\" tokenizers are supported");
  auto vit = model.find("vocab");
  if (vit == model.end()) fail("missing model.vocab");
  if (!vit->is_object()) fail("model.vocab is a " + json_type_for_error(*vit) + ", expected an object");
  auto mgit = model.find("merges");
  if (mgit == model.end() || !mgit->is_array()) fail("missing model.merges (expected an array)");
  if (auto b = model.find("byte_fallback"); b != model.end() && b->is_boolean() && b->get<bool>())
    fail("model.byte_fallback=true is not supported (not a byte-level BPE tokenizer)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto it = model.find(key); it != model.end() && !it->is_null() &&
                                   !(it->is_string() && it->get_ref<const std::string&>().empty()))
      fail(std::string("model.") + key + " is not supported");
  if (auto im = model.find("ignore_merges"); im != model.end() && im->is_boolean())
    ignore_merges = im->get<bool>();

  // Normalizer: none. Pre-tokenizer: the Llama-3 split + ByteLevel without its own regex.
  if (auto n = j.find("normalizer"); n != j.end() && !n->is_null())
    fail("normalizer " + n->value("type", std::string("?")) + " is not supported (Llama 3 has none)");
  {
    auto pt = j.find("pre_tokenizer");
    if (pt == j.end() || !pt->is_object()) fail("missing pre_tokenizer");
    std::vector<const json*> steps;
    if (pt->value("type", "") == "Sequence") {
      auto list = pt->find("pretokenizers");
      if (list == pt->end() || !list->is_array())
        fail("pre_tokenizer Sequence without a pretokenizers array");
      for (const auto& p : *list) {
        if (!p.is_object()) fail("pre_tokenizer step is not an object: " + p.dump());
        steps.push_back(&p);
      }
    } else {
      steps.push_back(&*pt);
    }
    bool have_split = false, have_byte_level = false;
    for (const json* p : steps) {
      std::string type = p->value("type", "");
      if (type == "Split") {
        std::string pattern;
        if (auto pat = p->find("pattern"); pat != p->end() && pat->is_object())
          pattern = pat->value("Regex", pat->value("String", ""));
        if (pattern != kLlama3SplitRegex)
          fail("pre_tokenizer Split pattern is not the Llama-3 regex (got " + pattern + ")");
        if (p->value("behavior", "") != "Isolated" || p->value("invert", false))
          fail("pre_tokenizer Split must have behavior Isolated and invert false");
        have_split = true;
      } else if (type == "ByteLevel") {
        if (p->value("use_regex", true) || p->value("add_prefix_space", false))
          fail("pre_tokenizer ByteLevel with use_regex/add_prefix_space is not supported");
        have_byte_level = true;
      } else {
        fail("unsupported pre_tokenizer step \"" + type + "\"");
      }
    }
    if (!have_split || !have_byte_level)
      fail("pre_tokenizer must be Sequence[Split(Llama-3 regex), ByteLevel]");
  }
  if (auto d = j.find("decoder"); d != j.end() && !d->is_null() && d->value("type", "") != "ByteLevel")
    fail("decoder " + d->value("type", std::string("?")) + " is not supported (expected ByteLevel)");

  // Vocab.
  const json& vocab = *vit;
  vocab_byte_level.reserve(vocab.size() * 2);
  byte_level_storage.resize(vocab.size());
  std::vector<int32_t> entry_ids;
  entry_ids.reserve(vocab.size());
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail("model.vocab[\"" + it.key() + "\"] is not an integer id");
    if (it.value().is_number_unsigned() && it.value().get<uint64_t>() > static_cast<uint64_t>(kMaxTokenId))
      fail("model.vocab[\"" + it.key() + "\"] has id " + it.value().dump() + ", out of range [0, " +
           std::to_string(kMaxTokenId) + "]");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > kMaxTokenId)
      fail("model.vocab[\"" + it.key() + "\"] has id " + std::to_string(id) + ", out of range [0, " +
           std::to_string(kMaxTokenId) + "]");
    std::string& key = byte_level_storage[entry_ids.size()];
    key = it.key();
    vocab_byte_level.emplace(std::string_view(key), static_cast<int32_t>(id));
    entry_ids.push_back(static_cast<int32_t>(id));
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }

  // Added tokens.
  if (auto at = j.find("added_tokens"); at != j.end() && !at->is_null()) {
    if (!at->is_array()) fail("added_tokens is not an array");
    for (const auto& t : *at) {
      if (!t.is_object() || !t.contains("id") || !t.contains("content") || !t["id"].is_number_integer() ||
          !t["content"].is_string())
        fail("added_tokens entry without integer id and string content: " + t.dump());
      AddedToken tok;
      const json& id = t["id"];
      if ((id.is_number_unsigned() && id.get<uint64_t>() > static_cast<uint64_t>(kMaxTokenId)) ||
          (!id.is_number_unsigned() && (id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId)))
        fail("added token id " + id.dump() + " out of range [0, " + std::to_string(kMaxTokenId) +
             "]: " + t.dump());
      tok.id = id.get<int32_t>();
      tok.content = t["content"].get<std::string>();
      if (tok.content.empty()) fail("added token with empty content: " + t.dump());
      tok.special = t.value("special", false);
      tok.lstrip = t.value("lstrip", false);
      tok.rstrip = t.value("rstrip", false);
      tok.single_word = t.value("single_word", false);
      max_id = std::max(max_id, tok.id);
      added_by_content[tok.content] = static_cast<int32_t>(added.size());
      added.push_back(std::move(tok));
    }
  }
  n_vocab = max_id + 1;
  id_bytes.assign(n_vocab, std::string());
  id_known.assign(n_vocab, 0);
  id_special.assign(n_vocab, 0);

  raw_storage.resize(entry_ids.size());
  vocab_raw.reserve(entry_ids.size() * 2);
  for (size_t k = 0; k < entry_ids.size(); ++k) {
    bool mapped = false;
    std::string raw = byte_level_to_bytes(byte_level_storage[k], &mapped);
    int32_t id = entry_ids[k];
    id_bytes[id] = raw;
    id_known[id] = 1;
    if (mapped) {
      raw_storage[k] = std::move(raw);
      vocab_raw.emplace(std::string_view(raw_storage[k]), id);
    }
  }
  // HF decodes added tokens through the ByteLevel decoder as well (their ASCII chars map to
  // themselves); an added token's content wins over a vocab entry with the same id.
  for (const auto& tok : added) {
    id_bytes[tok.id] = byte_level_to_bytes(tok.content, nullptr);
    id_known[tok.id] = 1;
    id_special[tok.id] = tok.special ? 1 : 0;
  }

  // The 256 single-byte symbols every byte-level BPE vocab has.
  const auto& bu = byte_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    append_utf8(sym, bu.byte_to_cp[b]);
    auto it = vocab_byte_level.find(sym);
    if (it == vocab_byte_level.end())
      fail("model.vocab lacks the byte symbol \"" + sym + "\" for byte " + std::to_string(b) +
           " (not a byte-level BPE vocab)");
    byte_token[b] = it->second;
  }

  // Merges: "a b" strings or ["a", "b"] pairs; rank = position. A later duplicate overrides an
  // earlier one, as in HF (HashMap collect).
  const json& mlist = *mgit;
  merges.reserve(mlist.size());
  std::string_view left, right;
  std::string joined;
  int32_t rank = 0;
  for (const auto& m : mlist) {
    if (m.is_string()) {
      std::string_view sv = m.get_ref<const std::string&>();
      size_t sp = sv.find(' ');
      if (sp == std::string_view::npos || sv.find(' ', sp + 1) != std::string_view::npos)
        fail("model.merges[" + std::to_string(rank) + "] \"" + std::string(sv) +
             "\" is not of the form \"a b\"");
      left = sv.substr(0, sp);
      right = sv.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get_ref<const std::string&>();
      right = m[1].get_ref<const std::string&>();
    } else {
      fail("model.merges[" + std::to_string(rank) + "] is neither \"a b\" nor [\"a\", \"b\"]: " + m.dump());
    }
    auto ia = vocab_byte_level.find(left);
    auto ib = vocab_byte_level.find(right);
    if (ia == vocab_byte_level.end() || ib == vocab_byte_level.end())
      fail("model.merges[" + std::to_string(rank) + "] uses a token missing from the vocab: \"" +
           std::string(ia == vocab_byte_level.end() ? left : right) + "\"");
    joined.assign(left).append(right);
    auto iab = vocab_byte_level.find(joined);
    if (iab == vocab_byte_level.end())
      fail("model.merges[" + std::to_string(rank) + "] result \"" + joined + "\" is missing from the vocab");
    merges.insert_or_assign(pair_key(ia->second, ib->second), MergeValue{rank, iab->second});
    ++rank;
  }

  // Trie of added-token contents for leftmost-longest matching.
  trie.assign(1, TrieNode{});
  for (size_t k = 0; k < added.size(); ++k) {
    int32_t node = 0;
    for (unsigned char c : added[k].content) {
      int32_t next = -1;
      for (auto& [ch, child] : trie[node].children)
        if (ch == c) next = child;
      if (next < 0) {
        next = static_cast<int32_t>(trie.size());
        trie[node].children.emplace_back(c, next);
        trie.emplace_back();
      }
      node = next;
    }
    trie[node].token = static_cast<int32_t>(k);
    can_start_added[static_cast<unsigned char>(added[k].content[0])] = true;
  }

  // Does the post-processor prepend BOS (TemplateProcessing whose single template starts with a
  // special token)? Recorded for add_bos_by_default().
  std::function<bool(const json&)> prepends = [&](const json& p) -> bool {
    if (!p.is_object()) return false;
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      auto list = p.find("processors");
      if (list == p.end() || !list->is_array()) return false;
      for (const auto& q : *list)
        if (prepends(q)) return true;
      return false;
    }
    if (type == "TemplateProcessing") {
      auto single = p.find("single");
      if (single != p.end() && single->is_array() && !single->empty())
        return (*single)[0].is_object() && (*single)[0].contains("SpecialToken");
    }
    return false;
  };
  if (auto pp = j.find("post_processor"); pp != j.end()) add_bos = prepends(*pp);
}

void Tokenizer::Impl::load_config(const std::string& config_path) {
  std::string bos_text = "<|begin_of_text|>";
  if (!config_path.empty()) {
    std::string text = read_whole_file(config_path, "tokenizer config");
    json c;
    try {
      c = json::parse(text);
    } catch (const json::exception& e) {
      throw TokenizerError(config_path + ": malformed JSON: " + e.what());
    }
    if (!c.is_object()) throw TokenizerError(config_path + ": expected a JSON object");
    if (auto b = c.find("bos_token"); b != c.end()) {
      if (b->is_string()) {
        bos_text = b->get<std::string>();
      } else if (b->is_object() && b->contains("content") && (*b)["content"].is_string()) {
        bos_text = (*b)["content"].get<std::string>();
      }
    }
    // transformers 4.44 defaults clean_up_tokenization_spaces to true when the key is absent.
    if (auto cu = c.find("clean_up_tokenization_spaces"); cu != c.end() && cu->is_boolean())
      cleanup = cu->get<bool>();
  }
  if (auto it = added_by_content.find(bos_text); it != added_by_content.end()) {
    bos = added[it->second].id;
  } else if (auto v = vocab_byte_level.find(bos_text); v != vocab_byte_level.end()) {
    bos = v->second;
  }
}

// The Llama-3 pattern, alternatives tried in order at position i (leftmost-first, with the
// backtracking each quantifier implies):
//  1 (?i:'s|'t|'re|'ve|'m|'ll|'d)   2 [^\r\n\p{L}\p{N}]?\p{L}+   3 \p{N}{1,3}
//  4  ?[^\s\p{L}\p{N}]+[\r\n]*      5 \s*[\r\n]+                 6 \s+(?!\S)     7 \s+
// Every code point matches some alternative (L: 2, N: 3, whitespace: 7, anything else: 4), so
// matches tile the text.
// Length in bytes of the pre-tokenizer regex match starting at i (always >= 1).
static size_t split_match(const unsigned char* s, size_t n, size_t i) {
  size_t l0;
  uint32_t c0 = decode_utf8(s, n, i, &l0);
  uc::CodepointClass k0 = class_of(c0);
  auto letters_from = [&](size_t j) {
    while (j < n) {
      size_t l;
      uint32_t c = decode_utf8(s, n, j, &l);
      if (class_of(c) != uc::kLetter) break;
      j += l;
    }
    return j;
  };

  // 1: contractions.
  if (c0 == '\'' && i + 1 < n) {
    size_t l1;
    uint32_t c1 = fold_for_contraction(decode_utf8(s, n, i + 1, &l1));
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 1 + l1;
    if ((c1 == 'r' || c1 == 'v' || c1 == 'l') && i + 1 + l1 < n) {
      size_t l2;
      uint32_t c2 = fold_for_contraction(decode_utf8(s, n, i + 1 + l1, &l2));
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return 1 + l1 + l2;
    }
  }
  // 2: optional non-letter/number/newline prefix, then letters.
  if (k0 == uc::kLetter) return letters_from(i + l0) - i;
  if (c0 != '\r' && c0 != '\n' && k0 != uc::kNumber && i + l0 < n) {
    size_t l1;
    uint32_t c1 = decode_utf8(s, n, i + l0, &l1);
    if (class_of(c1) == uc::kLetter) return letters_from(i + l0 + l1) - i;
  }
  // 3: one to three numbers.
  if (k0 == uc::kNumber) {
    size_t j = i + l0;
    for (int count = 1; count < 3 && j < n; ++count) {
      size_t l;
      uint32_t c = decode_utf8(s, n, j, &l);
      if (class_of(c) != uc::kNumber) break;
      j += l;
    }
    return j - i;
  }
  // 4: optional space, a run of "other" code points, trailing CR/LF.
  {
    size_t j = (c0 == ' ') ? i + 1 : i;
    size_t start = j;
    while (j < n) {
      size_t l;
      uint32_t c = decode_utf8(s, n, j, &l);
      if (class_of(c) != uc::kOther) break;
      j += l;
    }
    if (j > start) {
      while (j < n && (s[j] == '\r' || s[j] == '\n')) ++j;
      return j - i;
    }
  }
  // Here c0 is whitespace. Find the whitespace run [i, end), its last CR/LF, its last code point.
  size_t end = i, last_newline_end = 0, last_cp_start = i;
  while (end < n) {
    size_t l;
    uint32_t c = decode_utf8(s, n, end, &l);
    if (class_of(c) != uc::kWhitespace) break;
    if (c == '\r' || c == '\n') last_newline_end = end + 1;
    last_cp_start = end;
    end += l;
  }
  // 5: \s*[\r\n]+ ends after the last CR/LF of the run (backtracking \s* to it).
  if (last_newline_end > 0) return last_newline_end - i;
  // 6: \s+(?!\S): the whole run at the end of text, else the run minus its last code point.
  if (end == n) return end - i;
  if (last_cp_start > i) return last_cp_start - i;
  // 7: \s+ (a single whitespace code point before a non-space).
  return end - i;
}

std::vector<std::string_view> llama3_pre_tokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    size_t len = split_match(s, text.size(), i);
    pieces.push_back(text.substr(i, len));
    i += len;
  }
  return pieces;
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  const size_t n = piece.size();
  // Symbols as a doubly linked list over the initial byte positions; a merge keeps the left index.
  std::vector<int32_t> sym(n), prev(n), next(n);
  for (size_t k = 0; k < n; ++k) {
    sym[k] = byte_token[static_cast<unsigned char>(piece[k])];
    prev[k] = static_cast<int32_t>(k) - 1;
    next[k] = (k + 1 < n) ? static_cast<int32_t>(k + 1) : -1;
  }
  struct Cand {
    int32_t rank;
    int32_t pos;
    int32_t left;
    int32_t right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Cand> heap;
  heap.reserve(n);
  auto push = [&](int32_t pos) {
    int32_t nx = next[pos];
    if (pos < 0 || nx < 0) return;
    const MergeValue* mv = merges.find(pair_key(sym[pos], sym[nx]));
    if (!mv) return;
    heap.push_back(Cand{mv->rank, pos, sym[pos], sym[nx]});
    std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
  };
  for (size_t k = 0; k + 1 < n; ++k) push(static_cast<int32_t>(k));
  // Lowest rank first, leftmost on ties (as HF's BinaryHeap of merges).
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
    Cand c = heap.back();
    heap.pop_back();
    int32_t nx = next[c.pos];
    if (sym[c.pos] != c.left || nx < 0 || sym[nx] != c.right) continue;  // stale
    sym[c.pos] = merges.find(pair_key(c.left, c.right))->id;
    sym[nx] = -1;
    int32_t nn = next[nx];
    next[c.pos] = nn;
    if (nn >= 0) prev[nn] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos]);
    push(c.pos);
  }
  for (int32_t k = 0; k >= 0; k = next[k]) out.push_back(sym[k]);
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {
    auto it = vocab_raw.find(piece);
    if (it != vocab_raw.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() == 1) {
    out.push_back(byte_token[static_cast<unsigned char>(piece[0])]);
    return;
  }
  bpe(piece, out);
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    size_t len = split_match(s, n, i);
    encode_piece(text.substr(i, len), out);
    i += len;
  }
}

int32_t Tokenizer::Impl::match_added(std::string_view text, size_t i, size_t* end) const {
  int32_t node = 0, best = -1;
  for (size_t j = i; j < text.size(); ++j) {
    unsigned char c = static_cast<unsigned char>(text[j]);
    int32_t nextn = -1;
    for (const auto& [ch, child] : trie[node].children)
      if (ch == c) {
        nextn = child;
        break;
      }
    if (nextn < 0) break;
    node = nextn;
    if (trie[node].token >= 0) {
      best = trie[node].token;
      *end = j + 1;
    }
  }
  return best;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path, const std::string& config_path) {
  auto impl = std::make_unique<Impl>();
  impl->path = tokenizer_json_path;
  std::string text = read_whole_file(tokenizer_json_path, "tokenizer file");
  {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {  // parse_error; out_of_range for a number overflow (1e999)
      throw TokenizerError(tokenizer_json_path + ": malformed JSON: " + e.what());
    }
    text.clear();
    text.shrink_to_fit();
    try {
      impl->load_json(j);
    } catch (const json::exception& e) {
      // A value of another type than the format has there (a string where a bool goes, ...)
      // that load_json's own checks did not name: still the file's fault, not a crash.
      throw TokenizerError(tokenizer_json_path + ": unexpected value: " + e.what());
    }
  }
  std::string cfg = config_path;
  if (cfg.empty()) {
    auto candidate = std::filesystem::path(tokenizer_json_path).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec)) cfg = candidate.string();
  }
  impl->load_config(cfg);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  return encode(text, parse_special, {});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special,
                                       const std::vector<TextRange>& literal_ranges) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const size_t n = text.size();
  size_t segment = 0;  // start of the text not yet tokenized
  size_t range_idx = 0;
  size_t i = 0;
  while (i < n) {
    if (!m.can_start_added[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    size_t end = 0;
    int32_t k = m.match_added(text, i, &end);
    if (k < 0) {
      ++i;
      continue;
    }
    // A match overlapping a literal range is not a token there: look again one byte later.
    while (range_idx < literal_ranges.size() && literal_ranges[range_idx].end <= i) ++range_idx;
    if (range_idx < literal_ranges.size() && literal_ranges[range_idx].begin < end) {
      ++i;
      continue;
    }
    const AddedToken& tok = m.added[k];
    // Skipped matches are passed over whole, like the non-overlapping matches HF iterates.
    if (tok.special && !parse_special) {
      i = end;
      continue;
    }
    size_t start = i;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    if (tok.single_word) {
      bool word_before = false, word_after = false;
      if (start > 0) {
        size_t b = start - 1;
        while (b > 0 && (s[b] & 0xC0) == 0x80) --b;
        size_t l;
        word_before = is_word_char(decode_utf8(s, n, b, &l));
      }
      if (end < n) {
        size_t l;
        word_after = is_word_char(decode_utf8(s, n, end, &l));
      }
      if (word_before || word_after) {
        i = end;
        continue;
      }
    }
    if (tok.lstrip) {
      while (start > segment) {
        size_t b = start - 1;
        while (b > segment && (s[b] & 0xC0) == 0x80) --b;
        size_t l;
        if (class_of(decode_utf8(s, n, b, &l)) != uc::kWhitespace) break;
        start = b;
      }
    }
    if (tok.rstrip) {
      while (end < n) {
        size_t l;
        if (class_of(decode_utf8(s, n, end, &l)) != uc::kWhitespace) break;
        end += l;
      }
    }
    m.encode_text(text.substr(segment, start - segment), out);
    out.push_back(tok.id);
    segment = i = end;
  }
  m.encode_text(text.substr(segment), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return decode(ids.data(), ids.size(), skip_special);
}

std::string Tokenizer::decode(const int32_t* ids, size_t n, bool skip_special) const {
  const Impl& m = *impl_;
  std::string bytes;
  bytes.reserve(n * 4);
  for (size_t k = 0; k < n; ++k) {
    int32_t id = ids[k];
    if (id < 0 || id >= m.n_vocab || !m.id_known[id]) continue;
    if (skip_special && m.id_special[id]) continue;
    bytes += m.id_bytes[id];
  }
  return utf8_lossy(bytes);
}

std::string Tokenizer::decode_output(const std::vector<int32_t>& ids) const {
  std::string text = decode(ids, /*skip_special=*/true);
  if (impl_->cleanup) text = clean_up_tokenization(std::move(text));
  return strip_python_whitespace(text);
}

int32_t Tokenizer::vocab_size() const {
  return impl_->n_vocab;
}

int32_t Tokenizer::token_id(std::string_view token) const {
  const Impl& m = *impl_;
  if (auto it = m.added_by_content.find(std::string(token)); it != m.added_by_content.end())
    return m.added[it->second].id;
  if (auto it = m.vocab_byte_level.find(token); it != m.vocab_byte_level.end()) return it->second;
  return -1;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab && impl_->id_special[id] != 0;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= impl_->n_vocab || !impl_->id_known[id]) return {};
  return impl_->id_bytes[id];
}

int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
bool Tokenizer::add_bos_by_default() const {
  return impl_->add_bos;
}
bool Tokenizer::clean_up_tokenization_spaces() const {
  return impl_->cleanup;
}
const std::string& Tokenizer::path() const {
  return impl_->path;
}

std::string clean_up_tokenization(std::string text) {
  static const std::pair<std::string_view, std::string_view> kReplacements[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kReplacements) {
    // Python str.replace: non-overlapping, left to right.
    std::string out;
    size_t pos = 0, hit;
    bool any = false;
    while ((hit = text.find(from, pos)) != std::string::npos) {
      if (!any) out.reserve(text.size());
      any = true;
      out.append(text, pos, hit - pos).append(to);
      pos = hit + from.size();
    }
    if (any) {
      out.append(text, pos, std::string::npos);
      text = std::move(out);
    }
  }
  return text;
}

namespace {
bool python_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}
}  // namespace

std::string strip_python_whitespace(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t begin = 0;
  while (begin < n) {
    size_t l;
    uint32_t cp = decode_utf8(s, n, begin, &l);
    if (cp == kInvalidCodepoint || !python_isspace(cp)) break;
    begin += l;
  }
  size_t end = n;
  while (end > begin) {
    size_t b = end - 1;
    while (b > begin && (s[b] & 0xC0) == 0x80) --b;
    size_t l;
    uint32_t cp = decode_utf8(s, n, b, &l);
    if (cp == kInvalidCodepoint || b + l != end || !python_isspace(cp)) break;
    end = b;
  }
  return std::string(text.substr(begin, end - begin));
}

std::string utf8_lossy(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Expected length and the allowed range of the second byte (Unicode Table 3-7).
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    size_t got = 1;
    if (need > 0) {
      if (i + 1 < n && s[i + 1] >= lo && s[i + 1] <= hi) {
        got = 2;
        while (got < need && i + got < n && (s[i + got] & 0xC0) == 0x80) ++got;
      }
    }
    if (need > 0 && got == need) {
      out.append(bytes.substr(i, need));
    } else {
      out += "\xEF\xBF\xBD";  // one U+FFFD per maximal invalid subpart
    }
    i += got;
  }
  return out;
}

std::string find_tokenizer(const std::string& weights_dir, const std::string& explicit_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!explicit_path.empty()) {
    if (!fs::is_regular_file(explicit_path, ec))
      throw TokenizerError("--tokenizer " + explicit_path + ": no such file");
    return explicit_path;
  }
  if (!weights_dir.empty()) {
    fs::path candidate = fs::path(weights_dir) / "tokenizer.json";
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  throw TokenizerError(
      "no tokenizer.json in the weights directory " +
      (weights_dir.empty() ? std::string("(none given)") : weights_dir) +
      ": the published checkpoint ships none; pass Meta-Llama-3-8B-Instruct's tokenizer.json "
      "with --tokenizer FILE (tokenizer_config.json next to it is read too)");
}

}  // namespace recap::models
