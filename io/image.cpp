// Image decoding to RGB8 with Pillow 9.4's conventions; see image.h for the rules.
//
// libjpeg and libpng report fatal errors through longjmp. Each decoder therefore keeps its
// setjmp-protected part in one function ("*_decode_core") whose state lives in a struct owned
// by the caller's frame, creates no C++ objects with destructors between setjmp and the last
// library call, and reports failure by return value; the C++ exception is thrown afterwards.
#include "io/image.h"

// jpeglib.h uses size_t and FILE without including their headers: keep this block before it.
#include <jpeglib.h>

#include <cstddef>
#include <cstdio>
// jpeglib.h must come first: jerror.h uses its types.
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>

#ifdef RECAP_HAVE_WEBP
#include <webp/decode.h>
#endif

namespace recap::io {

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg:
      return "jpeg";
    case ImageFormat::Png:
      return "png";
    case ImageFormat::Webp:
      return "webp";
    case ImageFormat::Unknown:
      break;
  }
  return "unknown";
}

const char* image_error_kind_name(ImageErrorKind k) {
  switch (k) {
    case ImageErrorKind::UnsupportedFormat:
      return "unsupported_format";
    case ImageErrorKind::Truncated:
      return "truncated";
    case ImageErrorKind::Corrupt:
      return "corrupt";
    case ImageErrorKind::TooLarge:
      return "too_large";
    case ImageErrorKind::Empty:
      return "empty";
    case ImageErrorKind::ReadFailed:
      return "read_failed";
  }
  return "unknown";
}

Image Image::filled(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  Image img;
  img.width = width;
  img.height = height;
  img.rgb.resize(img.num_pixels() * 3);
  if (img.rgb.empty()) return img;
  // One row pixel by pixel, then whole-row copies.
  uint8_t* first = img.rgb.data();
  for (int x = 0; x < width; ++x) {
    first[3 * x + 0] = r;
    first[3 * x + 1] = g;
    first[3 * x + 2] = b;
  }
  for (int y = 1; y < height; ++y) std::memcpy(img.row(y), first, static_cast<size_t>(width) * 3);
  img.source.mode = "RGB";
  return img;
}

namespace {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n, size_t offset = 0) {
  return size >= offset + n && std::memcmp(data + offset, magic, n) == 0;
}

std::string pixel_count_message(uint64_t w, uint64_t h, uint64_t max_pixels) {
  return "image is " + std::to_string(w) + "x" + std::to_string(h) + " = " + std::to_string(w * h) +
         " pixels, more than the limit of " + std::to_string(max_pixels) +
         " (DecodeOptions::max_pixels; a possible decompression bomb)";
}

bool exceeds_limit(uint64_t w, uint64_t h, const DecodeOptions& opts) {
  return opts.max_pixels != 0 && w * h > opts.max_pixels;
}

// Output buffer allocation, also guarding against size_t overflow on 32-bit hosts.
void allocate_rgb(Image* img, uint32_t w, uint32_t h) {
  img->width = static_cast<int>(w);
  img->height = static_cast<int>(h);
  img->rgb.resize(static_cast<size_t>(w) * h * 3);
}

// ---------------------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------------------

struct JpegErrorManager {
  jpeg_error_mgr pub;  // must be first: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  bool truncated = false;
  int warnings = 0;
  char message[JMSG_LENGTH_MAX] = {0};
};

