// Tests of io/safetensors: reading every bundled checkpoint, writer round trip, sharded
// checkpoints, f16/bf16 conversion, and one test per malformed-file case, each asserting that
// the message names the file and (where there is one) the tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fs = std::filesystem;
using namespace recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;

// A fresh temporary directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "recap_st_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file with the given raw header text and `data_bytes` zero bytes of data.
std::string make_raw(const std::string& header, size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

// Opens `bytes` written to a temp file; returns the FormatError message ("" when it opened).
std::string open_error(const TempDir& dir, const std::string& bytes,
                       const std::string& name = "bad.safetensors") {
  const std::string path = dir.file(name);
  write_bytes(path, bytes);
  try {
    SafetensorsFile::open(path);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

std::string store_error(const std::string& path) {
  try {
    WeightStore::open(path);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

// ------------------------------------------------------------------ bundled files

std::vector<std::string> bundled_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kData + "/tiny"))
    if (e.is_directory() && fs::exists(e.path() / "model.safetensors"))
      out.push_back((e.path() / "model.safetensors").string());
  out.push_back(kData + "/tiny/golden.safetensors");
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SafetensorsBundled, EveryTinyModelAndGoldenFileReads) {
  const auto files = bundled_files();
  ASSERT_GE(files.size(), 12u);  // 11 model dirs + golden.safetensors
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f->tensors().empty());
    const uint8_t* lo = nullptr;
    for (const auto& [name, t] : f->tensors()) {
      EXPECT_EQ(t.name, name);
      EXPECT_EQ(t.file, path);
      EXPECT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * dtype_size(t.dtype)) << name;
      if (lo == nullptr || t.data < lo) lo = t.data;
    }
    // The data area starts 8-byte aligned in files written by HF (header padded with spaces).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(lo) % 8, 0u);
    WeightStore ws = WeightStore::open(fs::path(path).parent_path().string());
    if (fs::path(path).filename() == "model.safetensors") {
      EXPECT_EQ(ws.names().size(), f->tensors().size());
    }
  }
}

TEST(SafetensorsBundled, GoldenHasNonFloatDtypesRecognised) {
  auto f = SafetensorsFile::open(kData + "/tiny/golden.safetensors");
  bool saw_i64 = false, saw_u8 = false;
  for (const auto& [name, t] : f->tensors()) {
    saw_i64 |= t.dtype == DType::I64;
    saw_u8 |= t.dtype == DType::U8;
    if (!is_float_weight_dtype(t.dtype)) {
      EXPECT_THROW(read_f32(t), FormatError) << name;
    }
  }
  EXPECT_TRUE(saw_i64);
  EXPECT_TRUE(saw_u8);
}

// The bf16/fp16 tiny models were made from the fp32 ones by torch's round-to-nearest-even
// casts: our narrowing conversions must reproduce them bit for bit, and widening them back
// must give exactly the rounded values.
void expect_narrowing_matches(const std::string& f32_dir, const std::string& low_dir) {
  SCOPED_TRACE(low_dir);
  WeightStore a = WeightStore::open(kData + "/tiny/" + f32_dir);
  WeightStore b = WeightStore::open(kData + "/tiny/" + low_dir);
  int compared = 0;
  for (const auto& name : a.names()) {
    const TensorInfo& ta = a.get(name);
    const TensorInfo& tb = b.get(name);
    ASSERT_EQ(ta.shape, tb.shape) << name;
    if (ta.dtype != DType::F32) continue;
    ASSERT_TRUE(tb.dtype == DType::F16 || tb.dtype == DType::BF16) << name;
    const std::vector<float> wide = read_f32(ta);
    const std::vector<float> back = read_f32(tb);
    for (size_t i = 0; i < wide.size(); ++i) {
      uint16_t stored;
      std::memcpy(&stored, tb.data + 2 * i, 2);
      const uint16_t ours = tb.dtype == DType::F16 ? f32_to_f16(wide[i]) : f32_to_bf16(wide[i]);
      ASSERT_EQ(ours, stored) << name << "[" << i << "]";
      const float expect = tb.dtype == DType::F16 ? f16_to_f32(stored) : bf16_to_f32(stored);
      ASSERT_EQ(back[i], expect);
    }
    ++compared;
  }
  EXPECT_GT(compared, 10);
}

