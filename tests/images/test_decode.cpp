// io::decode_image: every PNG and JPEG kind the pipeline meets, converted to RGB with Pillow's
// rules, and every error path (empty, truncated, corrupt, unsupported, too large, unreadable).
// Fixtures are encoded in memory from known pixels (tests/images/image_writers.h).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "image_writers.h"
#include "io/image.h"

#ifdef RECAP_HAVE_WEBP
#include <webp/encode.h>
#endif

using namespace recap;
using recap::testing::encode_jpeg;
using recap::testing::encode_png;
using recap::testing::JpegSpec;
using recap::testing::PngSpec;

namespace {

std::vector<uint32_t> random_samples(size_t n, uint32_t max_value, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> dist(0, max_value);
  std::vector<uint32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& x : v) x = static_cast<uint8_t>(rng() & 0xFF);
  return v;
}

// A smooth test picture (JPEG-friendly) with a few edges.
std::vector<uint8_t> smooth_picture(int w, int h, int comps) {
  std::vector<uint8_t> p(static_cast<size_t>(w) * h * comps);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comps; ++c) {
        int v = (x * 255 / std::max(1, w - 1) + y * 97 / std::max(1, h - 1) + c * 60) % 256;
        if ((x / 16 + y / 16) % 5 == 0) v = 255 - v;
        p[(static_cast<size_t>(y) * w + x) * comps + c] = static_cast<uint8_t>(v);
      }
  return p;
}

io::ImageErrorKind decode_error_kind(const std::vector<uint8_t>& bytes, std::string* message = nullptr,
                                     const io::DecodeOptions& opts = {}) {
  try {
    io::decode_image(bytes, opts);
  } catch (const io::ImageError& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "decode_image succeeded, expected an ImageError";
  return io::ImageErrorKind::Empty;
}

io::DecodeOptions limit(uint64_t max_pixels) {
  io::DecodeOptions o;
  o.max_pixels = max_pixels;
  return o;
}

uint8_t pixel(const io::Image& img, int x, int y, int c) {
  return img.rgb[(static_cast<size_t>(y) * img.width + x) * 3 + c];
}

// ---- PNG kinds ------------------------------------------------------------------------------

TEST(DecodePng, Rgb8IsCopied) {
  PngSpec s = recap::testing::png_spec(7, 5, 2, 8);
  s.samples = random_samples(7 * 5 * 3, 255, 1);
  const io::Image img = io::decode_image(encode_png(s));
  ASSERT_EQ(img.width, 7);
  ASSERT_EQ(img.height, 5);
  EXPECT_EQ(img.source.format, io::ImageFormat::Png);
  EXPECT_EQ(img.source.mode, "RGB");
  for (size_t i = 0; i < s.samples.size(); ++i) ASSERT_EQ(img.rgb[i], s.samples[i]) << i;
}

TEST(DecodePng, Gray8IsReplicated) {
  PngSpec s = recap::testing::png_spec(9, 4, 0, 8);
  s.samples = random_samples(9 * 4, 255, 2);
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_EQ(img.source.mode, "L");
  for (int i = 0; i < 9 * 4; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], s.samples[i]);
}

TEST(DecodePng, LowBitGrayIsScaledLikePillow) {
  // Pillow's "1", "L;2", "L;4" unpackers scale by 255, 0x55, 0x11.
  for (int bits : {1, 2, 4}) {
    SCOPED_TRACE(bits);
    PngSpec s = recap::testing::png_spec(13, 3, 0, bits);
    s.samples = random_samples(13 * 3, (1u << bits) - 1, 3 + bits);
    const io::Image img = io::decode_image(encode_png(s));
    EXPECT_EQ(img.source.mode, bits == 1 ? "1" : "L");
    const int scale = 255 / ((1 << bits) - 1);
    for (int i = 0; i < 13 * 3; ++i) ASSERT_EQ(img.rgb[3 * i + 1], s.samples[i] * scale) << i;
  }
}

