// Safetensors reading (mmap, zero-copy, strictly validated) and writing (atomic).
//
// A WeightStore is either one `model.safetensors` (or any *.safetensors file) or a sharded
// checkpoint described by `model.safetensors.index.json` ({"weight_map": {name: shard}}).
// Every validation failure throws io::FormatError whose message names the file and, where
// there is one, the tensor. Parsing is linear in the header size (a header is at most 100 MB,
// nests at most 64 levels, a shape at most 8 dims); every data_offsets pair is checked against
// the file size. An index's shards must lie inside the index's folder (relative names, no ".."
// out of it, no symlinked directory leading out; the shard file itself may be a symlink, as in
// a Hugging Face cache snapshot).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace recap::io {

struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2 };
const char* dtype_name(DType d);  // safetensors spelling: "F32", "BF16", ...
size_t dtype_size(DType d);       // bytes per element
bool parse_dtype(const std::string& s, DType* out);
bool is_float_weight_dtype(DType d);  // F32, F16, BF16: what the engine computes from

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  // Points into the mmap. Alignment is whatever the file gives (HF writers and ours align the data
  // area to 8 bytes, and tensors are usually multiples of 8 bytes), so do not assume it: check
  // (uintptr_t)data % alignof(T) before casting, or copy/convert (convert_to_f32 handles any).
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the shard holding it
  int64_t numel() const;
};

// One mmap'ed safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory (or a single file), by name.
class WeightStore {
 public:
  // dir_or_file: a directory with model.safetensors.index.json, or model.safetensors, or
  // exactly one *.safetensors file; or a path to a .safetensors file / index json.
  static WeightStore open(const std::string& dir_or_file);
  bool has(const std::string& name) const;
  const TensorInfo* find(const std::string& name) const;
  // Throws FormatError("<dir>: missing tensor '<name>'") when absent.
  const TensorInfo& get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::string& root() const { return root_; }
  size_t bytes_on_disk() const;
  // Metadata of the first file (shards are kept in file-name order; our quantized cache
  // stores its format tags there).
  const std::map<std::string, std::string>& metadata() const;

 private:
  std::string root_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
};

// Writes a safetensors file: tensors are appended (copied), then write() lays out header + data
// (header padded with spaces to a multiple of 8 bytes, offsets in insertion order) to
// path.tmp.<pid>, fsyncs, and renames to path. add() throws std::invalid_argument for a duplicate
// name or a byte count that does not match the shape; write() throws std::runtime_error on I/O errors.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t nbytes);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::set<std::string> names_;  // of entries_: the duplicate check stays O(log n) per add
  std::map<std::string, std::string> metadata_;
};

// Converts n elements of a float weight dtype (F32/F16/BF16) to f32, exactly (every f16/bf16
// value is representable in f32). src needs no alignment. Other dtypes throw FormatError.
void convert_to_f32(const void* src, DType dtype, size_t n, float* dst);
// The whole tensor as f32 (a copy). Throws FormatError naming the tensor for non-float dtypes.
std::vector<float> read_f32(const TensorInfo& t);

// Scalar conversions of one value (exact widening; narrowing rounds to nearest, ties to even).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);
uint16_t f32_to_f16(float f);
uint16_t f32_to_bf16(float f);

}  // namespace recap::io