// libjpeg's message for the current code, with every printf parameter shown as "?": the
// parameters of some messages are bytes of the file ("Unsupported marker type 0x53"), and no
// byte of a file that may not be an image reaches a message. The template text is libjpeg's own.
void jpeg_message_without_parameters(j_common_ptr cinfo, char* out) {
  const jpeg_error_mgr* e = cinfo->err;
  const char* tmpl = nullptr;
  if (e->msg_code > 0 && e->msg_code <= e->last_jpeg_message)
    tmpl = e->jpeg_message_table[e->msg_code];
  else if (e->addon_message_table && e->msg_code >= e->first_addon_message &&
           e->msg_code <= e->last_addon_message)
    tmpl = e->addon_message_table[e->msg_code - e->first_addon_message];
  if (!tmpl) {
    std::snprintf(out, JMSG_LENGTH_MAX, "libjpeg error %d", e->msg_code);
    return;
  }
  size_t n = 0;
  for (const char* p = tmpl; *p && n + 2 < JMSG_LENGTH_MAX; ++p) {
    if (*p == '%' && p[1] == '%') {
      out[n++] = '%';
      ++p;
    } else if (*p == '%') {
      ++p;  // flags, width, precision and length, then the conversion letter
      while (*p && std::strchr("-+ #0123456789.lhzjt", *p)) ++p;
      if (!*p) break;
      out[n++] = '?';
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
}

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  jpeg_message_without_parameters(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg calls this with level -1 for warnings, >= 0 for trace messages. Pillow ignores
// warnings (corrupt-data warnings still give an image), except that running out of data is
// "image file is truncated" there; the memory source reports that as JWRN_JPEG_EOF.
void jpeg_on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    err->truncated = true;
    jpeg_message_without_parameters(cinfo, err->message);
    std::longjmp(err->jump, 1);
  }
  ++err->warnings;
}

void jpeg_silent_output(j_common_ptr) {}

struct JpegState {
  jpeg_decompress_struct cinfo{};
  JpegErrorManager err;
  std::vector<uint8_t> row;  // gray/CMYK scanline before conversion
  ImageErrorKind fail_kind = ImageErrorKind::Corrupt;
  std::string fail_message;
};

ImageErrorKind classify_jpeg_error(int code) {
  switch (code) {
    case JERR_BAD_PRECISION:
    case JERR_ARITH_NOTIMPL:
    case JERR_NOT_COMPILED:
      return ImageErrorKind::UnsupportedFormat;
    case JERR_IMAGE_TOO_BIG:
    case JERR_OUT_OF_MEMORY:
      return ImageErrorKind::TooLarge;
    default:
      return ImageErrorKind::Corrupt;
  }
}

// Pillow's "CMYK;I" unpacking (libjpeg's CMYK is stored inverted by Adobe applications) followed
// by Pillow's cmyk2rgb: R = clip8(nk - MULDIV255(C, nk)), nk = 255 - K, MULDIV255(a, b) =
// ((t >> 8) + t) >> 8 with t = a*b + 128, i.e. a*b/255 rounded.
inline uint8_t pillow_cmyk_channel(uint8_t inverted_ink, uint8_t inverted_k) {
  const int ink = 255 - inverted_ink;
  const int nk = inverted_k;  // 255 - (255 - k)
  const int t = ink * nk + 128;
  const int v = nk - (((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

bool jpeg_decode_core(JpegState* st, const uint8_t* data, size_t size, const DecodeOptions& opts,
                      Image* out) {
  jpeg_decompress_struct* cinfo = &st->cinfo;
  cinfo->err = jpeg_std_error(&st->err.pub);
  st->err.pub.error_exit = jpeg_on_error;
  st->err.pub.emit_message = jpeg_on_message;
  st->err.pub.output_message = jpeg_silent_output;
  // Armed before jpeg_create_decompress, which can fail too; destroying the zero-initialised
  // struct is a no-op.
  if (setjmp(st->err.jump)) {
    jpeg_destroy_decompress(cinfo);
    st->fail_kind = st->err.truncated ? ImageErrorKind::Truncated : classify_jpeg_error(st->err.pub.msg_code);
    st->fail_message =
        std::string("JPEG: ") + (st->err.truncated ? "truncated data: " : "") + st->err.message;
    return false;
  }
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(cinfo, TRUE);

  const uint32_t w = cinfo->image_width, h = cinfo->image_height;
  const int comps = cinfo->num_components;
  if (w == 0 || h == 0) {
    jpeg_destroy_decompress(cinfo);
    st->fail_kind = ImageErrorKind::Empty;
    st->fail_message = "JPEG: zero image size " + std::to_string(w) + "x" + std::to_string(h);
    return false;
  }
  if (exceeds_limit(w, h, opts)) {
    jpeg_destroy_decompress(cinfo);
    st->fail_kind = ImageErrorKind::TooLarge;
    st->fail_message = "JPEG: " + pixel_count_message(w, h, opts.max_pixels);
    return false;
  }
  // Pillow handles 1 (L), 3 (RGB) and 4 (CMYK) component JPEGs only.
  if (comps != 1 && comps != 3 && comps != 4) {
    jpeg_destroy_decompress(cinfo);
    st->fail_kind = ImageErrorKind::UnsupportedFormat;
    st->fail_message = "JPEG: cannot handle " + std::to_string(comps) + "-component images";
    return false;
  }
  // Decoder defaults are Pillow's: JDCT_ISLOW, do_fancy_upsampling = TRUE, no scaling.
  cinfo->out_color_space = comps == 1 ? JCS_GRAYSCALE : (comps == 3 ? JCS_RGB : JCS_CMYK);

  out->source.format = ImageFormat::Jpeg;
  out->source.mode = comps == 1 ? "L" : (comps == 3 ? "RGB" : "CMYK");
  out->source.bit_depth = cinfo->data_precision;
  out->source.interlaced = cinfo->progressive_mode != 0;

  jpeg_start_decompress(cinfo);
  try {
    allocate_rgb(out, w, h);
    if (comps != 3) st->row.resize(static_cast<size_t>(w) * comps);
  } catch (const std::bad_alloc&) {
    jpeg_destroy_decompress(cinfo);
    st->fail_kind = ImageErrorKind::TooLarge;
    st->fail_message = "JPEG: out of memory for a " + std::to_string(w) + "x" + std::to_string(h) + " image";
    return false;
  }
  while (cinfo->output_scanline < cinfo->output_height) {
    const uint32_t y = cinfo->output_scanline;
    uint8_t* dst = out->row(static_cast<int>(y));
    JSAMPROW rowp = comps == 3 ? dst : st->row.data();
    if (jpeg_read_scanlines(cinfo, &rowp, 1) != 1) break;  // cannot happen with a memory source
    if (comps == 1) {
      const uint8_t* g = st->row.data();
      for (uint32_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g[x];
    } else if (comps == 4) {
      const uint8_t* p = st->row.data();
      for (uint32_t x = 0; x < w; ++x, p += 4) {
        dst[3 * x + 0] = pillow_cmyk_channel(p[0], p[3]);
        dst[3 * x + 1] = pillow_cmyk_channel(p[1], p[3]);
        dst[3 * x + 2] = pillow_cmyk_channel(p[2], p[3]);
      }
    }
  }
  // Like Pillow, stop once every scanline is decoded: whatever follows (EOI, trailing bytes)
  // is not needed, so jpeg_finish_decompress is not called.
  out->source.decoder_warnings = st->err.warnings;
  jpeg_destroy_decompress(cinfo);
  return true;
}

// Finds the frame size in the SOFn segment without libjpeg, so an oversized header is rejected
// even when the file ends right after it (libjpeg's jpeg_read_header reads up to the first
// scan). Returns false when no SOF precedes the first SOS within the data.
bool jpeg_peek_size(const uint8_t* data, size_t size, uint32_t* w, uint32_t* h) {
  size_t pos = 2;  // after SOI
  while (pos + 4 <= size) {
    if (data[pos] != 0xFF) return false;
    uint8_t marker = data[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) {  // no payload
      pos += 2;
      continue;
    }
    const size_t len = (static_cast<size_t>(data[pos + 2]) << 8) | data[pos + 3];
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (pos + 9 > size) return false;
      *h = (static_cast<uint32_t>(data[pos + 5]) << 8) | data[pos + 6];
      *w = (static_cast<uint32_t>(data[pos + 7]) << 8) | data[pos + 8];
      return true;
    }
    if (marker == 0xDA || marker == 0xD9 || len < 2) return false;
    pos += 2 + len;
  }
  return false;
}

Image decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& opts) {
  uint32_t w = 0, h = 0;
  if (jpeg_peek_size(data, size, &w, &h) && exceeds_limit(w, h, opts))
    throw ImageError(ImageErrorKind::TooLarge, "JPEG: " + pixel_count_message(w, h, opts.max_pixels));
  Image img;
  JpegState st;
  if (!jpeg_decode_core(&st, data, size, opts, &img)) throw ImageError(st.fail_kind, st.fail_message);
  return img;
}

// ---------------------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------------------

// The decoded (post png_set_packing) row layout and how Pillow turns it into RGB.
struct PngLayout {
  int color_type;
  int bit_depth;
  uint8_t palette[256 * 3];
};

struct PngState {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  std::jmp_buf jump;
  bool truncated = false;
  int warnings = 0;
  char message[256] = {0};
  std::vector<uint8_t> raw;         // one row (non-interlaced) or the whole image (Adam7)
  std::vector<png_bytep> row_ptrs;  // Adam7 only
  // libpng handles live here, not in the setjmp frame, so the error path sees their values.
  png_structp png = nullptr;
  png_infop info = nullptr;
  PngLayout* layout = nullptr;
  ImageErrorKind fail_kind = ImageErrorKind::Corrupt;
  std::string fail_message;
};

void png_on_read(png_structp png, png_bytep out, size_t n) {
  auto* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > st->size - st->pos) {
    st->truncated = true;
    png_error(png, "unexpected end of data");
  }
  std::memcpy(out, st->data + st->pos, n);
  st->pos += n;
}

// libpng prefixes a chunk error with the chunk's 4-byte type as read from the file (letters as
// they are, other bytes as [XX]). In a file that merely starts with the PNG signature those are
// 4 bytes of its content, and no byte of a non-image may reach a message (docs/CAPTION.md):
// a type that is not a registered PNG chunk name is shown as "unregistered chunk" instead.
std::string png_message_without_content(png_structp png, const char* msg) {
  const png_uint_32 type = png_get_io_chunk_type(png);
  std::string prefix;
  char name[5] = {0};
  for (int shift = 24, i = 0; shift >= 0; shift -= 8, ++i) {
    const int c = static_cast<int>((type >> shift) & 0xff);
    name[i] = static_cast<char>(c);
    if (c < 65 || c > 122 || (c > 90 && c < 97)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "[%02X]", c);
      prefix += hex;
    } else {
      prefix += static_cast<char>(c);
    }
  }
  prefix += ": ";
  const std::string text = msg;
  if (text.compare(0, prefix.size(), prefix) != 0) return text;
  static const char* const kRegistered[] = {"IHDR", "PLTE", "IDAT", "IEND", "acTL", "bKGD", "cHRM", "cICP",
                                            "cLLI", "dSIG", "eXIf", "fcTL", "fdAT", "gAMA", "hIST", "iCCP",
                                            "iTXt", "mDCV", "oFFs", "pCAL", "pHYs", "sBIT", "sCAL", "sPLT",
                                            "sRGB", "sTER", "tEXt", "tIME", "tRNS", "zTXt"};
  for (const char* known : kRegistered)
    if (std::strcmp(known, name) == 0) return text;
  return "unregistered chunk: " + text.substr(prefix.size());
}

void png_on_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  try {  // no exception may cross libpng's C frames
    std::snprintf(st->message, sizeof(st->message), "%s",
                  msg ? png_message_without_content(png, msg).c_str() : "unknown libpng error");
  } catch (...) {
    std::snprintf(st->message, sizeof(st->message), "libpng error");
  }
  std::longjmp(st->jump, 1);
}

void png_on_warning(png_structp png, png_const_charp) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  ++st->warnings;
}

