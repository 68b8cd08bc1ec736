// A TIFF/EXIF block writer for tests, a sample EXIF block with the tags web JPEGs carry, and
// the `exif` text img2dataset writes for it: json.dumps({k: str(v).strip() for k, v in
// exifread.process_file(f, details=False).items()}), spelled out from exifread's formatting
// rules (tag tables of exifread/tags/exif.py, Ratio printed as a reduced Fraction, lists as
// Python lists, more than 50 values cut to 20 and ", ... ]", make_string for ExifVersion,
// MakerNote skipped with details=False, sub-IFDs named EXIF / GPS, IFD1 "Thumbnail").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace recap::testing {

class TiffBuilder {
 public:
  struct Entry {
    uint16_t tag;
    uint16_t type;
    uint32_t count;
    std::string value;    // the value bytes (big-endian); inline when <= 4 bytes
    uint32_t offset = 0;  // non-zero: write this offset instead of placing `value`
  };

  static std::string be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
  static std::string be32(uint32_t v) {
    return be16(static_cast<uint16_t>(v >> 16)) + be16(static_cast<uint16_t>(v));
  }

  // Big-endian ("MM") header pointing at IFD0 = offset 8; the value data area starts at 400.
  TiffBuilder() : buf_("MM\0\x2A\0\0\0\x08", 8), data_(400) {}

  void ifd(uint32_t at, const std::vector<Entry>& entries, uint32_t next = 0) {
    put(at, be16(static_cast<uint16_t>(entries.size())));
    uint32_t e = at + 2;
    for (const Entry& en : entries) {
      put(e, be16(en.tag) + be16(en.type) + be32(en.count));
      if (en.offset != 0) {
        put(e + 8, be32(en.offset));
      } else if (en.value.size() <= 4) {
        put(e + 8, en.value + std::string(4 - en.value.size(), '\0'));
      } else {
        put(e + 8, be32(data_));
        put(data_, en.value);
        data_ += static_cast<uint32_t>(en.value.size());
      }
      e += 12;
    }
    put(e, be32(next));
  }

  std::string bytes() const { return buf_; }

 private:
  void put(uint32_t at, const std::string& b) {
    if (buf_.size() < at + b.size()) buf_.resize(at + b.size(), '\0');
    buf_.replace(at, b.size(), b);
  }
  std::string buf_;
  uint32_t data_;
};

inline std::string rational(uint32_t n, uint32_t d) {
  return TiffBuilder::be32(n) + TiffBuilder::be32(d);
}

// IFD0 at 8 (-> IFD1 "Thumbnail" at 360), EXIF IFD at 200, GPS IFD at 320.
inline std::string sample_exif_tiff() {
  using T = TiffBuilder;
  T t;
  std::string strip_counts;
  for (uint16_t i = 0; i < 60; ++i) strip_counts += T::be16(i);
  t.ifd(8,
        {{0x010F, 2, 6, std::string("Canon\0", 6)},
         {0x0110, 2, 7, std::string("EOS 5D\0", 7)},
         {0x0112, 3, 1, T::be16(6)},
         {0x0117, 3, 60, strip_counts},
         {0x011A, 5, 1, rational(144, 2)},
         {0x0128, 3, 1, T::be16(2)},
         {0x0131, 2, 14, std::string("  GIMP 2.10  \0", 14)},
         {0x013B, 2, 5, std::string("Zo\xC3\xAB\0", 5)},
         {0x8769, 4, 1, T::be32(200)},
         {0x8825, 4, 1, T::be32(320)}},
        /*next=*/360);
  t.ifd(200, {{0x829A, 5, 1, rational(10, 2000)},
              {0x8827, 3, 1, T::be16(400)},
              {0x9000, 7, 4, "0230"},
              {0x9003, 2, 20, std::string("2024:01:02 03:04:05\0", 20)},
              {0x9204, 10, 1, rational(0xFFFFFFFEu, 6)},
              {0x9209, 3, 1, T::be16(16)},
              {0x927C, 7, 4, "ABCD"},
              {0xA002, 4, 1, T::be32(64)},
              {0xABCD, 3, 3, T::be16(1) + T::be16(2) + T::be16(3)}});
  t.ifd(320, {{0x0001, 2, 2, std::string("N\0", 2)},
              {0x0002, 5, 3, rational(52, 1) + rational(30, 1) + rational(1234, 100)}});
  t.ifd(360, {{0x0103, 3, 1, T::be16(6)}, {0x0201, 4, 1, T::be32(0)}});
  return t.bytes();
}

// What img2dataset stores for sample_exif_tiff(), byte for byte.
inline const std::string kExpectedExifJson =
    "{\"Image Make\": \"Canon\", \"Image Model\": \"EOS 5D\", \"Image Orientation\": \"Rotated 90 CCW\", "
    "\"Image StripByteCounts\": \"[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, ... "
    "]\", "
    "\"Image XResolution\": \"72\", \"Image ResolutionUnit\": \"Pixels/Inch\", \"Image Software\": \"GIMP "
    "2.10\", "
    "\"Image Artist\": \"Zo\\u00eb\", \"Image ExifOffset\": \"200\", \"GPS GPSLatitudeRef\": \"N\", "
    "\"GPS GPSLatitude\": \"[52, 30, 617/50]\", \"Image GPSInfo\": \"320\", "
    "\"Thumbnail Compression\": \"JPEG (old-style)\", \"Thumbnail JPEGInterchangeFormat\": \"0\", "
    "\"EXIF ExposureTime\": \"1/200\", \"EXIF ISOSpeedRatings\": \"400\", \"EXIF ExifVersion\": \"0230\", "
    "\"EXIF DateTimeOriginal\": \"2024:01:02 03:04:05\", \"EXIF ExposureBiasValue\": \"-1/3\", "
    "\"EXIF Flash\": \"Flash did not fire, compulsory flash mode\", \"EXIF ExifImageWidth\": \"64\", "
    "\"EXIF Tag 0xABCD\": \"[1, 2, 3]\"}";

// `jpeg` with an APP1 "Exif" segment holding `tiff` inserted right after its SOI marker.
inline std::string jpeg_with_exif(const std::string& jpeg, const std::string& tiff) {
  const size_t len = 2 + 6 + tiff.size();
  std::string out = jpeg.substr(0, 2);
  out += "\xFF\xE1";
  out += static_cast<char>(len >> 8);
  out += static_cast<char>(len & 0xFF);
  out += std::string("Exif\0\0", 6);
  out += tiff;
  out += jpeg.substr(2);
  return out;
}

}  // namespace recap::testing
