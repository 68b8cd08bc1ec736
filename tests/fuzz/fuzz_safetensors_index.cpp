// io/safetensors sharded checkpoints: the input is model.safetensors.index.json in a folder
// holding two small real shards (written once), opened as a WeightStore. Shard names that lead
// outside the folder must be refused (FormatError), never opened. Documented errors:
// io::FormatError.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "fuzz_util.h"
#include "io/safetensors.h"

namespace {

// <scratch>/model/{a,b}.safetensors with tensors x, y (a) and z (b); <scratch>/outside.safetensors
// next to the folder, which no index may reach.
const std::string& model_dir() {
  static const std::string dir = [] {
    using namespace recap::io;
    const std::string root = recap::fuzz::scratch_dir();
    const std::string d = root + "/model";
    std::filesystem::create_directories(d);
    const float v[4] = {1.f, 2.f, 3.f, 4.f};
    SafetensorsWriter a;
    a.add("x", DType::F32, {2}, v, 8);
    a.add("y", DType::F32, {1, 2}, v + 2, 8);
    a.write(d + "/a.safetensors");
    SafetensorsWriter b;
    b.add("z", DType::F32, {4}, v, 16);
    b.write(d + "/b.safetensors");
    b.write(root + "/outside.safetensors");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  const std::string& dir = model_dir();
  fuzz::write_file(dir + "/model.safetensors.index.json", fuzz::as_view(data, size));
  try {
    io::WeightStore ws = io::WeightStore::open(dir);
    for (const auto& f : ws.files()) {
      // Every opened shard is one of the two inside the folder.
      const std::string p = std::filesystem::path(f->path()).lexically_normal().string();
      if (p != dir + "/a.safetensors" && p != dir + "/b.safetensors") __builtin_trap();
    }
    for (const std::string& name : ws.names()) (void)io::read_f32(ws.get(name));
  } catch (const io::FormatError&) {
  }
  return 0;
}
