// Safetensors reader/writer. Format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of UTF-8 JSON header, may be padded with spaces][data area]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
// relative to the start of the data area; "__metadata__" is an optional string->string map.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

namespace recap::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A header larger than this is not a weight file (real 8B shards have ~30 KB headers).
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;
// Tensors have at most this many dimensions (weights have 1 to 4).
constexpr size_t kMaxRank = 8;

struct DTypeRow {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},           {DType::U64, "U64", 8},
    {DType::U32, "U32", 4},   {DType::U16, "U16", 2},         {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw FormatError(file + ": " + what);
}
[[noreturn]] void fail_tensor(const std::string& file, const std::string& tensor, const std::string& what) {
  throw FormatError(file + ": tensor '" + tensor + "': " + what);
}

// Deepest nesting accepted in a header or index: real ones nest 3 levels ({name: {shape: [..]}}).
constexpr size_t kMaxJsonDepth = 64;

// A SAX pass over the text that only checks structure: no key twice in one object (nlohmann::json
// keeps just one of two equal keys, so a DOM cannot tell) and nesting at most kMaxJsonDepth. It
// is linear in the text; nlohmann's parser callback is not (every object_end rescans the parent
// object for discarded values, quadratic in the tensor count), which is why this is a separate
// pass before a plain json::parse.
struct StructureCheck : json::json_sax_t {
  std::vector<std::set<std::string>> open_objects;
  size_t depth = 0;
  std::string duplicate;
  size_t duplicate_depth = 0;  // 1: a key of the top-level object
  bool too_deep = false;

  bool open() {
    if (++depth > kMaxJsonDepth) {
      too_deep = true;
      return false;
    }
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    open_objects.emplace_back();
    return open();
  }
  bool key(string_t& k) override {
    if (!open_objects.back().insert(k).second) {
      duplicate = k;
      duplicate_depth = open_objects.size();
      return false;
    }
    return true;
  }
  bool end_object() override {
    open_objects.pop_back();
    --depth;
    return true;
  }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override {
    --depth;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;  // json::parse below reports it with its own message
  }
};

// Parses JSON text strictly (see StructureCheck); every failure is a FormatError naming `file`.
json parse_json_strict(const char* begin, const char* end, const std::string& file, const char* what) {
  StructureCheck check;
  const bool structure_ok = json::sax_parse(begin, end, &check);
  if (!check.duplicate.empty()) {
    if (check.duplicate_depth == 1 && std::string(what) == "header")
      fail_tensor(file, check.duplicate, std::string("duplicate name in the ") + what);
    fail(file, std::string("duplicate key '") + check.duplicate + "' in the " + what);
  }
  if (check.too_deep)
    fail(file,
         std::string("the ") + what + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  json j;
  try {
    j = json::parse(begin, end);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number overflow
    fail(file, std::string("malformed JSON ") + what + ": " + e.what());
  }
  if (!structure_ok) fail(file, std::string("malformed JSON ") + what);  // not reached: parse threw
  return j;
}

// Reads a non-negative JSON integer into *out; false when it is not one.
bool get_uint(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string errno_str() {
  return std::strerror(errno);
}

}  // namespace

// ---------------------------------------------------------------- dtypes

const char* dtype_name(DType d) {
  for (const auto& r : kDTypes)
    if (r.dtype == d) return r.name;
  return "?";
}

size_t dtype_size(DType d) {
  for (const auto& r : kDTypes)
    if (r.dtype == d) return r.size;
  return 0;
}

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& r : kDTypes) {
    if (s == r.name) {
      *out = r.dtype;
      return true;
    }
  }
  return false;
}

bool is_float_weight_dtype(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- conversion

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {  // inf / nan (payload kept)
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24; normalise into an f32 normal
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet nan
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // nan
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs >= 0x38800000u) {                       // normal f16 range (>= 2^-14)
    const uint32_t rounding = 0xfffu + ((abs >> 13) & 1u);
    return sign | static_cast<uint16_t>((abs - (112u << 23) + rounding) >> 13);
  }
  if (abs < 0x33000000u) return sign;  // below half the smallest subnormal (2^-25): zero
  // Subnormal f16: shift the full 24-bit significand right, rounding to nearest even.
  const uint32_t exp = abs >> 23;
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exp;  // 14..24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return sign | static_cast<uint16_t>(q);
}

void convert_to_f32(const void* src, DType dtype, size_t n, float* dst) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);  // the mmap gives no alignment guarantee
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, bytes + 2 * i, 2);
        dst[i] = bf16_to_f32(b);
      }
      return;
    default:
      throw FormatError(std::string("convert_to_f32: dtype ") + dtype_name(dtype) +
                        " is not a float weight dtype (F32, F16, BF16)");
  }
}