void png_row_to_rgb(const PngLayout& L, const uint8_t* src, uint8_t* dst, uint32_t w) {
  switch (L.color_type) {
    case PNG_COLOR_TYPE_GRAY:
      if (L.bit_depth == 16) {
        // Pillow mode "I"; convert('RGB') clips to 0..255.
        for (uint32_t x = 0; x < w; ++x) {
          const int v = (src[2 * x] << 8) | src[2 * x + 1];
          dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = static_cast<uint8_t>(v > 255 ? 255 : v);
        }
      } else {
        // 1/2/4-bit samples (one per byte after png_set_packing) scaled like Pillow's
        // "1", "L;2", "L;4" unpackers: *255, *0x55, *0x11.
        const int scale = L.bit_depth == 8 ? 1 : 255 / ((1 << L.bit_depth) - 1);
        for (uint32_t x = 0; x < w; ++x) {
          const uint8_t v = static_cast<uint8_t>(src[x] * scale);
          dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = v;
        }
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
      const int step = L.bit_depth == 16 ? 4 : 2;  // high byte of L first in both
      for (uint32_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[step * x];
      break;
    }
    case PNG_COLOR_TYPE_RGB:
      if (L.bit_depth == 16) {
        for (uint32_t x = 0; x < w; ++x) {
          dst[3 * x + 0] = src[6 * x + 0];
          dst[3 * x + 1] = src[6 * x + 2];
          dst[3 * x + 2] = src[6 * x + 4];
        }
      } else {
        std::memcpy(dst, src, static_cast<size_t>(w) * 3);
      }
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA: {
      const int px = L.bit_depth == 16 ? 8 : 4, ch = L.bit_depth == 16 ? 2 : 1;
      for (uint32_t x = 0; x < w; ++x) {
        dst[3 * x + 0] = src[px * x + 0 * ch];
        dst[3 * x + 1] = src[px * x + 1 * ch];
        dst[3 * x + 2] = src[px * x + 2 * ch];
      }
      break;
    }
    case PNG_COLOR_TYPE_PALETTE:
      for (uint32_t x = 0; x < w; ++x) std::memcpy(dst + 3 * x, L.palette + 3 * src[x], 3);
      break;
  }
}

const char* pillow_png_mode(int color_type, int bit_depth) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
      return bit_depth == 1 ? "1" : (bit_depth == 16 ? "I" : "L");
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return bit_depth == 16 ? "RGBA" : "LA";  // Pillow opens 16-bit LA as RGBA
    case PNG_COLOR_TYPE_RGB:
      return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA:
      return "RGBA";
    case PNG_COLOR_TYPE_PALETTE:
      return "P";
  }
  return "?";
}

