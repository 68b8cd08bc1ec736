// io/exif: img2dataset's `exif` field (json.dumps of exifread's tags, details=False) for a
// JPEG built here, and hostile EXIF blocks (cycles, huge counts, offsets past the end).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "exif_fixture.h"
#include "io/exif.h"

using namespace recap::io;
using recap::testing::jpeg_with_exif;
using recap::testing::kExpectedExifJson;
using recap::testing::TiffBuilder;

TEST(Exif, FormatsTagsAsExifreadAndImg2datasetDo) {
  const std::string tiff = recap::testing::sample_exif_tiff();
  EXPECT_EQ(exif_json_from_tiff(reinterpret_cast<const uint8_t*>(tiff.data()), tiff.size()),
            kExpectedExifJson);
  // The same block inside a JPEG's APP1 segment.
  const std::string jpeg = jpeg_with_exif(std::string("\xFF\xD8\xFF\xD9", 4), tiff);
  EXPECT_EQ(exif_json_from_jpeg(reinterpret_cast<const uint8_t*>(jpeg.data()), jpeg.size()),
            kExpectedExifJson);
}

TEST(Exif, NoExifGivesAnEmptyObject) {
  const std::string plain("\xFF\xD8\xFF\xE0\x00\x04JF\xFF\xDA\x00\x02\xFF\xD9", 14);
  EXPECT_EQ(exif_json_from_jpeg(reinterpret_cast<const uint8_t*>(plain.data()), plain.size()), "{}");
  EXPECT_EQ(exif_json_from_jpeg(nullptr, 0), "{}");
  const std::string png("\x89PNG\r\n\x1A\n", 8);
  EXPECT_EQ(exif_json_from_jpeg(reinterpret_cast<const uint8_t*>(png.data()), png.size()), "{}");
}

TEST(Exif, PythonJsonStringEscapes) {
  EXPECT_EQ(python_json_string("a\"b\\c\n\t\x01"), "\"a\\\"b\\\\c\\n\\t\\u0001\"");
  EXPECT_EQ(python_json_string("Zo\xC3\xAB \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "\"Zo\\u00eb \\u20ac \\ud83d\\ude00\"");
}

// Hostile blocks end, stay bounded and still give valid JSON.
TEST(Exif, HostileBlocksAreSafe) {
  // IFD0 whose next-IFD pointer is itself, an ExifOffset pointing back at IFD0, a GPS pointer
  // at IFD0 too, a count of 2^32-1 LONGs, and offsets past the end.
  TiffBuilder t;
  t.ifd(8,
        {{0x010F, 2, 0xFFFFFFFFu, "", 0xFFFFFF00u},
         {0x0111, 4, 0xFFFFFFFFu, "", 0x10},
         {0x011A, 5, 1, "", 0x7FFFFFF0u},
         {0x8769, 4, 1, TiffBuilder::be32(8)},
         {0x8825, 4, 1, TiffBuilder::be32(8)}},
        /*next=*/8);
  const std::string block = t.bytes();
  const std::string out = exif_json_from_tiff(reinterpret_cast<const uint8_t*>(block.data()), block.size());
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["Image Make"], "");
  EXPECT_EQ(j["Image StripOffsets"], "[]");  // exifread keeps no values for counts >= 1000
  EXPECT_EQ(j["Image XResolution"], "0/0");  // read past the end: zeros
  EXPECT_EQ(j["Image ExifOffset"], "8");
  // Truncated and garbage inputs of every length up to the full block.
  for (size_t n = 0; n <= block.size(); ++n) {
    const std::string o = exif_json_from_tiff(reinterpret_cast<const uint8_t*>(block.data()), n);
    EXPECT_TRUE(nlohmann::json::accept(o)) << n << ": " << o;
  }
  std::string noise(4096, '\0');
  uint32_t x = 12345;
  for (auto& c : noise) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  noise[0] = 'M', noise[1] = 'M', noise[2] = 0, noise[3] = 42, noise[4] = 0, noise[5] = 0, noise[6] = 0,
  noise[7] = 8;
  const std::string o = exif_json_from_tiff(reinterpret_cast<const uint8_t*>(noise.data()), noise.size());
  EXPECT_TRUE(nlohmann::json::accept(o)) << o;
  // A JPEG whose APP1 length runs past the end.
  const std::string bad(
      "\xFF\xD8\xFF\xE1\xFF\xFF"
      "Exif\0\0MM",
      14);
  EXPECT_EQ(exif_json_from_jpeg(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()), "{}");
}