std::vector<float> read_f32(const TensorInfo& t) {
  if (!is_float_weight_dtype(t.dtype))
    fail_tensor(t.file, t.name, std::string("dtype ") + dtype_name(t.dtype) + " cannot be read as f32");
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.data, t.dtype, out.size(), out.data());
  return out;
}

// ---------------------------------------------------------------- SafetensorsFile

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, size_);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_str());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const std::string err = errno_str();
    ::close(fd);
    fail(path, "cannot stat: " + err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    fail(path, "file is " + std::to_string(f->size_) + " bytes, shorter than the 8-byte header length");
  }
  void* map = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string map_err = map == MAP_FAILED ? errno_str() : "";
  ::close(fd);  // the mapping stays valid
  if (map == MAP_FAILED) fail(path, "mmap failed: " + map_err);
  f->map_ = map;
  const auto* base = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " is absurdly large (limit " +
                   std::to_string(kMaxHeaderBytes) + " bytes); not a safetensors file?");
  if (header_len > f->size_ - 8)
    fail(path, "header length " + std::to_string(header_len) + " goes beyond the end of the file (" +
                   std::to_string(f->size_) + " bytes); truncated?");
  const char* hbeg = reinterpret_cast<const char*>(base + 8);
  const json header = parse_json_strict(hbeg, hbeg + header_len, path, "header");
  if (!header.is_object())
    fail(path, std::string("header is a JSON ") + header.type_name() + ", not an object");

  const uint8_t* data_area = base + 8 + header_len;
  const uint64_t data_size = f->size_ - 8 - header_len;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value of '" + m.key() + "' is not a string");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(path, name, "entry is not an object");
    TensorInfo t;
    t.name = name;
    t.file = path;

    auto dt = v.find("dtype");
    if (dt == v.end()) fail_tensor(path, name, "missing dtype");
    if (!dt->is_string()) fail_tensor(path, name, "dtype is not a string");
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      fail_tensor(path, name, "unknown dtype '" + dt->get<std::string>() + "'");

    auto sh = v.find("shape");
    if (sh == v.end()) fail_tensor(path, name, "missing shape");
    if (!sh->is_array()) fail_tensor(path, name, "shape is not an array");
    if (sh->size() > kMaxRank)
      fail_tensor(path, name,
                  "shape has " + std::to_string(sh->size()) + " dimensions (at most " +
                      std::to_string(kMaxRank) + ")");
    uint64_t numel = 1;
    // The product of the non-zero dims must fit in int64 too: an empty tensor [0, 2^40, 2^40] is
    // 0 bytes, but code computing a row size from its dims would overflow.
    uint64_t nonzero_numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      uint64_t dim;
      if (!get_uint(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX))
        fail_tensor(path, name, "shape " + sh->dump() + " has an entry that is not a non-negative integer");
      t.shape.push_back(static_cast<int64_t>(dim));
      overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
      overflow = overflow ||
                 __builtin_mul_overflow(nonzero_numel, std::max<uint64_t>(dim, 1), &nonzero_numel) ||
                 nonzero_numel > static_cast<uint64_t>(INT64_MAX);
    }
    uint64_t need = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &need);

    auto off = v.find("data_offsets");
    if (off == v.end()) fail_tensor(path, name, "missing data_offsets");
    uint64_t begin = 0, end = 0;
    if (!off->is_array() || off->size() != 2 || !get_uint((*off)[0], &begin) || !get_uint((*off)[1], &end))
      fail_tensor(path, name, "data_offsets " + off->dump() + " is not a pair of non-negative integers");
    if (end < begin) fail_tensor(path, name, "data_offsets " + off->dump() + " end before begin");
    if (overflow)
      fail_tensor(path, name, "shape " + shape_str(t.shape) + " overflows 64 bits in element/byte count");
    if (need != end - begin)
      fail_tensor(path, name,
                  "shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                      std::to_string(need) + " bytes but data_offsets " + off->dump() + " span " +
                      std::to_string(end - begin));
    if (end > data_size)
      fail_tensor(path, name,
                  "data_offsets " + off->dump() + " lie outside the data area (" + std::to_string(data_size) +
                      " bytes)");
    t.data = data_area + begin;
    t.nbytes = static_cast<size_t>(end - begin);
    auto [pos, inserted] = f->tensors_.emplace(name, std::move(t));
    (void)inserted;  // duplicates were rejected while parsing
    spans.push_back(Span{begin, end, &pos->first});
  }

  // Overlap check: sort by begin; each non-empty tensor must start at or after the previous end.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin == s.end) continue;
    if (prev != nullptr && s.begin < prev->end)
      fail_tensor(path, *s.name,
                  "data [" + std::to_string(s.begin) + "," + std::to_string(s.end) + ") overlaps tensor '" +
                      *prev->name + "' [" + std::to_string(prev->begin) + "," + std::to_string(prev->end) +
                      ")");
    prev = &s;
  }
  return f;
}