TEST(DecodePng, GrayAlphaDropsAlpha) {
  PngSpec s = recap::testing::png_spec(6, 6, 4, 8);
  s.samples = random_samples(6 * 6 * 2, 255, 4);
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_EQ(img.source.mode, "LA");
  EXPECT_TRUE(img.source.has_alpha);
  for (int i = 0; i < 36; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], s.samples[2 * i]);
}

TEST(DecodePng, RgbaDropsAlphaWithoutCompositing) {
  PngSpec s = recap::testing::png_spec(8, 3, 6, 8);
  s.samples = random_samples(8 * 3 * 4, 255, 5);
  for (int i = 0; i < 8; ++i) s.samples[4 * i + 3] = 0;  // fully transparent first row keeps its colour
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_EQ(img.source.mode, "RGBA");
  for (int i = 0; i < 24; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], s.samples[4 * i + c]) << i;
}

TEST(DecodePng, PaletteWithTrnsUsesPaletteColours) {
  PngSpec s = recap::testing::png_spec(10, 4, 3, 8);
  s.palette_rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  s.trns = {0, 128, 255};  // alpha for the first three entries: ignored by convert('RGB')
  s.samples = random_samples(40, 3, 6);
  s.samples[0] = 200;  // past the 4-entry palette: Pillow 9.4's palette is a gray ramp there
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_EQ(img.source.mode, "P");
  EXPECT_TRUE(img.source.has_alpha);
  EXPECT_EQ(pixel(img, 0, 0, 0), 200);
  EXPECT_EQ(pixel(img, 0, 0, 1), 200);
  EXPECT_EQ(pixel(img, 0, 0, 2), 200);
  for (int i = 1; i < 40; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], s.palette_rgb[3 * s.samples[i] + c]) << i;
}

TEST(DecodePng, LowBitPalette) {
  for (int bits : {1, 2, 4}) {
    SCOPED_TRACE(bits);
    PngSpec s = recap::testing::png_spec(11, 3, 3, bits);
    const int entries = 1 << bits;
    for (int i = 0; i < entries; ++i)
      s.palette_rgb.insert(s.palette_rgb.end(), {uint8_t(i * 7), uint8_t(100 + i), uint8_t(250 - i)});
    s.samples = random_samples(33, entries - 1, 10 + bits);
    const io::Image img = io::decode_image(encode_png(s));
    for (int i = 0; i < 33; ++i)
      for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], s.palette_rgb[3 * s.samples[i] + c]) << i;
  }
}

TEST(DecodePng, SixteenBitColourKeepsHighByte) {
  for (int ct : {2, 6, 4}) {
    SCOPED_TRACE(ct);
    const int ch = ct == 2 ? 3 : (ct == 6 ? 4 : 2);
    PngSpec s = recap::testing::png_spec(5, 4, ct, 16);
    s.samples = random_samples(5 * 4 * ch, 65535, 20 + ct);
    const io::Image img = io::decode_image(encode_png(s));
    EXPECT_EQ(img.source.bit_depth, 16);
    EXPECT_EQ(img.source.mode, ct == 2 ? "RGB" : "RGBA");  // Pillow opens 16-bit LA as RGBA
    for (int i = 0; i < 20; ++i)
      for (int c = 0; c < 3; ++c) {
        const uint32_t sample = ct == 4 ? s.samples[2 * i] : s.samples[ch * i + c];
        ASSERT_EQ(img.rgb[3 * i + c], sample >> 8) << i;
      }
  }
}

TEST(DecodePng, SixteenBitGrayClipsLikePillowModeI) {
  PngSpec s = recap::testing::png_spec(4, 2, 0, 16);
  s.samples = {0, 1, 200, 255, 256, 300, 4096, 65535};
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_EQ(img.source.mode, "I");
  const uint8_t expected[] = {0, 1, 200, 255, 255, 255, 255, 255};
  for (int i = 0; i < 8; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], expected[i]) << i;
}

