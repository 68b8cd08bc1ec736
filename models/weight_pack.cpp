#include "models/weight_pack.h"

#include <cstring>
#include <sstream>
#include <stdexcept>

namespace recap::models {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << ']';
  return os.str();
}

[[noreturn]] void shape_error(const io::TensorInfo& t, const std::string& expected) {
  throw std::runtime_error(t.file + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) +
                           ", expected " + expected);
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
      throw std::runtime_error(t.file + ": tensor '" + t.name + "' has dtype " + io::dtype_name(t.dtype) +
                               ", expected F32, F16 or BF16");
  }
}

void expect_shape(const io::TensorInfo& t, const std::vector<int64_t>& shape) {
  if (t.shape != shape) shape_error(t, shape_str(shape));
}

kernels::PackedWeight pack_tensor(const io::WeightStore& store, const std::string& name, int64_t n, int64_t k,
                                  kernels::WeightFormat format, bool flatten_trailing) {
  const io::TensorInfo& t = store.get(name);
  if (flatten_trailing) {
    int64_t trailing = 1;
    for (size_t i = 1; i < t.shape.size(); ++i) trailing *= t.shape[i];
    if (t.shape.empty() || t.shape[0] != n || trailing != k)
      shape_error(t, "[" + std::to_string(n) + ", ...] with " + std::to_string(k) + " values per row");
  } else {
    expect_shape(t, {n, k});
  }
  return kernels::pack_weight(t.data, weight_src_type(t), n, k, format);
}

kernels::PackedWeight pack_rows_concat(const io::WeightStore& store, const std::vector<std::string>& names,
                                       const std::vector<int64_t>& rows, int64_t k,
                                       kernels::WeightFormat format) {
  if (names.size() != rows.size() || names.empty())
    throw std::invalid_argument("pack_rows_concat: bad arguments");
  std::vector<const io::TensorInfo*> parts;
  bool same_dtype = true;
  int64_t total_rows = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const io::TensorInfo& t = store.get(names[i]);
    expect_shape(t, {rows[i], k});
    weight_src_type(t);  // validates the dtype
    if (!parts.empty() && t.dtype != parts.front()->dtype) same_dtype = false;
    parts.push_back(&t);
    total_rows += rows[i];
  }
  if (same_dtype) {
    // Concatenate the raw rows (no conversion), then pack once.
    const size_t elem = io::dtype_size(parts.front()->dtype);
    std::vector<uint8_t> joined(static_cast<size_t>(total_rows) * k * elem);
    size_t off = 0;
    for (const io::TensorInfo* t : parts) {
      std::memcpy(joined.data() + off, t->data, t->nbytes);
      off += t->nbytes;
    }
    return kernels::pack_weight(joined.data(), weight_src_type(*parts.front()), total_rows, k, format);
  }
  std::vector<float> joined(static_cast<size_t>(total_rows) * k);
  size_t off = 0;
  for (const io::TensorInfo* t : parts) {
    io::convert_to_f32(t->data, t->dtype, static_cast<size_t>(t->numel()), joined.data() + off);
    off += static_cast<size_t>(t->numel());
  }
  return kernels::pack_weight(joined.data(), kernels::SrcType::F32, total_rows, k, format);
}

std::vector<float> load_f32(const io::WeightStore& store, const std::string& name,
                            const std::vector<int64_t>& shape) {
  const io::TensorInfo& t = store.get(name);
  expect_shape(t, shape);
  weight_src_type(t);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  io::convert_to_f32(t.data, t.dtype, out.size(), out.data());
  return out;
}

std::vector<float> load_f32_concat(const io::WeightStore& store, const std::vector<std::string>& names,
                                   const std::vector<int64_t>& lengths) {
  std::vector<float> out;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<float> part = load_f32(store, names[i], {lengths[i]});
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

}  // namespace recap::models