// ---------------------------------------------------------------- WeightStore

namespace {

std::string find_index_in_dir(const fs::path& dir) {
  std::error_code ec;  // an unreadable directory or entry is skipped, never a filesystem_error
  if (fs::is_regular_file(dir / "model.safetensors.index.json", ec))
    return (dir / "model.safetensors.index.json").string();
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file(ec) && n.size() > 23 && n.ends_with(".safetensors.index.json"))
      found.push_back(e.path().string());
  }
  if (found.size() == 1) return found[0];
  if (found.size() > 1) fail(dir.string(), "several *.safetensors.index.json files; pass one of them");
  return "";
}

std::string find_single_in_dir(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_regular_file(dir / "model.safetensors", ec)) return (dir / "model.safetensors").string();
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && e.path().extension() == ".safetensors") found.push_back(e.path().string());
  if (found.size() == 1) return found[0];
  if (found.empty())
    fail(dir.string(),
         "no model.safetensors, model.safetensors.index.json or *.safetensors file in this directory");
  std::sort(found.begin(), found.end());
  std::string list;
  for (const auto& s : found) {
    list += ' ';
    list += fs::path(s).filename().string();
  }
  fail(dir.string(), "several *.safetensors files but no index json to say which to use:" + list);
}

std::string read_small_file(const std::string& path) {
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (fp == nullptr) fail(path, "cannot open: " + errno_str());
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, fp)) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxHeaderBytes) {
      std::fclose(fp);
      fail(path, "index file is absurdly large");
    }
  }
  std::fclose(fp);
  return text;
}

// The path of shard `shard` named by the index `index_path` in directory `dir`, which must lie
// inside `dir`: a relative name with no ".." escaping it, whose containing directory resolves
// (realpath, symlinks followed) inside the real `dir`. The shard file itself may be a symlink
// anywhere (a Hugging Face cache snapshot links every file to ../../blobs/<hash>); a symlinked
// directory may not lead out. Throws FormatError naming the index, the tensor and the shard.
fs::path shard_inside(const fs::path& dir, const std::string& shard, const std::string& index_path,
                      const std::string& tensor) {
  auto refuse = [&](const std::string& why) {
    fail_tensor(index_path, tensor,
                "shard '" + shard + "' " + why + "; shards must be inside " +
                    (dir.empty() ? std::string(".") : dir.string()));
  };
  const fs::path rel(shard);
  if (shard.empty()) refuse("is an empty name");
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory()) refuse("is an absolute path");
  if (shard.find('\0') != std::string::npos) refuse("contains a NUL byte");
  const fs::path norm = rel.lexically_normal();
  if (norm.empty() || *norm.begin() == ".." || norm == ".") refuse("lies outside the model folder");
  const fs::path shard_path = dir / norm;
  std::error_code ec;
  if (!fs::is_regular_file(shard_path, ec))
    fail_tensor(index_path, tensor,
                "mapped to shard '" + shard + "', which does not exist (" + shard_path.string() + ")");
  const fs::path real_dir = fs::canonical(dir.empty() ? fs::path(".") : dir, ec);
  if (ec) fail(index_path, "cannot resolve the model folder: " + ec.message());
  const fs::path real_parent =
      fs::canonical(shard_path.parent_path().empty() ? fs::path(".") : shard_path.parent_path(), ec);
  if (ec) refuse("cannot be resolved: " + ec.message());
  const auto [dir_end, parent_it] =
      std::mismatch(real_dir.begin(), real_dir.end(), real_parent.begin(), real_parent.end());
  (void)parent_it;
  if (dir_end != real_dir.end())
    refuse("resolves to " + (real_parent / shard_path.filename()).string() + ", outside the model folder");
  return shard_path;
}

}  // namespace