TEST(DecodePng, RgbWithTrnsColourIsUnchanged) {
  PngSpec s = recap::testing::png_spec(3, 3, 2, 8);
  s.trns_color = true;
  s.samples = random_samples(27, 255, 30);
  s.samples[0] = 1, s.samples[1] = 2, s.samples[2] = 3;  // the transparent colour
  const io::Image img = io::decode_image(encode_png(s));
  EXPECT_TRUE(img.source.has_alpha);
  for (size_t i = 0; i < 27; ++i) ASSERT_EQ(img.rgb[i], s.samples[i]);
}

TEST(DecodePng, InterlacedEqualsNonInterlaced) {
  for (int ct : {0, 2, 3, 6}) {
    SCOPED_TRACE(ct);
    const int ch = ct == 2 ? 3 : (ct == 6 ? 4 : 1);
    PngSpec s = recap::testing::png_spec(37, 23, ct, 8);
    s.samples = random_samples(37 * 23 * ch, ct == 3 ? 15 : 255, 40 + ct);
    if (ct == 3)
      for (int i = 0; i < 16; ++i)
        s.palette_rgb.insert(s.palette_rgb.end(), {uint8_t(i * 16), uint8_t(i), uint8_t(3 * i)});
    const io::Image flat = io::decode_image(encode_png(s));
    s.interlaced = true;
    const io::Image adam7 = io::decode_image(encode_png(s));
    EXPECT_FALSE(flat.source.interlaced);
    EXPECT_TRUE(adam7.source.interlaced);
    EXPECT_EQ(flat.rgb, adam7.rgb);
  }
}

// ---- JPEG kinds -----------------------------------------------------------------------------

TEST(DecodeJpeg, RgbBaselineIsCloseToSource) {
  JpegSpec s = recap::testing::jpeg_spec(64, 48, 3, 95);
  s.pixels = smooth_picture(64, 48, 3);
  const io::Image img = io::decode_image(encode_jpeg(s));
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 48);
  EXPECT_EQ(img.source.format, io::ImageFormat::Jpeg);
  EXPECT_EQ(img.source.mode, "RGB");
  EXPECT_FALSE(img.source.interlaced);
  double err = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) err += std::abs(int(img.rgb[i]) - int(s.pixels[i]));
  EXPECT_LT(err / img.rgb.size(), 12.0);  // a sanity bound: garbage would be ~85
  // libjpeg with its default settings (Pillow's) gives the same bytes.
  int w, h, comps;
  EXPECT_EQ(img.rgb, recap::testing::libjpeg_decode_raw(encode_jpeg(s), &w, &h, &comps));
}

TEST(DecodeJpeg, GrayIsReplicated) {
  JpegSpec s = recap::testing::jpeg_spec(31, 17, 1, 90);
  s.pixels = smooth_picture(31, 17, 1);
  const auto bytes = encode_jpeg(s);
  const io::Image img = io::decode_image(bytes);
  EXPECT_EQ(img.source.mode, "L");
  int w, h, comps;
  const auto gray = recap::testing::libjpeg_decode_raw(bytes, &w, &h, &comps);
  ASSERT_EQ(comps, 1);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], gray[i]);
}

TEST(DecodeJpeg, ProgressiveEqualsBaseline) {
  // Same quantised coefficients, different scan order: identical pixels.
  JpegSpec s = recap::testing::jpeg_spec(80, 56, 3, 85);
  s.pixels = smooth_picture(80, 56, 3);
  const io::Image base = io::decode_image(encode_jpeg(s));
  s.progressive = true;
  const io::Image prog = io::decode_image(encode_jpeg(s));
  EXPECT_TRUE(prog.source.interlaced);
  EXPECT_EQ(base.rgb, prog.rgb);
}

// Pillow reads every 4-component JPEG as Adobe-inverted CMYK ("CMYK;I"), then cmyk2rgb:
// R = nk - round(C*nk/255) with nk = 255 - K. From libjpeg's raw samples (c,m,y,k):
// C = 255 - c, nk = k, so R = k - round((255 - c) * k / 255).
uint8_t expected_cmyk_channel(int raw_ink, int raw_k) {
  return static_cast<uint8_t>(raw_k - static_cast<int>(std::lround((255 - raw_ink) * raw_k / 255.0)));
}