TEST(SafetensorsBundled, Bf16AndF16ModelsAreRoundedFp32Models) {
  expect_narrowing_matches("llava_orig_fp32", "llava_orig_bf16");
  expect_narrowing_matches("llava_orig_fp32", "llava_orig_fp16");
  expect_narrowing_matches("llava_hf_fp32", "llava_hf_bf16");
  expect_narrowing_matches("clip_vision_fp32", "clip_vision_fp16");
}

// ------------------------------------------------------------------ conversion

uint16_t half_bits(_Float16 h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

TEST(SafetensorsConvert, F16ToF32ExhaustiveAgainstCompiler) {
  // The compiler's _Float16 (software conversion in libgcc) is an independent reference.
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> out(65536);
  convert_to_f32(all.data(), DType::F16, all.size(), out.data());
  for (uint32_t i = 0; i < 65536; ++i) {
    _Float16 h;
    const uint16_t b = static_cast<uint16_t>(i);
    std::memcpy(&h, &b, 2);
    const float want = static_cast<float>(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(out[i])) << std::hex << i;
    } else {
      ASSERT_EQ(std::memcmp(&out[i], &want, 4), 0) << std::hex << i << " got " << out[i] << " want " << want;
    }
  }
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
}

TEST(SafetensorsConvert, F32ToF16AgainstCompiler) {
  std::mt19937 rng(1234);
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x33000000u,
                                    0x33000001u, 0x387fc000u, 0x38800000u, 0x477fefffu, 0x477ff000u,
                                    0x3f800000u, 0x3f801000u, 0x3f803000u, 0x00000001u};
  for (int i = 0; i < 200000; ++i) patterns.push_back(rng());
  // Dense coverage of the f16 subnormal/normal boundary region and the overflow edge.
  for (uint32_t b = 0x32f00000u; b < 0x39000000u; b += 0x1001u) patterns.push_back(b);
  for (uint32_t b = 0x477f0000u; b < 0x47800100u; b += 0x11u) patterns.push_back(b);
  for (uint32_t bits : patterns) {
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), half_bits(static_cast<_Float16>(f))) << std::hex << bits;
  }
}

TEST(SafetensorsConvert, Bf16RoundTripAndRounding) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float f = bf16_to_f32(b);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    ASSERT_EQ(bits, static_cast<uint32_t>(b) << 16);
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), b);
    }
  }
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0); 1 + 3*2^-8 rounds up to even.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(SafetensorsConvert, UnalignedSourceAndF32Copy) {
  std::vector<uint8_t> buf(1 + 3 * 4);
  const float vals[3] = {1.5f, -2.25f, 1e-30f};
  std::memcpy(buf.data() + 1, vals, sizeof vals);
  float out[3];
  convert_to_f32(buf.data() + 1, DType::F32, 3, out);
  EXPECT_EQ(std::memcmp(out, vals, sizeof vals), 0);
  EXPECT_THROW(convert_to_f32(buf.data(), DType::I64, 1, out), FormatError);
}

TEST(SafetensorsConvert, DTypeNamesRoundTrip) {
  for (const char* n : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
                        "BOOL", "F8_E4M3", "F8_E5M2"}) {
    DType d;
    ASSERT_TRUE(parse_dtype(n, &d)) << n;
    EXPECT_STREQ(dtype_name(d), n);
    EXPECT_GT(dtype_size(d), 0u);
  }
  DType d;
  EXPECT_FALSE(parse_dtype("f32", &d));
  EXPECT_FALSE(parse_dtype("FP32", &d));
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_TRUE(is_float_weight_dtype(DType::BF16));
  EXPECT_FALSE(is_float_weight_dtype(DType::F64));
}

// ------------------------------------------------------------------ writer round trip