WeightStore WeightStore::open(const std::string& dir_or_file) {
  WeightStore ws;
  ws.root_ = dir_or_file;
  std::error_code ec;
  const fs::path p(dir_or_file);
  if (!fs::exists(p, ec)) fail(dir_or_file, "no such file or directory");

  std::string index_path, single_path;
  if (fs::is_directory(p, ec)) {
    index_path = find_index_in_dir(p);
    if (index_path.empty()) single_path = find_single_in_dir(p);
  } else if (p.extension() == ".json") {
    index_path = dir_or_file;
  } else {
    single_path = dir_or_file;
  }

  if (!single_path.empty()) {
    ws.files_.push_back(SafetensorsFile::open(single_path));
    for (const auto& [name, info] : ws.files_[0]->tensors()) ws.by_name_[name] = &info;
    return ws;
  }

  // Sharded: {"metadata": {...}, "weight_map": {tensor: shard file relative to the index}}.
  const std::string text = read_small_file(index_path);
  const json index = parse_json_strict(text.data(), text.data() + text.size(), index_path, "index");
  if (!index.is_object()) fail(index_path, "index is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) fail(index_path, "index has no \"weight_map\" object");
  const fs::path dir = fs::path(index_path).parent_path();

  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;  // by shard name
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) fail_tensor(index_path, it.key(), "weight_map value is not a string");
    const std::string shard = it.value().get<std::string>();
    if (shards.count(shard)) continue;
    const fs::path shard_path = shard_inside(dir, shard, index_path, it.key());
    shards[shard] = SafetensorsFile::open(shard_path.string());
  }
  for (const auto& kv : shards) ws.files_.push_back(kv.second);  // in shard-name order
  if (ws.files_.empty()) fail(index_path, "weight_map is empty");

  // Every tensor of every shard, once.
  for (const auto& f : ws.files_) {
    for (const auto& [name, info] : f->tensors()) {
      auto [pos, inserted] = ws.by_name_.emplace(name, &info);
      if (!inserted)
        fail_tensor(index_path, name, "present in two shards: " + pos->second->file + " and " + f->path());
    }
  }
  // Every entry of the weight map must be in the shard it names.
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string shard = it.value().get<std::string>();
    const auto& tensors = shards.at(shard)->tensors();
    if (!tensors.count(it.key()))
      fail_tensor(index_path, it.key(),
                  "the index maps it to shard '" + shard + "', which has no such tensor");
  }
  return ws;
}

bool WeightStore::has(const std::string& name) const {
  return by_name_.count(name) != 0;
}

const TensorInfo* WeightStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& WeightStore::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw FormatError(root_ + ": missing tensor '" + name + "'");
  return *t;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& kv : by_name_) out.push_back(kv.first);
  return out;
}

size_t WeightStore::bytes_on_disk() const {
  size_t total = 0;
  for (const auto& f : files_) total += f->file_size();
  return total;
}

const std::map<std::string, std::string>& WeightStore::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return files_.empty() ? kEmpty : files_.front()->metadata();
}

// ---------------------------------------------------------------- SafetensorsWriter

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  if (name.empty() || name == "__metadata__")
    throw std::invalid_argument("SafetensorsWriter: bad tensor name '" + name + "'");
  if (names_.count(name)) throw std::invalid_argument("SafetensorsWriter: duplicate tensor '" + name + "'");
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
      throw std::invalid_argument("SafetensorsWriter: tensor '" + name + "' has a bad shape " +
                                  shape_str(shape));
  }
  if (numel * dtype_size(dtype) != nbytes)
    throw std::invalid_argument(
        "SafetensorsWriter: tensor '" + name + "' shape " + shape_str(shape) + " of " + dtype_name(dtype) +
        " needs " + std::to_string(numel * dtype_size(dtype)) + " bytes, got " + std::to_string(nbytes));
  Entry e{name, dtype, std::move(shape), {}};
  const auto* b = static_cast<const uint8_t*>(data);
  e.bytes.assign(b, b + nbytes);
  names_.insert(name);
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  // The data area must start 8-byte aligned; the format pads the header with spaces.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  // Write next to the target and rename, so readers never see a half-written file. The pid in
  // the temp name keeps two processes writing the same path from clobbering each other's temp.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (fp == nullptr) throw std::runtime_error(tmp + ": cannot create: " + errno_str());
  bool ok = std::fwrite(len_le, 1, 8, fp) == 8 && std::fwrite(text.data(), 1, text.size(), fp) == text.size();
  for (const auto& e : entries_)
    ok = ok && (e.bytes.empty() || std::fwrite(e.bytes.data(), 1, e.bytes.size(), fp) == e.bytes.size());
  ok = ok && std::fflush(fp) == 0 && ::fsync(fileno(fp)) == 0;
  const std::string err = ok ? "" : errno_str();
  ok = (std::fclose(fp) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw std::runtime_error(tmp + ": write failed: " + (err.empty() ? errno_str() : err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string rerr = errno_str();
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename " + tmp + " into place: " + rerr);
  }
}

}  // namespace recap::io
