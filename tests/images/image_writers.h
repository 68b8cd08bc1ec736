// Test-only encoders that build PNG/JPEG/WebP fixtures in memory with libpng/libjpeg/libwebp,
// so every decoder case is generated from known pixels instead of opaque binary files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace recap::testing {

struct PngSpec {
  int width = 0;
  int height = 0;
  int color_type = 2;  // PNG_COLOR_TYPE_*: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
  int bit_depth = 8;
  bool interlaced = false;
  // Samples as they go into the file: one entry per sample (also for 1/2/4-bit and palette
  // indices), 16-bit samples as values 0..65535. Row-major, interleaved channels.
  std::vector<uint32_t> samples;
  std::vector<uint8_t> palette_rgb;  // color_type 3: 3 bytes per entry
  std::vector<uint8_t> trns;         // palette alpha values (color_type 3)
  bool trns_color = false;           // write a tRNS single colour (gray/RGB)
};
inline PngSpec png_spec(int width, int height, int color_type, int bit_depth) {
  PngSpec s;
  s.width = width;
  s.height = height;
  s.color_type = color_type;
  s.bit_depth = bit_depth;
  return s;
}
std::vector<uint8_t> encode_png(const PngSpec& spec);

struct JpegSpec {
  int width = 0;
  int height = 0;
  int components = 3;  // 1 gray, 3 RGB, 4 CMYK
  // Pixels as given to libjpeg (in_color_space JCS_GRAYSCALE / JCS_RGB / JCS_CMYK).
  std::vector<uint8_t> pixels;
  int quality = 90;
  bool progressive = false;
  bool ycck = false;            // 4 components: store as YCCK (Adobe transform 2) instead of CMYK
  bool no_subsampling = false;  // 1x1 sampling for every component
};
inline JpegSpec jpeg_spec(int width, int height, int components, int quality) {
  JpegSpec s;
  s.width = width;
  s.height = height;
  s.components = components;
  s.quality = quality;
  return s;
}
std::vector<uint8_t> encode_jpeg(const JpegSpec& spec);

// libjpeg's own decode (default settings) into its output colour space's samples:
// components per pixel equal to the file's (1, 3 or 4; CMYK/YCCK come out as CMYK).
std::vector<uint8_t> libjpeg_decode_raw(const std::vector<uint8_t>& jpeg, int* width, int* height,
                                        int* comps);

// The CRC-32 of a PNG chunk (type + data), for hand-built chunks.
uint32_t png_chunk_crc(const std::string& type, const std::vector<uint8_t>& data);
// A PNG chunk: length, type, data, CRC.
std::vector<uint8_t> png_chunk(const std::string& type, const std::vector<uint8_t>& data);

}  // namespace recap::testing