TEST(SafetensorsWriter, RoundTrip) {
  TempDir dir;
  const std::vector<float> a = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x0001};
  const std::vector<int64_t> ids = {0, 1, 2, 3, -200};
  const uint8_t byte = 7;
  SafetensorsWriter w;
  w.add("a.weight", DType::F32, {2, 3}, a.data(), a.size() * 4);
  w.add("b", DType::BF16, {3}, b.data(), b.size() * 2);
  w.add("odd", DType::U8, {1}, &byte, 1);  // makes the next offset odd: alignment is the file's business
  w.add("ids", DType::I64, {5}, ids.data(), ids.size() * 8);
  w.add("empty", DType::F32, {0, 4}, nullptr, 0);
  w.add("scalar", DType::F32, {}, a.data(), 4);
  w.set_metadata("format", "pt");
  w.set_metadata("recap.note", "hello \"quoted\"");
  const std::string path = dir.file("rt.safetensors");
  w.write(path);

  // No temp file left behind; header length padded to a multiple of 8 with spaces.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  std::ifstream in(path, std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = raw.substr(8, n);
  EXPECT_EQ(header.find_first_of(std::string("\0\n", 2)), std::string::npos);
  EXPECT_TRUE(nlohmann::json::parse(header).is_object());

  WeightStore ws = WeightStore::open(path);
  EXPECT_EQ(ws.names().size(), 6u);
  EXPECT_EQ(ws.metadata().at("format"), "pt");
  EXPECT_EQ(ws.metadata().at("recap.note"), "hello \"quoted\"");
  EXPECT_EQ(ws.bytes_on_disk(), raw.size());
  const TensorInfo& ta = ws.get("a.weight");
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(read_f32(ta), a);
  const TensorInfo& tb = ws.get("b");
  EXPECT_EQ(tb.dtype, DType::BF16);
  EXPECT_EQ(read_f32(tb), (std::vector<float>{1.0f, -2.0f, bf16_to_f32(1)}));
  const TensorInfo& ti = ws.get("ids");
  EXPECT_EQ(ti.dtype, DType::I64);
  std::vector<int64_t> ids_back(5);
  std::memcpy(ids_back.data(), ti.data, ti.nbytes);
  EXPECT_EQ(ids_back, ids);
  EXPECT_EQ(ws.get("empty").nbytes, 0u);
  EXPECT_EQ(ws.get("empty").numel(), 0);
  EXPECT_EQ(ws.get("scalar").numel(), 1);
  EXPECT_EQ(read_f32(ws.get("scalar"))[0], 1.f);
  EXPECT_EQ(ws.find("nope"), nullptr);
  EXPECT_FALSE(ws.has("nope"));
  EXPECT_TRUE(ws.has("ids"));
}

TEST(SafetensorsWriter, OverwritesAtomicallyAndRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  const float one = 1.f, two = 2.f;
  SafetensorsWriter w1;
  w1.add("t", DType::F32, {1}, &one, 4);
  w1.write(path);
  SafetensorsWriter w2;
  w2.add("t", DType::F32, {1}, &two, 4);
  w2.write(path);
  EXPECT_EQ(read_f32(WeightStore::open(path).get("t"))[0], 2.f);

  SafetensorsWriter bad;
  EXPECT_THROW(bad.add("t", DType::F32, {2}, &one, 4), std::invalid_argument);  // 8 bytes needed
  bad.add("t", DType::F32, {1}, &one, 4);
  EXPECT_THROW(bad.add("t", DType::F32, {1}, &one, 4), std::invalid_argument);  // duplicate
  EXPECT_THROW(bad.add("__metadata__", DType::F32, {1}, &one, 4), std::invalid_argument);
  EXPECT_THROW(bad.add("neg", DType::F32, {-1}, &one, 4), std::invalid_argument);
  EXPECT_THROW(bad.write(dir.file("no_such_dir/x.safetensors")), std::runtime_error);

  SafetensorsWriter empty;  // no tensors at all is a valid file
  empty.write(dir.file("empty.safetensors"));
  EXPECT_TRUE(WeightStore::open(dir.file("empty.safetensors")).names().empty());
}

// ------------------------------------------------------------------ sharded checkpoints

// Splits tests/data/tiny/llava_orig_fp32 into two shards + index, the way HF does it.
struct ShardedCopy {
  TempDir dir;
  std::vector<std::string> shard1, shard2;