void check_cmyk(bool ycck) {
  JpegSpec s = recap::testing::jpeg_spec(24, 16, 4, 92);
  s.ycck = ycck;
  s.pixels = smooth_picture(24, 16, 4);
  const auto bytes = encode_jpeg(s);
  const io::Image img = io::decode_image(bytes);
  EXPECT_EQ(img.source.mode, "CMYK");
  int w, h, comps;
  const auto cmyk = recap::testing::libjpeg_decode_raw(bytes, &w, &h, &comps);
  ASSERT_EQ(comps, 4);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c)
      ASSERT_EQ(img.rgb[3 * i + c], expected_cmyk_channel(cmyk[4 * i + c], cmyk[4 * i + 3])) << i;
}

TEST(DecodeJpeg, CmykConvertsLikePillow) {
  check_cmyk(false);
}
TEST(DecodeJpeg, YcckConvertsLikePillow) {
  check_cmyk(true);
}

TEST(DecodeJpeg, CmykKnownColours) {
  // Flat colours survive quality-100 JPEG exactly; raw (inverted) values -> Pillow RGB.
  const uint8_t raw[][4] = {{255, 255, 255, 255}, {0, 0, 0, 0}, {0, 255, 255, 255}, {255, 255, 255, 128}};
  const uint8_t rgb[][3] = {{255, 255, 255}, {0, 0, 0}, {0, 255, 255}, {128, 128, 128}};
  for (int t = 0; t < 4; ++t) {
    JpegSpec s = recap::testing::jpeg_spec(16, 16, 4, 100);
    s.no_subsampling = true;
    for (int i = 0; i < 256; ++i) s.pixels.insert(s.pixels.end(), raw[t], raw[t] + 4);
    const io::Image img = io::decode_image(encode_jpeg(s));
    for (int c = 0; c < 3; ++c)
      EXPECT_EQ(pixel(img, 8, 8, c), rgb[t][c]) << "colour " << t << " channel " << c;
  }
}

// ---- Errors ---------------------------------------------------------------------------------

TEST(DecodeErrors, ZeroBytesIsEmpty) {
  std::string msg;
  EXPECT_EQ(decode_error_kind({}, &msg), io::ImageErrorKind::Empty);
  EXPECT_NE(msg.find("0 bytes"), std::string::npos) << msg;
  EXPECT_STREQ(io::image_error_kind_name(io::ImageErrorKind::Empty), "empty");
}

