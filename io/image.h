// Image decoding: JPEG (libjpeg-turbo), PNG (libpng) and, when built with libwebp, WebP,
// to 8-bit RGB exactly as Pillow 9.4 does `Image.open(f).convert('RGB')`.
//
// What "exactly as Pillow" means here (the reference LLaVA / CLIP pipelines use Pillow):
//  - JPEG: libjpeg defaults (JDCT_ISLOW, fancy upsampling). Gray JPEGs are replicated to RGB.
//    Four-channel (CMYK or YCCK) JPEGs are read the way Pillow reads them (always assuming
//    Adobe's inverted CMYK) and converted with Pillow's cmyk2rgb:
//    R = nk - round(C*nk/255) with nk = 255 - K (no ICC profile). EXIF orientation is ignored.
//  - PNG: alpha is dropped, never composited; palette images use their PLTE colours (tRNS
//    ignored; an index past the palette maps to gray (i,i,i) as in Pillow 9.4); 1/2/4-bit gray
//    is scaled to 0..255; 16-bit RGB/RGBA/gray+alpha keep the high byte; 16-bit gray is
//    Pillow mode "I" and convert('RGB') clips it to 0..255 (so most values become 255).
//    Gamma, sBIT and colour profiles are ignored. Interlaced (Adam7) images are supported.
//  - WebP (RECAP_HAVE_WEBP): still images, alpha dropped. Animated WebP is unsupported.
//
// Every failure throws io::ImageError with a kind (for per-sample status reporting) and a
// message that says what is wrong; decoding never exits, aborts or prints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace recap::io {

enum class ImageFormat { Unknown, Jpeg, Png, Webp };
const char* image_format_name(ImageFormat f);  // "unknown", "jpeg", "png", "webp"

// What the file held before conversion to RGB.
struct ImageSource {
  ImageFormat format = ImageFormat::Unknown;
  // Pillow's mode for the decoded file: "1", "L", "LA", "I" (16-bit gray), "P", "RGB",
  // "RGBA", "CMYK".
  std::string mode;
  int bit_depth = 8;         // bits per sample in the file (1, 2, 4, 8 or 16)
  bool interlaced = false;   // progressive JPEG or Adam7 PNG
  bool has_alpha = false;    // an alpha channel or tRNS was present (and dropped)
  int decoder_warnings = 0;  // non-fatal libjpeg/libpng warnings (ignored, as Pillow does)
};

// A decoded image: 8-bit RGB, rows top to bottom, pixels interleaved (HWC), no row padding.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // size width * height * 3
  ImageSource source;

  size_t num_pixels() const { return static_cast<size_t>(width) * static_cast<size_t>(height); }
  uint8_t* row(int y) { return rgb.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* row(int y) const { return rgb.data() + static_cast<size_t>(y) * width * 3; }
  // An image of the given size with every pixel set to (r,g,b).
  static Image filled(int width, int height, uint8_t r, uint8_t g, uint8_t b);
};

enum class ImageErrorKind {
  UnsupportedFormat,  // not JPEG/PNG/WebP (GIF, BMP, HTML, ...), or a variant we cannot decode
  Truncated,          // the data ends before the image does
  Corrupt,            // malformed headers or compressed data
  TooLarge,           // more pixels than DecodeOptions::max_pixels (checked before allocating)
  Empty,              // zero bytes, or a zero width/height
  ReadFailed,         // decode_image_file could not open/read the file
};
// Stable lower-case names for status columns: "unsupported_format", "truncated", "corrupt",
// "too_large", "empty", "read_failed".
const char* image_error_kind_name(ImageErrorKind k);

class ImageError : public std::runtime_error {
 public:
  ImageError(ImageErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ImageErrorKind kind() const { return kind_; }

 private:
  ImageErrorKind kind_;
};

struct DecodeOptions {
  // Images with more pixels than this are rejected from their header, before any pixel
  // memory is allocated (decompression bombs). Default: Pillow's MAX_IMAGE_PIXELS
  // (1024*1024*1024 // 4 // 3). 0 means no limit.
  uint64_t max_pixels = 89478485;
};

// Identifies the container from the leading bytes (JPEG/PNG/WebP), Unknown otherwise.
ImageFormat sniff_image_format(const uint8_t* data, size_t size);

// What the leading bytes look like, for error messages: "GIF", "BMP", "TIFF", "HTML/XML text",
// ..., or "unknown signature" (never the bytes: they may be a secret from any file a list names).
std::string describe_magic(const uint8_t* data, size_t size);

// Decodes an in-memory encoded image to RGB. Throws ImageError.
Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& opts = {});
inline Image decode_image(const std::vector<uint8_t>& bytes, const DecodeOptions& opts = {}) {
  return decode_image(bytes.data(), bytes.size(), opts);
}

// Reads and decodes a file. Error messages start with the path. Throws ImageError.
Image decode_image_file(const std::string& path, const DecodeOptions& opts = {});

}  // namespace recap::io