void png_release(PngState* st) {
  if (st->png) png_destroy_read_struct(&st->png, st->info ? &st->info : nullptr, nullptr);
  st->png = nullptr;
  st->info = nullptr;
  delete st->layout;
  st->layout = nullptr;
}

bool png_decode_core(PngState* st, const DecodeOptions& opts, Image* out) {
  if (setjmp(st->jump)) {
    png_release(st);
    st->fail_kind = st->truncated ? ImageErrorKind::Truncated : ImageErrorKind::Corrupt;
    st->fail_message = std::string("PNG: ") + (st->truncated ? "truncated data: " : "") + st->message;
    return false;
  }
  st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, png_on_error, png_on_warning);
  if (st->png) st->info = png_create_info_struct(st->png);
  if (!st->png || !st->info) {
    png_release(st);
    st->fail_message = "PNG: cannot create the libpng reader";
    return false;
  }
  png_structp png = st->png;
  png_infop info = st->info;
  png_set_read_fn(png, st, png_on_read);
  // We map palette indices ourselves (an out-of-range index is not an error in Pillow).
  png_set_check_for_invalid_index(png, 0);
  png_read_info(png, info);

  png_uint_32 w = 0, h = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (exceeds_limit(w, h, opts)) {
    png_release(st);
    st->fail_kind = ImageErrorKind::TooLarge;
    st->fail_message = "PNG: " + pixel_count_message(w, h, opts.max_pixels);
    return false;
  }
  try {
    st->layout = new PngLayout();
  } catch (const std::bad_alloc&) {
    png_release(st);
    st->fail_message = "PNG: out of memory";
    return false;
  }
  PngLayout* layout = st->layout;
  layout->color_type = color_type;
  layout->bit_depth = bit_depth;
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    // Pillow 9.4 starts every palette as a gray ramp and overwrites the PLTE entries.
    for (int i = 0; i < 256; ++i)
      layout->palette[3 * i] = layout->palette[3 * i + 1] = layout->palette[3 * i + 2] = i;
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(png, info, &plte, &n) & PNG_INFO_PLTE) {
      for (int i = 0; i < std::min(n, 256); ++i) {
        layout->palette[3 * i + 0] = plte[i].red;
        layout->palette[3 * i + 1] = plte[i].green;
        layout->palette[3 * i + 2] = plte[i].blue;
      }
    }
  }
  if (bit_depth < 8) png_set_packing(png);  // one sample per byte, values unscaled
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);

  out->source.format = ImageFormat::Png;
  out->source.mode = pillow_png_mode(color_type, bit_depth);
  out->source.bit_depth = bit_depth;
  out->source.interlaced = interlace != PNG_INTERLACE_NONE;
  out->source.has_alpha = (color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS);

  try {
    allocate_rgb(out, w, h);
    st->raw.resize(passes > 1 ? rowbytes * h : rowbytes);
    if (passes > 1) {
      st->row_ptrs.resize(h);
      for (png_uint_32 y = 0; y < h; ++y) st->row_ptrs[y] = st->raw.data() + rowbytes * y;
    }
  } catch (const std::bad_alloc&) {
    png_release(st);
    st->fail_kind = ImageErrorKind::TooLarge;
    st->fail_message = "PNG: out of memory for a " + std::to_string(w) + "x" + std::to_string(h) + " image";
    return false;
  }
  if (passes > 1) {
    png_read_image(png, st->row_ptrs.data());
    for (png_uint_32 y = 0; y < h; ++y) png_row_to_rgb(*layout, st->row_ptrs[y], out->row(y), w);
  } else {
    for (png_uint_32 y = 0; y < h; ++y) {
      png_read_row(png, st->raw.data(), nullptr);
      png_row_to_rgb(*layout, st->raw.data(), out->row(y), w);
    }
  }
  // The chunks after the image data (and IEND) are not needed for the pixels, as in Pillow.
  out->source.decoder_warnings = st->warnings;
  png_release(st);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, const DecodeOptions& opts) {
  // IHDR is always the first chunk: check its size before libpng reads further (png_read_info
  // reads up to the first IDAT, so a bare oversized header would otherwise look truncated).
  if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t at) {
      return (static_cast<uint32_t>(data[at]) << 24) | (static_cast<uint32_t>(data[at + 1]) << 16) |
             (static_cast<uint32_t>(data[at + 2]) << 8) | data[at + 3];
    };
    const uint32_t w = be32(16), h = be32(20);
    if (exceeds_limit(w, h, opts))
      throw ImageError(ImageErrorKind::TooLarge, "PNG: " + pixel_count_message(w, h, opts.max_pixels));
  }
  Image img;
  PngState st;
  st.data = data;
  st.size = size;
  if (!png_decode_core(&st, opts, &img)) throw ImageError(st.fail_kind, st.fail_message);
  return img;
}