  ShardedCopy() {
    WeightStore src = WeightStore::open(kData + "/tiny/llava_orig_fp32");
    SafetensorsWriter w1, w2;
    nlohmann::json wm = nlohmann::json::object();
    size_t i = 0;
    for (const auto& name : src.names()) {
      const TensorInfo& t = src.get(name);
      const bool first = i++ % 2 == 0;
      (first ? w1 : w2).add(name, t.dtype, t.shape, t.data, t.nbytes);
      (first ? shard1 : shard2).push_back(name);
      wm[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    w1.set_metadata("format", "pt");
    w1.write(dir.file("model-00001-of-00002.safetensors"));
    w2.write(dir.file("model-00002-of-00002.safetensors"));
    write_index(wm);
  }
  void write_index(const nlohmann::json& weight_map) const {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    write_bytes(dir.file("model.safetensors.index.json"), index.dump(2));
  }
};

TEST(SafetensorsSharded, SameTensorsAsTheSingleFile) {
  ShardedCopy sc;
  WeightStore single = WeightStore::open(kData + "/tiny/llava_orig_fp32");
  for (const std::string& root : {sc.dir.path(), sc.dir.file("model.safetensors.index.json")}) {
    SCOPED_TRACE(root);
    WeightStore ws = WeightStore::open(root);
    EXPECT_EQ(ws.files().size(), 2u);
    EXPECT_EQ(ws.names(), single.names());
    for (const auto& name : single.names()) {
      const TensorInfo& a = single.get(name);
      const TensorInfo& b = ws.get(name);
      EXPECT_EQ(a.dtype, b.dtype);
      EXPECT_EQ(a.shape, b.shape);
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << name;
    }
    for (const auto& name : sc.shard2) EXPECT_NE(ws.get(name).file.find("00002-of-00002"), std::string::npos);
    EXPECT_EQ(ws.bytes_on_disk(), fs::file_size(sc.dir.file("model-00001-of-00002.safetensors")) +
                                      fs::file_size(sc.dir.file("model-00002-of-00002.safetensors")));
    EXPECT_EQ(ws.metadata().at("format"), "pt");
  }
}

TEST(SafetensorsSharded, IndexNamesMissingShard) {
  ShardedCopy sc;
  fs::remove(sc.dir.file("model-00002-of-00002.safetensors"));
  const std::string msg = store_error(sc.dir.path());
  EXPECT_HAS(msg, "model.safetensors.index.json");
  EXPECT_HAS(msg, "tensor '" + sc.shard2.front() + "'");
  EXPECT_HAS(msg, "model-00002-of-00002.safetensors', which does not exist");
}

TEST(SafetensorsSharded, IndexNamesTensorItsShardLacks) {
  ShardedCopy sc;
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& n : sc.shard1) wm[n] = "model-00001-of-00002.safetensors";
  for (const auto& n : sc.shard2) wm[n] = "model-00002-of-00002.safetensors";
  wm["model.layers.99.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors";
  sc.write_index(wm);
  const std::string msg = store_error(sc.dir.path());
  EXPECT_HAS(msg, "model.safetensors.index.json");
  EXPECT_HAS(msg, "tensor 'model.layers.99.mlp.up_proj.weight'");
  EXPECT_HAS(msg, "which has no such tensor");
}

TEST(SafetensorsSharded, IndexMapsTensorToTheWrongShard) {
  ShardedCopy sc;
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& n : sc.shard1) wm[n] = "model-00002-of-00002.safetensors";
  for (const auto& n : sc.shard2) wm[n] = "model-00002-of-00002.safetensors";
  sc.write_index(wm);  // shard 1 is never named, so its tensors' entries point at shard 2
  const std::string msg = store_error(sc.dir.path());
  EXPECT_HAS(msg, "tensor '");
  EXPECT_HAS(msg, "which has no such tensor");
}

TEST(SafetensorsSharded, TensorPresentInTwoShards) {
  ShardedCopy sc;
  // Rewrite shard 2 with one of shard 1's tensors added.
  WeightStore ws = WeightStore::open(sc.dir.path());
  SafetensorsWriter w2;
  for (const auto& n : sc.shard2) {
    const TensorInfo& t = ws.get(n);
    w2.add(n, t.dtype, t.shape, t.data, t.nbytes);
  }
  const TensorInfo& dup = ws.get(sc.shard1.front());
  w2.add(dup.name, dup.dtype, dup.shape, dup.data, dup.nbytes);
  w2.write(sc.dir.file("model-00002-of-00002.safetensors.new"));
  fs::rename(sc.dir.file("model-00002-of-00002.safetensors.new"),
             sc.dir.file("model-00002-of-00002.safetensors"));
  const std::string msg = store_error(sc.dir.path());
  EXPECT_HAS(msg, "tensor '" + sc.shard1.front() + "'");
  EXPECT_HAS(msg, "present in two shards");
  EXPECT_HAS(msg, "model-00001-of-00002.safetensors");
  EXPECT_HAS(msg, "model-00002-of-00002.safetensors");
}

TEST(SafetensorsSharded, MalformedIndex) {
  ShardedCopy sc;
  const std::string index = sc.dir.file("model.safetensors.index.json");
  write_bytes(index, "{\"weight_map\": {\"a\": ");
  EXPECT_HAS(store_error(sc.dir.path()), index + ": malformed JSON index");
  write_bytes(index, "{\"metadata\": {}}");
  EXPECT_HAS(store_error(sc.dir.path()), index + ": index has no \"weight_map\" object");
  write_bytes(index, "[1]");
  EXPECT_HAS(store_error(sc.dir.path()), index + ": index is not a JSON object");
  write_bytes(index, "{\"weight_map\": {\"a\": 3}}");
  EXPECT_HAS(store_error(sc.dir.path()), "tensor 'a': weight_map value is not a string");
  write_bytes(index,
              "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\", \"x\": "
              "\"model-00002-of-00002.safetensors\"}}");
  EXPECT_HAS(store_error(sc.dir.path()), index + ": duplicate key 'x' in the index");
}

// ------------------------------------------------------------------ store resolution

TEST(SafetensorsStore, PathResolutionErrors) {
  TempDir dir;
  EXPECT_HAS(store_error(dir.file("nope")), dir.file("nope") + ": no such file or directory");
  EXPECT_HAS(store_error(dir.path()), dir.path() + ": no model.safetensors");
  SafetensorsWriter w;
  const float one = 1.f;
  w.add("t", DType::F32, {1}, &one, 4);
  w.write(dir.file("a.safetensors"));
  EXPECT_EQ(WeightStore::open(dir.path()).names().size(), 1u);  // exactly one *.safetensors: used
  w.write(dir.file("b.safetensors"));
  const std::string msg = store_error(dir.path());
  EXPECT_HAS(msg, "several *.safetensors files");
  EXPECT_HAS(msg, "a.safetensors b.safetensors");
  w.write(dir.file("model.safetensors"));  // model.safetensors wins over the others
  EXPECT_EQ(WeightStore::open(dir.path()).files()[0]->path(), dir.file("model.safetensors"));
}

TEST(SafetensorsStore, GetMissingTensorNamesRootAndTensor) {
  WeightStore ws = WeightStore::open(kData + "/tiny/llava_orig_fp32");
  try {
    ws.get("model.no_such.weight");
    FAIL() << "no throw";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()), kData + "/tiny/llava_orig_fp32: missing tensor 'model.no_such.weight'");
  }
}

