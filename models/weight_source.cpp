#include "models/weight_source.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "models/config.h"

namespace recap::models {

void reject_pickle_only_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::string> pickles;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string ext = e.path().extension().string();
    if (ext == ".safetensors") return;
    if (ext == ".bin" || ext == ".pt" || ext == ".pth") pickles.push_back(e.path().filename().string());
  }
  if (pickles.empty()) return;
  std::sort(pickles.begin(), pickles.end());
  std::string names;
  for (size_t i = 0; i < pickles.size() && i < 3; ++i) names += (i ? ", " : "") + pickles[i];
  if (pickles.size() > 3) names += ", ...";
  throw ConfigError(dir + ": only PyTorch pickle weights (" + names +
                    ") and no *.safetensors file; the engine reads safetensors only: convert them "
                    "once with the command in docs/REAL_MODEL.md (\"Checkpoints with only .bin "
                    "files\") and point --weights at the result");
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << ']';
  return os.str();
}

[[noreturn]] void shape_error(const io::TensorInfo& t, const std::string& expected) {
  throw ConfigError(t.file + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) + ", expected " +
                    expected);
}

void check_matrix_request(const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                          int64_t k) {
  if (names.empty() || names.size() != rows.size() || k <= 0)
    throw std::invalid_argument("weight source: bad matrix request");
  for (int64_t r : rows)
    if (r <= 0) throw std::invalid_argument("weight source: bad matrix request for '" + names.front() + "'");
}

// splitmix64: a fast, well-mixed stream per (seed, name, index).
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// n values uniform in [-a, a) with a = stddev * sqrt(3) (so their standard deviation is stddev).
void fill_uniform(float* out, int64_t n, uint64_t stream, float stddev) {
  const float a = stddev * std::sqrt(3.0f);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = mix(stream ^ mix(static_cast<uint64_t>(i)));
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[i] = (2.0f * u - 1.0f) * a;
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

kernels::SrcType weight_src_type(const io::TensorInfo& t) {
  switch (t.dtype) {
    case io::DType::F32:
      return kernels::SrcType::F32;
    case io::DType::F16:
      return kernels::SrcType::F16;
    case io::DType::BF16:
      return kernels::SrcType::BF16;
    default:
      throw ConfigError(t.file + ": tensor '" + t.name + "' has dtype " + io::dtype_name(t.dtype) +
                        ", expected F32, F16 or BF16");
  }
}

void expect_shape(const io::TensorInfo& t, const std::vector<int64_t>& shape) {
  if (t.shape != shape) shape_error(t, shape_str(shape));
}

std::vector<float> WeightSource::vectors_concat(const std::vector<std::string>& names,
                                                const std::vector<int64_t>& lengths) {
  std::vector<float> out;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<float> part = vector(names[i], {lengths[i]});
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

kernels::PackedWeight StoreWeightSource::matrix(const std::vector<std::string>& names,
                                                const std::vector<int64_t>& rows, int64_t k,
                                                kernels::WeightFormat format, bool flatten_trailing) {
  check_matrix_request(names, rows, k);
  std::vector<const io::TensorInfo*> parts;
  bool same_dtype = true;
  int64_t total_rows = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const io::TensorInfo& t = store_.get(names[i]);
    if (flatten_trailing) {
      int64_t trailing = 1;
      for (size_t d = 1; d < t.shape.size(); ++d) trailing *= t.shape[d];
      if (t.shape.size() < 2 || t.shape[0] != rows[i] || trailing != k) {
        // Appended, not `"[" + std::to_string(...)`: g++ 12 warns -Wrestrict on that (false positive).
        std::string want = "[";
        want += std::to_string(rows[i]);
        want += ", ...] with ";
        want += std::to_string(k);
        want += " values per row";
        shape_error(t, want);
      }
    } else {
      expect_shape(t, {rows[i], k});
    }
    weight_src_type(t);  // validates the dtype
    if (!parts.empty() && t.dtype != parts.front()->dtype) same_dtype = false;
    parts.push_back(&t);
    total_rows += rows[i];
  }
  if (parts.size() == 1)  // straight from the mmap
    return kernels::pack_weight(parts.front()->data, weight_src_type(*parts.front()), total_rows, k, format);
  if (same_dtype) {
    // Concatenate the raw rows (no conversion), then pack once.
    std::vector<uint8_t> joined(static_cast<size_t>(total_rows * k) * io::dtype_size(parts.front()->dtype));
    size_t off = 0;
    for (const io::TensorInfo* t : parts) {
      std::memcpy(joined.data() + off, t->data, t->nbytes);
      off += t->nbytes;
    }
    return kernels::pack_weight(joined.data(), weight_src_type(*parts.front()), total_rows, k, format);
  }
  std::vector<float> joined(static_cast<size_t>(total_rows * k));
  size_t off = 0;
  for (const io::TensorInfo* t : parts) {
    io::convert_to_f32(t->data, t->dtype, static_cast<size_t>(t->numel()), joined.data() + off);
    off += static_cast<size_t>(t->numel());
  }
  return kernels::pack_weight(joined.data(), kernels::SrcType::F32, total_rows, k, format);
}

std::vector<float> StoreWeightSource::vector(const std::string& name, const std::vector<int64_t>& shape) {
  const io::TensorInfo& t = store_.get(name);
  expect_shape(t, shape);
  weight_src_type(t);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  io::convert_to_f32(t.data, t.dtype, out.size(), out.data());
  return out;
}

kernels::PackedWeight SyntheticWeightSource::matrix(const std::vector<std::string>& names,
                                                    const std::vector<int64_t>& rows, int64_t k,
                                                    kernels::WeightFormat format, bool /*flatten_trailing*/) {
  check_matrix_request(names, rows, k);
  int64_t total_rows = 0;
  for (int64_t r : rows) total_rows += r;
  std::vector<float> values(static_cast<size_t>(total_rows * k));
  int64_t row = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    fill_uniform(values.data() + row * k, rows[i] * k, mix(seed_ ^ std::hash<std::string>{}(names[i])),
                 stddev_);
    row += rows[i];
  }
  return kernels::pack_weight(values.data(), kernels::SrcType::F32, total_rows, k, format);
}

std::vector<float> SyntheticWeightSource::vector(const std::string& name, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  fill_uniform(out.data(), n, mix(seed_ ^ std::hash<std::string>{}(name)), stddev_);
  if (ends_with(name, "norm.weight") || ends_with(name, "norm1.weight") || ends_with(name, "norm2.weight") ||
      ends_with(name, "layrnorm.weight"))
    for (float& v : out) v += 1.0f;
  return out;
}

}  // namespace recap::models