// ---------------------------------------------------------------------------------------
// WebP
// ---------------------------------------------------------------------------------------

#ifdef RECAP_HAVE_WEBP
const char* webp_status_text(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OK:
      return "ok";
    case VP8_STATUS_OUT_OF_MEMORY:
      return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
      return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
      return "suspended";
    case VP8_STATUS_USER_ABORT:
      return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "not enough data";
  }
  return "unknown status";
}

ImageErrorKind webp_error_kind(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return ImageErrorKind::Truncated;
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return ImageErrorKind::UnsupportedFormat;
    case VP8_STATUS_OUT_OF_MEMORY:
      return ImageErrorKind::TooLarge;
    default:
      return ImageErrorKind::Corrupt;
  }
}

Image decode_webp(const uint8_t* data, size_t size, const DecodeOptions& opts) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config))
    throw ImageError(ImageErrorKind::Corrupt, "WebP: libwebp version mismatch");
  VP8StatusCode status = WebPGetFeatures(data, size, &config.input);
  if (status != VP8_STATUS_OK)
    throw ImageError(webp_error_kind(status),
                     std::string("WebP: cannot read header: ") + webp_status_text(status));
  const uint32_t w = static_cast<uint32_t>(config.input.width),
                 h = static_cast<uint32_t>(config.input.height);
  if (config.input.has_animation)
    throw ImageError(ImageErrorKind::UnsupportedFormat, "WebP: animated WebP is not supported");
  if (w == 0 || h == 0) throw ImageError(ImageErrorKind::Empty, "WebP: zero image size");
  if (exceeds_limit(w, h, opts))
    throw ImageError(ImageErrorKind::TooLarge, "WebP: " + pixel_count_message(w, h, opts.max_pixels));
  Image img;
  allocate_rgb(&img, w, h);
  config.output.colorspace = MODE_RGB;  // alpha, if any, is dropped (not composited)
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = img.rgb.data();
  config.output.u.RGBA.stride = static_cast<int>(w) * 3;
  config.output.u.RGBA.size = img.rgb.size();
  status = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);
  if (status != VP8_STATUS_OK)
    throw ImageError(webp_error_kind(status),
                     std::string("WebP: decoding failed: ") + webp_status_text(status));
  img.source.format = ImageFormat::Webp;
  img.source.has_alpha = config.input.has_alpha != 0;
  img.source.mode = img.source.has_alpha ? "RGBA" : "RGB";
  img.source.bit_depth = 8;
  return img;
}
#endif

}  // namespace

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  if (starts_with(data, size, "\xFF\xD8\xFF", 3)) return ImageFormat::Jpeg;
  if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8)) return ImageFormat::Png;
  if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) return ImageFormat::Webp;
  return ImageFormat::Unknown;
}