// ------------------------------------------------------------------ malformed files

class Malformed : public ::testing::Test {
 protected:
  TempDir dir;
  std::string path() const { return dir.file("bad.safetensors"); }
  // Message for a file with `header` and `data` zero bytes; asserts it names the file.
  std::string err(const std::string& header, size_t data = 0) {
    const std::string m = open_error(dir, make_raw(header, data));
    if (!m.empty()) {
      EXPECT_EQ(m.rfind(path() + ": ", 0), 0u) << "message does not start with the file: " << m;
    }
    return m;
  }
};

TEST_F(Malformed, ValidMinimalFileOpens) {
  EXPECT_EQ(err(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "");
}

TEST_F(Malformed, FileShorterThan8Bytes) {
  EXPECT_HAS(open_error(dir, "abc"), path() + ": file is 3 bytes, shorter than the 8-byte header length");
  EXPECT_HAS(open_error(dir, ""), path() + ": file is 0 bytes");
}

TEST_F(Malformed, HeaderLengthBeyondFile) {
  EXPECT_HAS(open_error(dir, le64(1000) + "{}"),
             path() + ": header length 1000 goes beyond the end of the file");
}

TEST_F(Malformed, HeaderLengthAbsurd) {
  EXPECT_HAS(open_error(dir, le64(200ull << 20) + "{}"),
             path() + ": header length 209715200 is absurdly large");
  EXPECT_HAS(open_error(dir, le64(~0ull) + "{}"), "absurdly large");  // no overflow in the bound check
}

TEST_F(Malformed, MalformedJson) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32",)"), "malformed JSON header");
  EXPECT_HAS(err("\xff\xfe{}"), "malformed JSON header");
}