TEST(DecodeErrors, UnsupportedFormatsNameWhatTheyLookLike) {
  const std::pair<std::string, std::string> cases[] = {
      {std::string("GIF89a\x10\x00\x10\x00", 10), "GIF"},
      {std::string("BM\x36\x00\x00\x00\x00\x00", 8), "BMP"},
      {std::string("II*\x00\x08\x00\x00\x00", 8), "TIFF"},
      {"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"},
      {"<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>", "SVG"},
      {std::string("\x00\x00\x00\x1c"
                   "ftypavif",
                   12),
       "AVIF"},
      {"hello world, not an image", "not an image (unknown signature"},
  };
  for (const auto& [bytes, name] : cases) {
    std::string msg;
    EXPECT_EQ(decode_error_kind(std::vector<uint8_t>(bytes.begin(), bytes.end()), &msg),
              io::ImageErrorKind::UnsupportedFormat);
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    // No byte of the data is quoted, not even in hex.
    EXPECT_EQ(msg.find("hello"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("68 65"), std::string::npos) << msg;
  }
}

TEST(DecodeErrors, TruncatedPng) {
  PngSpec s = recap::testing::png_spec(40, 30, 2, 8);
  s.samples = random_samples(40 * 30 * 3, 255, 50);  // noise: IDAT is large
  const auto full = encode_png(s);
  for (size_t keep : {size_t(8), size_t(20), size_t(40), full.size() / 2, full.size() - 30}) {
    SCOPED_TRACE(keep);
    std::string msg;
    EXPECT_EQ(decode_error_kind(std::vector<uint8_t>(full.begin(), full.begin() + keep), &msg),
              io::ImageErrorKind::Truncated);
    EXPECT_NE(msg.find("PNG"), std::string::npos) << msg;
  }
}

TEST(DecodeErrors, TruncatedJpeg) {
  for (bool progressive : {false, true}) {
    SCOPED_TRACE(progressive);
    JpegSpec s = recap::testing::jpeg_spec(64, 64, 3, 90);
    s.progressive = progressive;
    s.pixels = smooth_picture(64, 64, 3);
    const auto full = encode_jpeg(s);
    for (size_t keep : {size_t(3), size_t(100), full.size() / 2, full.size() - 40}) {
      SCOPED_TRACE(keep);
      std::string msg;
      EXPECT_EQ(decode_error_kind(std::vector<uint8_t>(full.begin(), full.begin() + keep), &msg),
                io::ImageErrorKind::Truncated);
      EXPECT_NE(msg.find("JPEG"), std::string::npos) << msg;
    }
  }
}

TEST(DecodeErrors, JpegMissingOnlyItsEoiIsTruncated) {
  // libjpeg's bit reader asks for more bytes before the last MCU completes; Pillow's
  // suspending source then has nothing more to give and load() raises "image file is
  // truncated". The memory source reports the same condition as JWRN_JPEG_EOF.
  JpegSpec s = recap::testing::jpeg_spec(64, 48, 3, 90);
  s.pixels = smooth_picture(64, 48, 3);
  auto bytes = encode_jpeg(s);
  ASSERT_EQ(bytes[bytes.size() - 2], 0xFF);
  ASSERT_EQ(bytes[bytes.size() - 1], 0xD9);
  bytes.resize(bytes.size() - 2);
  EXPECT_EQ(decode_error_kind(bytes), io::ImageErrorKind::Truncated);
  // Bytes after EOI are ignored.
  bytes.insert(bytes.end(), {0xFF, 0xD9, 'j', 'u', 'n', 'k'});
  EXPECT_NO_THROW(io::decode_image(bytes));
}

TEST(DecodeErrors, CorruptPngData) {
  PngSpec s = recap::testing::png_spec(16, 16, 2, 8);
  s.samples = random_samples(16 * 16 * 3, 255, 51);
  auto bytes = encode_png(s);
  // Damage the IDAT payload: the chunk CRC no longer matches.
  const size_t idat = std::string(bytes.begin(), bytes.end()).find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  bytes[idat + 10] ^= 0xFF;
  std::string msg;
  EXPECT_EQ(decode_error_kind(bytes, &msg), io::ImageErrorKind::Corrupt);
  EXPECT_NE(msg.find("PNG"), std::string::npos) << msg;
}

TEST(DecodeErrors, CorruptPngHeader) {
  std::vector<uint8_t> bytes = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  // IHDR with bit depth 7 (invalid).
  const auto ihdr = recap::testing::png_chunk("IHDR", {0, 0, 0, 4, 0, 0, 0, 4, 7, 2, 0, 0, 0});
  bytes.insert(bytes.end(), ihdr.begin(), ihdr.end());
  EXPECT_EQ(decode_error_kind(bytes), io::ImageErrorKind::Corrupt);
}

TEST(DecodeErrors, CorruptJpegHeader) {
  JpegSpec s = recap::testing::jpeg_spec(16, 16, 3, 90);
  s.pixels = smooth_picture(16, 16, 3);
  auto bytes = encode_jpeg(s);
  // Break the first Huffman table: absurd code counts.
  size_t dht = 0;
  for (size_t i = 2; i + 1 < bytes.size(); ++i)
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xC4) {
      dht = i;
      break;
    }
  ASSERT_NE(dht, 0u);
  for (int i = 0; i < 16; ++i) bytes[dht + 5 + i] = 0xFF;
  std::string msg;
  EXPECT_EQ(decode_error_kind(bytes, &msg), io::ImageErrorKind::Corrupt);
  EXPECT_NE(msg.find("JPEG"), std::string::npos) << msg;
}