std::string describe_magic(const uint8_t* data, size_t size) {
  if (size == 0) return "empty";
  struct Magic {
    const char* bytes;
    size_t n;
    size_t offset;
    const char* name;
  };
  static const Magic kMagics[] = {
      {"\xFF\xD8\xFF", 3, 0, "JPEG"},
      {"\x89PNG\r\n\x1A\n", 8, 0, "PNG"},
      {"WEBP", 4, 8, "WebP"},
      {"GIF87a", 6, 0, "GIF"},
      {"GIF89a", 6, 0, "GIF"},
      {"BM", 2, 0, "BMP"},
      {"II*\0", 4, 0, "TIFF"},
      {"MM\0*", 4, 0, "TIFF"},
      {"\0\0\1\0", 4, 0, "ICO"},
      {"8BPS", 4, 0, "PSD"},
      {"ftypavif", 8, 4, "AVIF"},
      {"ftypheic", 8, 4, "HEIC"},
      {"ftypheix", 8, 4, "HEIC"},
      {"ftypmif1", 8, 4, "HEIF"},
      {"ftypmp4", 7, 4, "MP4 video"},
      {"ftypisom", 8, 4, "MP4 video"},
      {"\0\0\0\x0CjP  ", 8, 0, "JPEG 2000"},
      {"\xFF\x4F\xFF\x51", 4, 0, "JPEG 2000 codestream"},
      {"\xFF\x0A", 2, 0, "JPEG XL"},
      {"\0\0\0\x0CJXL ", 8, 0, "JPEG XL"},
      {"%PDF", 4, 0, "PDF"},
      {"\x1F\x8B", 2, 0, "gzip"},
      {"PK\3\4", 4, 0, "ZIP"},
      {"\x1A\x45\xDF\xA3", 4, 0, "WebM/Matroska video"},
      {"\0\0\1\xBA", 4, 0, "MPEG video"},
      {"OggS", 4, 0, "Ogg"},
      {"ID3", 3, 0, "MP3 audio"},
      {"qoif", 4, 0, "QOI"},
      {"\x76\x2F\x31\x01", 4, 0, "OpenEXR"},
      {"#?RADIANCE", 10, 0, "Radiance HDR"},
  };
  for (const Magic& m : kMagics)
    if (starts_with(data, size, m.bytes, m.n, m.offset)) return m.name;
  // Text: an HTML error page or SVG is a common "image" in web-scraped data.
  size_t i = 0;
  if (starts_with(data, size, "\xEF\xBB\xBF", 3)) i = 3;
  while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) ++i;
  if (i < size && data[i] == '<') {
    std::string head(reinterpret_cast<const char*>(data + i), std::min<size_t>(size - i, 256));
    std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::tolower(c); });
    if (head.find("<svg") != std::string::npos) return "SVG";
    if (head.find("<html") != std::string::npos || head.find("<!doctype html") != std::string::npos)
      return "HTML text";
    return "XML/HTML text";
  }
  if (starts_with(data, size, "P", 1) && size > 1 && data[1] >= '1' && data[1] <= '7') return "PNM";
  // Never the bytes themselves: a list may name any file, and its first bytes (a password
  // file's "root:...") must not reach a sidecar, the stats or a log.
  return "unknown signature";
}

Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& opts) {
  if (size == 0 || data == nullptr) throw ImageError(ImageErrorKind::Empty, "empty image data (0 bytes)");
  switch (sniff_image_format(data, size)) {
    case ImageFormat::Jpeg:
      return decode_jpeg(data, size, opts);
    case ImageFormat::Png:
      return decode_png(data, size, opts);
    case ImageFormat::Webp:
#ifdef RECAP_HAVE_WEBP
      return decode_webp(data, size, opts);
#else
      throw ImageError(ImageErrorKind::UnsupportedFormat, "WebP image, but this build has no libwebp");
#endif
    case ImageFormat::Unknown:
      break;
  }
  const std::string looks_like = describe_magic(data, size);
  if (looks_like == "unknown signature")
    throw ImageError(ImageErrorKind::UnsupportedFormat,
                     "not an image (unknown signature; supported: JPEG, PNG, WebP)");
  throw ImageError(ImageErrorKind::UnsupportedFormat,
                   "unsupported image format: looks like " + looks_like + " (supported: JPEG, PNG, WebP)");
}

Image decode_image_file(const std::string& path, const DecodeOptions& opts) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ImageError(ImageErrorKind::ReadFailed, path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool read_error = std::ferror(f) != 0;
  const int read_errno = errno;
  std::fclose(f);
  if (read_error)
    throw ImageError(ImageErrorKind::ReadFailed, path + ": read error: " + std::strerror(read_errno));
  try {
    return decode_image(bytes.data(), bytes.size(), opts);
  } catch (const ImageError& e) {
    throw ImageError(e.kind(), path + ": " + e.what());
  }
}

}  // namespace recap::io