TEST_F(Malformed, HeaderNotAnObject) {
  EXPECT_HAS(err("[1,2,3]"), "header is a JSON array, not an object");
}

TEST_F(Malformed, EntryNotAnObject) {
  EXPECT_HAS(err(R"({"t":[1]})"), "tensor 't': entry is not an object");
}

TEST_F(Malformed, MissingDtype) {
  EXPECT_HAS(err(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8), "tensor 't': missing dtype");
}

TEST_F(Malformed, DtypeNotString) {
  EXPECT_HAS(err(R"({"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
             "tensor 't': dtype is not a string");
}

TEST_F(Malformed, UnknownDtype) {
  EXPECT_HAS(err(R"({"w.q":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8),
             "tensor 'w.q': unknown dtype 'F33'");
}

TEST_F(Malformed, MissingShape) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", 8), "tensor 't': missing shape");
}

TEST_F(Malformed, ShapeNotArray) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
             "tensor 't': shape is not an array");
}

TEST_F(Malformed, ShapeNegativeOrNotInteger) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
             "tensor 't': shape [-2] has an entry that is not a non-negative integer");
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
             "not a non-negative integer");
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
             "not a non-negative integer");
}

TEST_F(Malformed, MissingDataOffsets) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "tensor 't': missing data_offsets");
}

TEST_F(Malformed, InvalidDataOffsets) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})", 16),
             "tensor 't': data_offsets [0,8,16] is not a pair of non-negative integers");
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 16),
             "is not a pair of non-negative integers");
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":"0,8"}})", 16),
             "is not a pair of non-negative integers");
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 16),
             "tensor 't': data_offsets [8,0] end before begin");
}

TEST_F(Malformed, ShapeByteSizeMismatch) {
  EXPECT_HAS(err(R"({"emb":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 16),
             "tensor 'emb': shape [2,3] of BF16 needs 12 bytes but data_offsets [0,8] span 8");
}

TEST_F(Malformed, ShapeProductOverflow) {
  // 2^32 * 2^32 wraps to 0 in 64 bits, which would "match" an empty span without the check.
  EXPECT_HAS(err(R"({"big":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
             "tensor 'big': shape [4294967296,4294967296] overflows 64 bits");
  // numel fits, numel * 4 bytes does not.
  EXPECT_HAS(err(R"({"big":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
             "tensor 'big': shape [4611686018427387904] overflows 64 bits");
}

TEST_F(Malformed, OffsetsOutsideDataArea) {
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
             "tensor 't': data_offsets [8,24] lie outside the data area (16 bytes)");
  // A truncated file: the last tensor's bytes are missing.
  EXPECT_HAS(err(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 15),
             "lie outside the data area");
}

TEST_F(Malformed, OverlappingTensors) {
  const std::string m = err(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      16);
  EXPECT_HAS(m, "tensor 'b': data [4,12) overlaps tensor 'a' [0,8)");
  // Identical spans overlap too.
  EXPECT_HAS(
      err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
          8),
      "overlaps tensor");
  // Empty tensors may sit anywhere (they own no bytes).
  EXPECT_EQ(
      err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
          8),
      "");
}

TEST_F(Malformed, DuplicateTensorNames) {
  const std::string m = err(
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      8);
  EXPECT_HAS(m, "tensor 'w': duplicate name in the header");
  // A duplicate key inside one entry is caught as well.
  EXPECT_HAS(err(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4),
             "duplicate key 'dtype' in the header");
}

TEST_F(Malformed, BadMetadata) {
  EXPECT_HAS(err(R"({"__metadata__":[1]})"), "__metadata__ is not an object");
  EXPECT_HAS(err(R"({"__metadata__":{"format":1}})"), "__metadata__ value of 'format' is not a string");
}

TEST_F(Malformed, HeaderPaddingWithSpacesIsAccepted) {
  EXPECT_EQ(err(std::string(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})") + "      ", 1), "");
}

TEST_F(Malformed, NonRegularFile) {
  EXPECT_HAS(store_error(dir.path() + "/x.safetensors"), "no such file or directory");
  fs::create_directory(dir.file("d.safetensors"));
  try {
    SafetensorsFile::open(dir.file("d.safetensors"));
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_HAS(e.what(), dir.file("d.safetensors") + ": not a regular file");
  }
}

}  // namespace