TEST(DecodeErrors, PngHeaderOverPixelLimitFailsBeforeAllocating) {
  // A 100000 x 100000 RGBA header (40 GB decoded) and nothing else: must be rejected from the
  // header, not by running out of data or memory.
  std::vector<uint8_t> bytes = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  const uint32_t side = 100000;
  std::vector<uint8_t> ihdr_data;
  for (int k = 0; k < 2; ++k)
    for (int sh = 24; sh >= 0; sh -= 8) ihdr_data.push_back(static_cast<uint8_t>(side >> sh));
  ihdr_data.insert(ihdr_data.end(), {8, 6, 0, 0, 0});
  const auto ihdr = recap::testing::png_chunk("IHDR", ihdr_data);
  bytes.insert(bytes.end(), ihdr.begin(), ihdr.end());
  std::string msg;
  EXPECT_EQ(decode_error_kind(bytes, &msg), io::ImageErrorKind::TooLarge);
  EXPECT_NE(msg.find("100000x100000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("89478485"), std::string::npos) << msg;
}

TEST(DecodeErrors, JpegHeaderOverPixelLimitFailsBeforeAllocating) {
  JpegSpec s = recap::testing::jpeg_spec(8, 8, 3, 90);
  s.pixels = smooth_picture(8, 8, 3);
  auto bytes = encode_jpeg(s);
  // Patch SOF0 to claim 60000 x 60000 (3.6 gigapixels); the scan data is for 8x8.
  size_t sof = 0;
  for (size_t i = 2; i + 1 < bytes.size(); ++i)
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xC0) {
      sof = i;
      break;
    }
  ASSERT_NE(sof, 0u);
  bytes[sof + 5] = 60000 >> 8, bytes[sof + 6] = 60000 & 0xFF;  // height
  bytes[sof + 7] = 60000 >> 8, bytes[sof + 8] = 60000 & 0xFF;  // width
  std::string msg;
  EXPECT_EQ(decode_error_kind(bytes, &msg), io::ImageErrorKind::TooLarge);
  EXPECT_NE(msg.find("60000x60000"), std::string::npos) << msg;
  // Only the headers up to the end of SOF: still too large, not truncated.
  bytes.resize(sof + 2 + ((bytes[sof + 2] << 8) | bytes[sof + 3]));
  EXPECT_EQ(decode_error_kind(bytes), io::ImageErrorKind::TooLarge);
}

TEST(DecodeErrors, CustomPixelLimit) {
  PngSpec s = recap::testing::png_spec(20, 10, 2, 8);
  s.samples = random_samples(600, 255, 52);
  const auto bytes = encode_png(s);
  EXPECT_EQ(decode_error_kind(bytes, nullptr, limit(199)), io::ImageErrorKind::TooLarge);
  EXPECT_NO_THROW(io::decode_image(bytes, limit(200)));
  EXPECT_NO_THROW(io::decode_image(bytes, limit(0)));  // no limit
}

TEST(DecodeErrors, RandomGarbageAfterMagicNeverCrashes) {
  // Fuzz-ish: valid magic followed by noise must give an ImageError, never a crash or hang.
  for (uint32_t seed = 0; seed < 200; ++seed) {
    auto bytes = random_bytes(64 + seed * 3, seed);
    if (seed % 2 == 0) {
      bytes[0] = 0xFF, bytes[1] = 0xD8, bytes[2] = 0xFF;
    } else {
      const uint8_t sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
      std::copy(sig, sig + 8, bytes.begin());
    }
    try {
      io::decode_image(bytes);
    } catch (const io::ImageError&) {
    }
  }
}

TEST(DecodeErrors, DamagedFilesNeverCrash) {
  // Single-byte damage at many positions of a valid PNG and JPEG: an image or an ImageError.
  PngSpec ps = recap::testing::png_spec(12, 9, 6, 8);
  ps.samples = random_samples(12 * 9 * 4, 255, 60);
  JpegSpec js = recap::testing::jpeg_spec(24, 24, 3, 80);
  js.progressive = true;
  js.pixels = smooth_picture(24, 24, 3);
  for (const auto& good : {encode_png(ps), encode_jpeg(js)}) {
    for (size_t pos = 0; pos < good.size(); pos += 3) {
      auto bad = good;
      bad[pos] ^= 0x5A;
      try {
        const io::Image img = io::decode_image(bad);
        EXPECT_EQ(img.rgb.size(), img.num_pixels() * 3);
      } catch (const io::ImageError&) {
      }
    }
  }
}

TEST(DecodeFile, MissingFileIsReadFailedAndNamesThePath) {
  const std::string path = "/nonexistent/dir/picture.jpg";
  try {
    io::decode_image_file(path);
    FAIL() << "expected ImageError";
  } catch (const io::ImageError& e) {
    EXPECT_EQ(e.kind(), io::ImageErrorKind::ReadFailed);
    EXPECT_EQ(std::string(e.what()).rfind(path, 0), 0u) << e.what();
  }
}

TEST(DecodeFile, DirectoryIsReadFailed) {
  const std::string dir = std::filesystem::temp_directory_path().string();
  try {
    io::decode_image_file(dir);
    FAIL() << "expected ImageError";
  } catch (const io::ImageError& e) {
    EXPECT_EQ(e.kind(), io::ImageErrorKind::ReadFailed) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(dir, 0), 0u) << e.what();
  }
}

