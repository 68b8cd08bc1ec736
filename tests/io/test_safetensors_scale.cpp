// io/safetensors at scale and against hostile indexes (issue 14): a header with 200k tensors
// parses in bounded time (the CTest TIMEOUT of this binary is the bound: the parse used to be
// quadratic, 20 s at 40k tensors), and an index naming shards outside the model folder is refused
// with a message naming the index, the tensor and the shard.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"

namespace fs = std::filesystem;
using namespace recap::io;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "recap_st_scale_XXXXXX").string();
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

std::string store_error(const std::string& path) {
  try {
    WeightStore::open(path);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsScale, Header200kTensorsParses) {
  constexpr int kTensors = 200000;
  std::string header = "{";
  for (int i = 0; i < kTensors; ++i) {
    if (i) header += ',';
    header += "\"layers." + std::to_string(i) + ".w\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  header += "}";
  std::string data(4u * kTensors, '\0');
  for (int i = 0; i < kTensors; ++i) std::memcpy(&data[4u * i], &i, 4);  // tensor i holds i
  TempDir dir;
  const std::string path = dir.file("many.safetensors");
  write_bytes(path, le64(header.size()) + header + data);

  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), static_cast<size_t>(kTensors));
  for (int i : {0, 1, 12345, kTensors - 1}) {
    const TensorInfo& t = f->tensors().at("layers." + std::to_string(i) + ".w");
    int32_t v = -1;
    ASSERT_EQ(t.nbytes, 4u);
    std::memcpy(&v, t.data, 4);
    EXPECT_EQ(v, i);
  }
}

TEST(SafetensorsScale, OffsetsBeyondTheFileNameTheFile) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  // Declares 4000 bytes; the file holds 16.
  const std::string header = R"({"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}})";
  write_bytes(path, le64(header.size()) + header + std::string(16, '\0'));
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": tensor 'w': data_offsets [0,4000] lie outside the data area (16 bytes)");
  }
}

TEST(SafetensorsScale, EmptyShapeWithHugeDimsRefused) {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})";
  write_bytes(path, le64(header.size()) + header);
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": tensor 'w': shape [0,4611686018427387904,4] overflows 64 bits in element/byte count");
  }
}

TEST(SafetensorsScale, DeeplyNestedHeaderRefused) {
  TempDir dir;
  const std::string path = dir.file("deep.safetensors");
  const std::string header = "{\"__metadata__\":" + std::string(100, '[') + std::string(100, ']') + "}";
  write_bytes(path, le64(header.size()) + header);
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened";
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": the header nests deeper than 64 levels");
  }
}

// A model folder with one real shard and an index whose weight_map names `shard` for tensor "w".
struct IndexedFolder {
  TempDir root;
  std::string model;
  std::string index;
  explicit IndexedFolder(const std::string& shard) {
    model = root.file("model");
    fs::create_directories(model);
    SafetensorsWriter w;
    const float one = 1.f;
    w.add("w", DType::F32, {1}, &one, 4);
    w.write(root.file("outside.safetensors"));  // next to the model folder
    w.write(model + "/model-00001-of-00001.safetensors");
    index = model + "/model.safetensors.index.json";
    nlohmann::json j = {{"weight_map", {{"w", shard}}}};
    write_bytes(index, j.dump());
  }
};

TEST(SafetensorsIndex, ShardInsideTheFolderOpens) {
  IndexedFolder f("model-00001-of-00001.safetensors");
  WeightStore ws = WeightStore::open(f.model);
  EXPECT_EQ(ws.get("w").file, f.model + "/model-00001-of-00001.safetensors");
  // "./name" and "sub/../name" stay inside.
  IndexedFolder g("./sub/../model-00001-of-00001.safetensors");
  EXPECT_EQ(WeightStore::open(g.model).names(), std::vector<std::string>{"w"});
}

TEST(SafetensorsIndex, ParentRelativeShardRefused) {
  IndexedFolder f("../outside.safetensors");
  EXPECT_EQ(store_error(f.model), f.index +
                                      ": tensor 'w': shard '../outside.safetensors' lies outside the model "
                                      "folder; shards must be inside " +
                                      f.model);
}

TEST(SafetensorsIndex, AbsoluteShardRefused) {
  IndexedFolder probe("x");
  const std::string abs = probe.root.file("outside.safetensors");  // exists: refused for being absolute
  IndexedFolder f(abs);
  EXPECT_EQ(store_error(f.model), f.index + ": tensor 'w': shard '" + abs +
                                      "' is an absolute path; shards must be inside " + f.model);
  IndexedFolder g("/abs.safetensors");
  EXPECT_EQ(store_error(g.model), g.index +
                                      ": tensor 'w': shard '/abs.safetensors' is an absolute path; shards "
                                      "must be inside " +
                                      g.model);
}

TEST(SafetensorsIndex, SymlinkedDirectoryLeadingOutRefused) {
  IndexedFolder f("escape/outside.safetensors");
  fs::create_directory_symlink(f.root.path(), f.model + "/escape");
  const std::string msg = store_error(f.model);
  EXPECT_EQ(msg, f.index + ": tensor 'w': shard 'escape/outside.safetensors' resolves to " +
                     fs::canonical(f.root.path()).string() +
                     "/outside.safetensors, outside the model folder; shards must be inside " + f.model);
}

TEST(SafetensorsIndex, SymlinkedShardFileAllowed) {
  // Hugging Face cache snapshots link each file to ../../blobs/<hash>: the link is inside.
  IndexedFolder f("linked.safetensors");
  fs::create_symlink(f.root.file("outside.safetensors"), f.model + "/linked.safetensors");
  EXPECT_EQ(WeightStore::open(f.model).get("w").file, f.model + "/linked.safetensors");
}

}  // namespace
