// io::decode_image against the reference itself: for every file in tests/data/images_pillow/
// (written by scripts/gen_pillow_fixtures.py with Debian's Pillow 9.4 + libjpeg-turbo 2.1.5),
// the decoded RGB must equal Pillow's `Image.open(f).convert('RGB')` byte for byte, at the same
// size. The expected bytes are committed, so this test never needs Pillow.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "io/image.h"

using namespace recap;

namespace {

const std::string kDir = std::string(RECAP_TEST_DATA) + "/images_pillow";

struct PillowCase {
  std::string name, file, rgb, pillow_mode;
  int width = 0, height = 0;
  int exif_orientation = 0;  // 0: no EXIF orientation tag
};

// gtest prints parameters in test names and failure messages; the case name says it all.
void PrintTo(const PillowCase& pc, std::ostream* os) {
  *os << pc.name;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Read at test registration; a missing manifest gives no cases, which ManifestCoversEveryKind
// then reports as a failure.
std::vector<PillowCase> load_cases() {
  std::ifstream f(kDir + "/manifest.json");
  if (!f) return {};
  const auto m = nlohmann::json::parse(f);
  std::vector<PillowCase> out;
  for (const auto& c : m.at("cases")) {
    PillowCase pc;
    pc.name = c.at("name").get<std::string>();
    pc.file = c.at("file").get<std::string>();
    pc.rgb = c.at("rgb").get<std::string>();
    pc.pillow_mode = c.at("pillow_mode").get<std::string>();
    pc.width = c.at("width").get<int>();
    pc.height = c.at("height").get<int>();
    pc.exif_orientation = c.value("exif_orientation", 0);
    out.push_back(pc);
  }
  return out;
}

const std::vector<PillowCase>& cases() {
  static const std::vector<PillowCase> c = load_cases();
  return c;
}

class PillowDecode : public ::testing::TestWithParam<PillowCase> {};

TEST_P(PillowDecode, MatchesPillowExactly) {
  const PillowCase& pc = GetParam();
  const io::Image img = io::decode_image_file(kDir + "/" + pc.file);
  const std::vector<uint8_t> expected = read_bytes(kDir + "/" + pc.rgb);
  ASSERT_EQ(expected.size(), static_cast<size_t>(pc.width) * pc.height * 3) << "manifest and .rgb disagree";
  ASSERT_EQ(img.width, pc.width);
  ASSERT_EQ(img.height, pc.height);
  ASSERT_EQ(img.rgb.size(), expected.size());
  size_t diffs = 0, first = 0;
  int max_diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int d = std::abs(int(img.rgb[i]) - int(expected[i]));
    if (d) {
      if (!diffs) first = i;
      ++diffs;
      max_diff = std::max(max_diff, d);
    }
  }
  EXPECT_EQ(diffs, 0u) << pc.name << ": " << diffs << " of " << expected.size() << " bytes differ (max "
                       << max_diff << "), first at pixel " << (first / 3) % pc.width << ","
                       << (first / 3) / pc.width << " channel " << first % 3 << ": got "
                       << int(img.rgb[first]) << ", Pillow " << int(expected[first]);
  // ImageSource::mode promises Pillow's mode for the file.
  EXPECT_EQ(img.source.mode, pc.pillow_mode);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PillowDecode, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<PillowCase>& info) { return info.param.name; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(PillowDecode);

// The fixture set is the specification of what must match: every kind named in issue 4 is
// present (so deleting fixtures cannot make the suite pass vacuously).
TEST(PillowDecodeManifest, ManifestCoversEveryKind) {
  std::set<std::string> names;
  for (const PillowCase& pc : cases()) names.insert(pc.name);
  for (const char* required :
       {"jpeg_420_q90_37x29", "jpeg_420_q90_64x48", "jpeg_444_q90", "jpeg_422_q90", "jpeg_progressive",
        "jpeg_gray", "jpeg_cmyk", "jpeg_exif_orientation6", "png_rgba", "png_palette_trns", "png_gray16",
        "png_la", "png_rgb16", "png_la16", "png_rgb_adam7", "png_palette_short"})
    EXPECT_TRUE(names.count(required)) << "missing fixture " << required;
}

// LLaVA never applies EXIF orientation: the Orientation=6 JPEG keeps its stored 37x29 size
// (a rotation would give 29x37), and its pixels are the un-rotated ones (MatchesPillowExactly).
TEST(PillowDecodeManifest, ExifOrientationIsIgnored) {
  const auto& all = cases();
  const auto it = std::find_if(all.begin(), all.end(),
                               [](const PillowCase& pc) { return pc.name == "jpeg_exif_orientation6"; });
  ASSERT_NE(it, all.end());
  EXPECT_EQ(it->exif_orientation, 6);
  const std::vector<uint8_t> file = read_bytes(kDir + "/" + it->file);
  const std::string head(file.begin(), file.begin() + std::min<size_t>(file.size(), 64));
  ASSERT_NE(head.find("Exif"), std::string::npos) << "fixture lost its APP1 EXIF segment";
  const io::Image img = io::decode_image_file(kDir + "/" + it->file);
  EXPECT_EQ(img.width, 37);
  EXPECT_EQ(img.height, 29);
  // And the same picture without EXIF decodes to the same pixels.
  const auto plain = std::find_if(all.begin(), all.end(),
                                  [](const PillowCase& pc) { return pc.name == "jpeg_420_q90_37x29"; });
  ASSERT_NE(plain, all.end());
  EXPECT_EQ(img.rgb, io::decode_image_file(kDir + "/" + plain->file).rgb);
}

}  // namespace