TEST(DecodeFile, ErrorsNameTheFile) {
  const std::string path = (std::filesystem::temp_directory_path() / "recap_images_truncated.png").string();
  PngSpec s = recap::testing::png_spec(30, 30, 2, 8);
  s.samples = random_samples(2700, 255, 70);
  const auto full = encode_png(s);
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(full.data()), static_cast<std::streamsize>(full.size() / 2));
  }
  try {
    io::decode_image_file(path);
    FAIL() << "expected ImageError";
  } catch (const io::ImageError& e) {
    EXPECT_EQ(e.kind(), io::ImageErrorKind::Truncated);
    EXPECT_EQ(std::string(e.what()).rfind(path + ": PNG", 0), 0u) << e.what();
  }
  std::filesystem::remove(path);
}

#ifdef RECAP_HAVE_WEBP
TEST(DecodeWebp, LosslessRgbAndRgba) {
  const int w = 21, h = 13;
  const auto rgb = random_bytes(static_cast<size_t>(w) * h * 3, 80);
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(rgb.data(), w, h, w * 3, &out);
  ASSERT_GT(n, 0u);
  std::vector<uint8_t> webp(out, out + n);
  WebPFree(out);
  io::Image img = io::decode_image(webp);
  EXPECT_EQ(img.source.format, io::ImageFormat::Webp);
  EXPECT_EQ(img.rgb, rgb);

  auto rgba = random_bytes(static_cast<size_t>(w) * h * 4, 81);
  for (size_t i = 3; i < rgba.size(); i += 4)
    rgba[i] = static_cast<uint8_t>(1 + rgba[i] % 255);  // no alpha 0
  n = WebPEncodeLosslessRGBA(rgba.data(), w, h, w * 4, &out);
  ASSERT_GT(n, 0u);
  webp.assign(out, out + n);
  WebPFree(out);
  img = io::decode_image(webp);
  EXPECT_TRUE(img.source.has_alpha);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(img.rgb[3 * i + c], rgba[4 * i + c]);

  webp.resize(webp.size() / 2);
  EXPECT_EQ(decode_error_kind(webp), io::ImageErrorKind::Truncated);
}
#endif

}  // namespace
