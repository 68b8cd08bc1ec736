// models/config: the input is one of the JSON files a checkpoint folder holds, selected by its
// first byte -- config.json of an original-LLaVA, a llava-hf or a CLIP checkpoint,
// preprocessor_config.json or generation_config.json -- placed in a copy of a tiny test
// checkpoint (tensor files symlinked), then resolved and validated as `inspect` does. Documented
// errors: models::ConfigError, io::FormatError (a weights file the config leads to).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "models/config.h"

namespace fs = std::filesystem;

namespace {

struct Layout {
  const char* tiny;  // tests/data/tiny/<dir>
  std::string dir;   // the scratch copy
};

// Copies of three tiny checkpoints: json files copied (the target overwrites one per run and
// restores it afterwards), safetensors symlinked.
Layout* layouts() {
  static Layout all[] = {{"llava_orig_with_vt_fp32", ""}, {"llava_hf_fp32", ""}, {"clip_vision_fp32", ""}};
  static const bool made = [] {
    for (Layout& l : all) {
      l.dir = recap::fuzz::scratch_dir() + "/" + l.tiny;
      fs::create_directories(l.dir);
      for (const auto& e : fs::directory_iterator(std::string(RECAP_TEST_DATA) + "/tiny/" + l.tiny)) {
        const fs::path dst = fs::path(l.dir) / e.path().filename();
        if (e.path().extension() == ".safetensors")
          fs::create_symlink(e.path(), dst);
        else
          fs::copy_file(e.path(), dst, fs::copy_options::overwrite_existing);
      }
    }
    // mm_vision_tower is "../clip_vision_fp32": the scratch copy sits next to it as well.
    return true;
  }();
  (void)made;
  return all;
}

std::string read_file(const std::string& path) {
  std::string s;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  std::string_view in = fuzz::as_view(data, size);
  const uint8_t sel = fuzz::take_selector(&in);
  Layout& l = layouts()[sel % 3];
  static const char* const kFiles[] = {"config.json", "config.json", "preprocessor_config.json",
                                       "generation_config.json"};
  const std::string target = l.dir + "/" + kFiles[(sel / 3) % 4];
  const bool existed = fs::exists(target);
  const std::string saved = existed ? read_file(target) : std::string();
  fuzz::write_file(target, in);
  try {
    models::Checkpoint ck = models::open_checkpoint_unchecked(l.dir);
    (void)models::checkpoint_problems(ck);
    (void)models::text_config_json(ck.config.text).dump();
  } catch (const models::ConfigError&) {
  } catch (const io::FormatError&) {
  }
  if (existed)
    fuzz::write_file(target, saved);
  else
    fs::remove(target);
  return 0;
}
