// io/safetensors: one safetensors file (8-byte length, JSON header, data area) as the input.
// Documented errors: io::FormatError. Every tensor that opens is converted to f32 when it is a
// float dtype, so a header whose offsets escape the mapping would be caught by ASan.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  const std::string path = fuzz::scratch_dir() + "/model.safetensors";
  fuzz::write_file(path, fuzz::as_view(data, size));
  try {
    auto file = io::SafetensorsFile::open(path);
    for (const auto& [name, t] : file->tensors()) {
      if (t.nbytes > file->file_size()) __builtin_trap();  // offsets were checked against the file
      if (io::is_float_weight_dtype(t.dtype)) (void)io::read_f32(t);
    }
  } catch (const io::FormatError&) {
  }
  return 0;
}
