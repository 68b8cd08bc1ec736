#include "io/exif.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

namespace recap::io {

namespace {

// exifread's FIELD_TYPES byte lengths, indexed by TIFF type (0 is not a valid type).
constexpr int kTypeLength[14] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4};
constexpr int kAscii = 2;

using ValueTable = std::map<int64_t, const char*>;

enum class Printer { Plain, Table, MakeString };

struct TagDef {
  const char* name;
  Printer printer = Printer::Plain;
  const ValueTable* table = nullptr;
};

// Value tables of exifread's tags/exif.py for the enumerated tags common in web images.
const ValueTable kCompression{{1, "Uncompressed"}, {6, "JPEG (old-style)"}, {7, "JPEG"}, {8, "Adobe Deflate"},
                              {5, "LZW"},          {32773, "PackBits"}};
const ValueTable kOrientation{{1, "Horizontal (normal)"},
                              {2, "Mirrored horizontal"},
                              {3, "Rotated 180"},
                              {4, "Mirrored vertical"},
                              {5, "Mirrored horizontal then rotated 90 CCW"},
                              {6, "Rotated 90 CCW"},
                              {7, "Mirrored horizontal then rotated 90 CW"},
                              {8, "Rotated 90 CW"}};
const ValueTable kResolutionUnit{{1, "Not Absolute"}, {2, "Pixels/Inch"}, {3, "Pixels/Centimeter"}};
const ValueTable kYCbCrPositioning{{1, "Centered"}, {2, "Co-sited"}};
const ValueTable kExposureProgram{{0, "Unidentified"},      {1, "Manual"},           {2, "Program Normal"},
                                  {3, "Aperture Priority"}, {4, "Shutter Priority"}, {5, "Program Creative"},
                                  {6, "Program Action"},    {7, "Portrait Mode"},    {8, "Landscape Mode"}};
const ValueTable kComponents{{0, ""}, {1, "Y"}, {2, "Cb"}, {3, "Cr"}, {4, "Red"}, {5, "Green"}, {6, "Blue"}};
const ValueTable kMeteringMode{{0, "Unidentified"}, {1, "Average"},   {2, "CenterWeightedAverage"},
                               {3, "Spot"},         {4, "MultiSpot"}, {5, "Pattern"},
                               {6, "Partial"},      {255, "other"}};
const ValueTable kLightSource{{0, "Unknown"},
                              {1, "Daylight"},
                              {2, "Fluorescent"},
                              {3, "Tungsten (incandescent light)"},
                              {4, "Flash"},
                              {9, "Fine weather"},
                              {10, "Cloudy weather"},
                              {11, "Shade"},
                              {12, "Daylight fluorescent (D 5700 - 7100K)"},
                              {13, "Day white fluorescent (N 4600 - 5400K)"},
                              {14, "Cool white fluorescent (W 3900 - 4500K)"},
                              {15, "White fluorescent (WW 3200 - 3700K)"},
                              {17, "Standard light A"},
                              {18, "Standard light B"},
                              {19, "Standard light C"},
                              {20, "D55"},
                              {21, "D65"},
                              {22, "D75"},
                              {23, "D50"},
                              {24, "ISO studio tungsten"},
                              {255, "other light source"}};
const ValueTable kFlash{
    {0, "Flash did not fire"},
    {1, "Flash fired"},
    {5, "Strobe return light not detected"},
    {7, "Strobe return light detected"},
    {9, "Flash fired, compulsory flash mode"},
    {13, "Flash fired, compulsory flash mode, return light not detected"},
    {15, "Flash fired, compulsory flash mode, return light detected"},
    {16, "Flash did not fire, compulsory flash mode"},
    {24, "Flash did not fire, auto mode"},
    {25, "Flash fired, auto mode"},
    {29, "Flash fired, auto mode, return light not detected"},
    {31, "Flash fired, auto mode, return light detected"},
    {32, "No flash function"},
    {65, "Flash fired, red-eye reduction mode"},
    {69, "Flash fired, red-eye reduction mode, return light not detected"},
    {71, "Flash fired, red-eye reduction mode, return light detected"},
    {73, "Flash fired, compulsory flash mode, red-eye reduction mode"},
    {77, "Flash fired, compulsory flash mode, red-eye reduction mode, return light not detected"},
    {79, "Flash fired, compulsory flash mode, red-eye reduction mode, return light detected"},
    {89, "Flash fired, auto mode, red-eye reduction mode"},
    {93, "Flash fired, auto mode, return light not detected, red-eye reduction mode"},
    {95, "Flash fired, auto mode, return light detected, red-eye reduction mode"}};
const ValueTable kColorSpace{{1, "sRGB"}, {2, "Adobe RGB"}, {65535, "Uncalibrated"}};
const ValueTable kSensingMethod{{1, "Not defined"},
                                {2, "One-chip color area"},
                                {3, "Two-chip color area"},
                                {4, "Three-chip color area"},
                                {5, "Color sequential area"},
                                {7, "Trilinear"},
                                {8, "Color sequential linear"}};
const ValueTable kFileSource{{1, "Film Scanner"}, {2, "Reflection Print Scanner"}, {3, "Digital Camera"}};
const ValueTable kSceneType{{1, "Directly Photographed"}};
const ValueTable kCustomRendered{{0, "Normal"}, {1, "Custom"}};
const ValueTable kExposureMode{{0, "Auto Exposure"}, {1, "Manual Exposure"}, {2, "Auto Bracket"}};
const ValueTable kWhiteBalance{{0, "Auto"}, {1, "Manual"}};
// "Night)" is exifread's own spelling.
const ValueTable kSceneCaptureType{{0, "Standard"}, {1, "Landscape"}, {2, "Portrait"}, {3, "Night)"}};
const ValueTable kGainControl{
    {0, "None"}, {1, "Low gain up"}, {2, "High gain up"}, {3, "Low gain down"}, {4, "High gain down"}};
const ValueTable kNormalSoftHard{{0, "Normal"}, {1, "Soft"}, {2, "Hard"}};

const std::map<int, TagDef>& exif_tags() {
  static const std::map<int, TagDef> tags{
      {0x0100, {"ImageWidth"}},
      {0x0101, {"ImageLength"}},
      {0x0102, {"BitsPerSample"}},
      {0x0103, {"Compression", Printer::Table, &kCompression}},
      {0x0106, {"PhotometricInterpretation"}},
      {0x010E, {"ImageDescription"}},
      {0x010F, {"Make"}},
      {0x0110, {"Model"}},
      {0x0111, {"StripOffsets"}},
      {0x0112, {"Orientation", Printer::Table, &kOrientation}},
      {0x0115, {"SamplesPerPixel"}},
      {0x0116, {"RowsPerStrip"}},
      {0x0117, {"StripByteCounts"}},
      {0x011A, {"XResolution"}},
      {0x011B, {"YResolution"}},
      {0x011C, {"PlanarConfiguration"}},
      {0x0128, {"ResolutionUnit", Printer::Table, &kResolutionUnit}},
      {0x0131, {"Software"}},
      {0x0132, {"DateTime"}},
      {0x013B, {"Artist"}},
      {0x013C, {"HostComputer"}},
      {0x013E, {"WhitePoint"}},
      {0x013F, {"PrimaryChromaticities"}},
      {0x0201, {"JPEGInterchangeFormat"}},
      {0x0202, {"JPEGInterchangeFormatLength"}},
      {0x0211, {"YCbCrCoefficients"}},
      {0x0212, {"YCbCrSubSampling"}},
      {0x0213, {"YCbCrPositioning", Printer::Table, &kYCbCrPositioning}},
      {0x0214, {"ReferenceBlackWhite"}},
      {0x4746, {"Rating"}},
      {0x8298, {"Copyright"}},
      {0x829A, {"ExposureTime"}},
      {0x829D, {"FNumber"}},
      {0x8769, {"ExifOffset"}},
      {0x8822, {"ExposureProgram", Printer::Table, &kExposureProgram}},
      {0x8825, {"GPSInfo"}},
      {0x8827, {"ISOSpeedRatings"}},
      {0x8830, {"SensitivityType"}},
      {0x8832, {"RecommendedExposureIndex"}},
      {0x9000, {"ExifVersion", Printer::MakeString}},
      {0x9003, {"DateTimeOriginal"}},
      {0x9004, {"DateTimeDigitized"}},
      {0x9101, {"ComponentsConfiguration", Printer::Table, &kComponents}},
      {0x9102, {"CompressedBitsPerPixel"}},
      {0x9201, {"ShutterSpeedValue"}},
      {0x9202, {"ApertureValue"}},
      {0x9203, {"BrightnessValue"}},
      {0x9204, {"ExposureBiasValue"}},
      {0x9205, {"MaxApertureValue"}},
      {0x9206, {"SubjectDistance"}},
      {0x9207, {"MeteringMode", Printer::Table, &kMeteringMode}},
      {0x9208, {"LightSource", Printer::Table, &kLightSource}},
      {0x9209, {"Flash", Printer::Table, &kFlash}},
      {0x920A, {"FocalLength"}},
      {0x9214, {"SubjectArea"}},
      {0x927C, {"MakerNote"}},
      {0x9286, {"UserComment"}},
      {0x9290, {"SubSecTime"}},
      {0x9291, {"SubSecTimeOriginal"}},
      {0x9292, {"SubSecTimeDigitized"}},
      {0xA000, {"FlashPixVersion", Printer::MakeString}},
      {0xA001, {"ColorSpace", Printer::Table, &kColorSpace}},
      {0xA002, {"ExifImageWidth"}},
      {0xA003, {"ExifImageLength"}},
      {0xA005, {"InteroperabilityOffset"}},
      {0xA20E, {"FocalPlaneXResolution"}},
      {0xA20F, {"FocalPlaneYResolution"}},
      {0xA210, {"FocalPlaneResolutionUnit"}},
      {0xA217, {"SensingMethod", Printer::Table, &kSensingMethod}},
      {0xA300, {"FileSource", Printer::Table, &kFileSource}},
      {0xA301, {"SceneType", Printer::Table, &kSceneType}},
      {0xA401, {"CustomRendered", Printer::Table, &kCustomRendered}},
      {0xA402, {"ExposureMode", Printer::Table, &kExposureMode}},
      {0xA403, {"WhiteBalance", Printer::Table, &kWhiteBalance}},
      {0xA404, {"DigitalZoomRatio"}},
      {0xA405, {"FocalLengthIn35mmFilm"}},
      {0xA406, {"SceneCaptureType", Printer::Table, &kSceneCaptureType}},
      {0xA407, {"GainControl", Printer::Table, &kGainControl}},
      {0xA408, {"Contrast", Printer::Table, &kNormalSoftHard}},
      {0xA409, {"Saturation", Printer::Table, &kNormalSoftHard}},
      {0xA40A, {"Sharpness", Printer::Table, &kNormalSoftHard}},
      {0xA40C, {"SubjectDistanceRange"}},
      {0xA420, {"ImageUniqueID"}},
      {0xA430, {"CameraOwnerName"}},
      {0xA431, {"BodySerialNumber"}},
      {0xA432, {"LensSpecification"}},
      {0xA433, {"LensMake"}},
      {0xA434, {"LensModel"}},
      {0xA435, {"LensSerialNumber"}},
      {0xA500, {"Gamma"}},
  };
  return tags;
}

const std::map<int, TagDef>& gps_tags() {
  static const std::map<int, TagDef> tags{
      {0x00, {"GPSVersionID"}},       {0x01, {"GPSLatitudeRef"}},
      {0x02, {"GPSLatitude"}},        {0x03, {"GPSLongitudeRef"}},
      {0x04, {"GPSLongitude"}},       {0x05, {"GPSAltitudeRef"}},
      {0x06, {"GPSAltitude"}},        {0x07, {"GPSTimeStamp"}},
      {0x08, {"GPSSatellites"}},      {0x09, {"GPSStatus"}},
      {0x0A, {"GPSMeasureMode"}},     {0x0B, {"GPSDOP"}},
      {0x0C, {"GPSSpeedRef"}},        {0x0D, {"GPSSpeed"}},
      {0x0E, {"GPSTrackRef"}},        {0x0F, {"GPSTrack"}},
      {0x10, {"GPSImgDirectionRef"}}, {0x11, {"GPSImgDirection"}},
      {0x12, {"GPSMapDatum"}},        {0x13, {"GPSDestLatitudeRef"}},
      {0x14, {"GPSDestLatitude"}},    {0x15, {"GPSDestLongitudeRef"}},
      {0x16, {"GPSDestLongitude"}},   {0x17, {"GPSDestBearingRef"}},
      {0x18, {"GPSDestBearing"}},     {0x19, {"GPSDestDistanceRef"}},
      {0x1A, {"GPSDestDistance"}},    {0x1B, {"GPSProcessingMethod"}},
      {0x1C, {"GPSAreaInformation"}}, {0x1D, {"GPSDate"}},
      {0x1E, {"GPSDifferential"}},
  };
  return tags;
}

const std::map<int, TagDef>& interop_tags() {
  static const std::map<int, TagDef> tags{
      {0x0001, {"InteroperabilityIndex"}},  {0x0002, {"InteroperabilityVersion"}},
      {0x1000, {"RelatedImageFileFormat"}}, {0x1001, {"RelatedImageWidth"}},
      {0x1002, {"RelatedImageLength"}},
  };
  return tags;
}

// One value as exifread holds it: an integer, a ratio or a float.
struct Value {
  enum Kind { Int, Ratio, Float } kind = Int;
  int64_t num = 0, den = 1;
  double f = 0;
};

// Python's str() of a float (shortest round-trip digits, "1.0" for integral values).
std::string python_float(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// Python's str() of exifread's Ratio (a Fraction, reduced; n/0 kept as written).
std::string value_str(const Value& v) {
  if (v.kind == Value::Int) return std::to_string(v.num);
  if (v.kind == Value::Float) {  // struct.unpack's 1-tuple
    // Built by appending: g++ 12 warns (-Wrestrict, a false positive) on "literal" + string&&.
    std::string s = "(";
    s += python_float(v.f);
    s += ",)";
    return s;
  }
  int64_t n = v.num, d = v.den;
  if (d == 0) return std::to_string(n) + "/0";
  if (d < 0) n = -n, d = -d;
  const int64_t g = std::gcd(n < 0 ? -n : n, d);
  if (g > 1) n /= g, d /= g;
  if (d == 1) return std::to_string(n);
  return std::to_string(n) + "/" + std::to_string(d);
}

std::string list_str(const std::vector<Value>& vals, size_t n) {
  std::string s = "[";
  for (size_t i = 0; i < n && i < vals.size(); ++i) {
    if (i) s += ", ";
    s += value_str(vals[i]);
  }
  return s + "]";
}

// Python's repr() of a bytes object.
std::string python_bytes_repr(const std::string& b) {
  const bool dq = b.find('\'') != std::string::npos && b.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string s = "b";
  s += q;
  for (unsigned char c : b) {
    if (c == static_cast<unsigned char>(q) || c == '\\') {
      s += '\\';
      s += static_cast<char>(c);
    } else if (c == '\t') {
      s += "\\t";
    } else if (c == '\n') {
      s += "\\n";
    } else if (c == '\r') {
      s += "\\r";
    } else if (c < 32 || c >= 127) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    } else {
      s += static_cast<char>(c);
    }
  }
  s += q;
  return s;
}

// Decodes UTF-8; false on any invalid sequence. Code points go to `out`.
bool decode_utf8(const std::string& s, std::vector<uint32_t>* out) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int extra;
    if (c < 0x80) {
      cp = c, extra = 0;
    } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
      cp = c & 0x1F, extra = 1;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F, extra = 2;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      cp = c & 0x07, extra = 3;
    } else {
      return false;
    }
    if (extra > 0 && i + static_cast<size_t>(extra) >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    out->push_back(cp);
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Python's str.strip() for the whitespace that can occur here (ASCII and Latin-1 ones).
bool python_space(uint32_t cp) {
  return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

std::string python_strip(const std::string& utf8) {
  std::vector<uint32_t> cps;
  if (!decode_utf8(utf8, &cps)) return utf8;
  size_t b = 0, e = cps.size();
  while (b < e && python_space(cps[b])) ++b;
  while (e > b && python_space(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) append_utf8(cps[i], &out);
  return out;
}

class ExifReader {
 public:
  ExifReader(const uint8_t* data, size_t size) : d_(data), n_(size) {}

  std::string run() {
    if (n_ < 8) return "{}";
    if (d_[0] == 'I' && d_[1] == 'I')
      little_ = true;
    else if (d_[0] == 'M' && d_[1] == 'M')
      little_ = false;
    else
      return "{}";
    // exifread's list_ifd: the IFD chain from the header, each IFD once (exifread-nocycle).
    std::vector<uint64_t> chain;
    std::set<uint64_t> seen;
    uint64_t ifd = u32(4);
    while (ifd != 0 && ifd + 2 <= n_ && seen.insert(ifd).second && chain.size() < 64) {
      chain.push_back(ifd);
      const uint64_t entries = u16(ifd);
      const uint64_t next = u32(ifd + 2 + 12 * entries);
      ifd = next == ifd ? 0 : next;
    }
    for (size_t i = 0; i < chain.size(); ++i) {
      const std::string name = i == 0 ? "Image" : i == 1 ? "Thumbnail" : "IFD " + std::to_string(i);
      dump_ifd(chain[i], name, exif_tags(), 0);
    }
    auto it = index_.find("Image ExifOffset");
    if (it != index_.end() && exif_offset_ > 0) dump_ifd(exif_offset_, "EXIF", exif_tags(), 0);
    std::string out = "{";
    for (size_t i = 0; i < tags_.size(); ++i) {
      if (i) out += ", ";
      out += python_json_string(tags_[i].first);
      out += ": ";
      out += python_json_string(python_strip(tags_[i].second));
    }
    return out + "}";
  }

 private:
  // Reads outside the block give 0, as exifread's s2n does for a read past the end.
  uint64_t uint(uint64_t off, int len) const {
    if (off > n_ || static_cast<uint64_t>(len) > n_ - off) return 0;
    uint64_t v = 0;
    for (int k = 0; k < len; ++k) {
      const uint64_t b = d_[off + static_cast<uint64_t>(little_ ? len - 1 - k : k)];
      v = (v << 8) | b;
    }
    return v;
  }
  uint64_t u16(uint64_t off) const { return uint(off, 2); }
  uint64_t u32(uint64_t off) const { return uint(off, 4); }
  int64_t sint(uint64_t off, int len) const {
    const uint64_t v = uint(off, len);
    const int bits = 8 * len;
    if (bits < 64 && (v >> (bits - 1)) & 1) return static_cast<int64_t>(v) - (int64_t{1} << bits);
    return static_cast<int64_t>(v);
  }

  void set_tag(const std::string& key, std::string printable) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      tags_[it->second].second = std::move(printable);  // a Python dict keeps the first position
      return;
    }
    index_[key] = tags_.size();
    tags_.emplace_back(key, std::move(printable));
  }

  void dump_ifd(uint64_t ifd, const std::string& ifd_name, const std::map<int, TagDef>& dict, int depth) {
    if (depth > 4 || !dumped_.insert(ifd).second) return;  // sub-IFD cycles end here
    const uint64_t entries = u16(ifd);
    for (uint64_t i = 0; i < entries; ++i) {
      if (tags_read_++ >= kMaxExifTags) return;
      const uint64_t entry = ifd + 2 + 12 * i;
      if (entry + 12 > n_) return;
      const int tag = static_cast<int>(u16(entry));
      // details=False: MakerNote and UserComment are skipped.
      if (&dict == &exif_tags() && (tag == 0x927C || tag == 0x9286)) continue;
      process_tag(ifd_name, dict, entry, tag, depth);
    }
  }

  void process_tag(const std::string& ifd_name, const std::map<int, TagDef>& dict, uint64_t entry, int tag,
                   int depth) {
    const int type = static_cast<int>(u16(entry + 2));
    if (type <= 0 || type >= 14) return;  // exifread ignores unknown types (strict=False)
    const uint64_t tlen = static_cast<uint64_t>(kTypeLength[type]);
    const uint64_t count = u32(entry + 4);
    uint64_t off = entry + 8;
    if (count * tlen > 4) off = u32(off);
    auto def_it = dict.find(tag);
    const TagDef* def = def_it == dict.end() ? nullptr : &def_it->second;
    char unknown[16];
    std::snprintf(unknown, sizeof unknown, "Tag 0x%04X", static_cast<unsigned>(tag));
    const std::string name = def ? def->name : unknown;
    const std::string key = ifd_name + " " + name;

    if (type == kAscii) {
      std::string text;
      if (count != 0 && off < n_) {
        const uint64_t avail = std::min<uint64_t>(count, n_ - off);
        text.assign(reinterpret_cast<const char*>(d_ + off), static_cast<size_t>(avail));
        const size_t nul = text.find('\0');
        if (nul != std::string::npos) text.resize(nul);
      }
      std::vector<uint32_t> cps;
      set_tag(key, decode_utf8(text, &cps) ? text : python_bytes_repr(text));
      return;
    }
    std::vector<Value> vals;
    const bool is_signed = type == 6 || type == 8 || type == 9 || type == 10;
    if (count < 1000) {
      vals.reserve(static_cast<size_t>(count));
      for (uint64_t k = 0; k < count; ++k, off += tlen) {
        Value v;
        if (type == 5 || type == 10) {
          v.kind = Value::Ratio;
          v.num = is_signed ? sint(off, 4) : static_cast<int64_t>(u32(off));
          v.den = is_signed ? sint(off + 4, 4) : static_cast<int64_t>(u32(off + 4));
        } else if (type == 11) {
          v.kind = Value::Float;
          const uint32_t bits = static_cast<uint32_t>(u32(off));
          float f;
          std::memcpy(&f, &bits, 4);
          v.f = f;
        } else if (type == 12) {
          v.kind = Value::Float;
          const uint64_t bits = uint(off, 8);
          std::memcpy(&v.f, &bits, 8);
        } else {
          v.num = is_signed ? sint(off, static_cast<int>(tlen))
                            : static_cast<int64_t>(uint(off, static_cast<int>(tlen)));
        }
        vals.push_back(v);
      }
    }
    std::string printable;
    if (count == 1 && !vals.empty())
      printable = value_str(vals[0]);
    else if (count > 50 && vals.size() > 20) {
      const std::string head = list_str(vals, 20);
      printable = head.substr(0, head.size() - 1) + ", ... ]";
    } else
      printable = list_str(vals, vals.size());
    if (def && def->printer == Printer::MakeString) {
      // exifread's make_string: the printable characters (32..255); the list repr if none.
      std::string s;
      for (const Value& v : vals)
        if (v.kind == Value::Int && v.num >= 32 && v.num < 256) append_utf8(static_cast<uint32_t>(v.num), &s);
      printable = s.empty() ? list_str(vals, vals.size()) : s;
    } else if (def && def->printer == Printer::Table) {
      printable.clear();
      for (const Value& v : vals) {
        auto t = v.kind == Value::Int ? def->table->find(v.num) : def->table->end();
        printable += t != def->table->end() ? std::string(t->second) : value_str(v);
      }
    }
    // Sub-IFDs reached through a pointer tag are dumped before the pointer tag is stored, as
    // exifread's _process_tag does.
    if (&dict == &exif_tags() && !vals.empty()) {
      const uint64_t target = static_cast<uint64_t>(vals[0].num);
      if (tag == 0x8825) dump_ifd(target, "GPS", gps_tags(), depth + 1);
      if (tag == 0xA005) dump_ifd(target, "Interoperability", interop_tags(), depth + 1);
      if (tag == 0x8769 && ifd_name == "Image") exif_offset_ = target;
    }
    set_tag(key, printable);
  }

  const uint8_t* d_;
  size_t n_;
  bool little_ = true;
  std::vector<std::pair<std::string, std::string>> tags_;
  std::map<std::string, size_t> index_;
  std::set<uint64_t> dumped_;
  size_t tags_read_ = 0;
  uint64_t exif_offset_ = 0;
};

}  // namespace

std::string python_json_string(const std::string& utf8) {
  std::vector<uint32_t> cps;
  if (!decode_utf8(utf8, &cps)) {
    cps.clear();
    for (unsigned char c : utf8) cps.push_back(c < 0x80 ? c : 0xFFFD);
  }
  std::string out = "\"";
  char buf[16];
  for (uint32_t cp : cps) {
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
          if (cp == 0x7F) {
            out.push_back(0x7F);  // json.dumps leaves DEL as is
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", cp);
            out += buf;
          }
        } else if (cp >= 0x10000) {
          const uint32_t v = cp - 0x10000;
          std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          out += buf;
        } else {
          out.push_back(static_cast<char>(cp));
        }
    }
  }
  return out + "\"";
}

std::string exif_json_from_tiff(const uint8_t* data, size_t size) {
  return ExifReader(data, size).run();
}

std::string exif_json_from_jpeg(const uint8_t* data, size_t size) {
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) return "{}";
  // Walks the marker segments before the image data, looking for APP1 "Exif\0\0".
  size_t pos = 2;
  for (int segments = 0; segments < 1024 && pos + 4 <= size; ++segments) {
    if (data[pos] != 0xFF) return "{}";
    const uint8_t marker = data[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) return "{}";  // image data / end: no EXIF before it
    const size_t len = (static_cast<size_t>(data[pos + 2]) << 8) | data[pos + 3];
    if (len < 2 || pos + 2 + len > size) return "{}";
    const uint8_t* seg = data + pos + 4;
    const size_t seg_len = len - 2;
    if (marker == 0xE1 && seg_len >= 6 && std::memcmp(seg, "Exif\0\0", 6) == 0)
      return exif_json_from_tiff(seg + 6, seg_len - 6);
    pos += 2 + len;
  }
  return "{}";
}

}  // namespace recap::io
