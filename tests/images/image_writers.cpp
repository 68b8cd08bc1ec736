#include "image_writers.h"

// jpeglib.h uses size_t and FILE without including their headers: keep this block before it.
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace recap::testing {

namespace {

void png_write_to_vector(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
void png_flush_noop(png_structp) {}

int channels_of(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
      return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return 2;
    case PNG_COLOR_TYPE_RGB:
      return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      return 4;
  }
  throw std::invalid_argument("bad color type");
}

// Packs one row of samples into PNG's on-disk layout (MSB-first bits, big-endian 16-bit).
std::vector<uint8_t> pack_row(const PngSpec& s, int y) {
  const int ch = channels_of(s.color_type);
  const size_t n = static_cast<size_t>(s.width) * ch;
  const uint32_t* in = s.samples.data() + n * y;
  std::vector<uint8_t> row;
  if (s.bit_depth == 16) {
    for (size_t i = 0; i < n; ++i) {
      row.push_back(static_cast<uint8_t>(in[i] >> 8));
      row.push_back(static_cast<uint8_t>(in[i] & 0xFF));
    }
  } else if (s.bit_depth == 8) {
    for (size_t i = 0; i < n; ++i) row.push_back(static_cast<uint8_t>(in[i]));
  } else {
    const int per_byte = 8 / s.bit_depth;
    row.assign((n + per_byte - 1) / per_byte, 0);
    for (size_t i = 0; i < n; ++i) {
      const int shift = 8 - s.bit_depth * (static_cast<int>(i % per_byte) + 1);
      row[i / per_byte] |= static_cast<uint8_t>(in[i] << shift);
    }
  }
  return row;
}

}  // namespace

std::vector<uint8_t> encode_png(const PngSpec& s) {
  std::vector<uint8_t> out;
  std::vector<std::vector<uint8_t>> rows;
  for (int y = 0; y < s.height; ++y) rows.push_back(pack_row(s, y));
  std::vector<png_bytep> row_ptrs;
  for (auto& r : rows) row_ptrs.push_back(r.data());

  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("test PNG encoder failed");
  }
  png_set_write_fn(png, &out, png_write_to_vector, png_flush_noop);
  png_set_check_for_invalid_index(png, 0);  // allow out-of-palette indices on purpose
  png_set_IHDR(png, info, s.width, s.height, s.bit_depth, s.color_type,
               s.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> plte;
  if (s.color_type == PNG_COLOR_TYPE_PALETTE) {
    for (size_t i = 0; i + 2 < s.palette_rgb.size(); i += 3)
      plte.push_back({s.palette_rgb[i], s.palette_rgb[i + 1], s.palette_rgb[i + 2]});
    png_set_PLTE(png, info, plte.data(), static_cast<int>(plte.size()));
    if (!s.trns.empty()) png_set_tRNS(png, info, s.trns.data(), static_cast<int>(s.trns.size()), nullptr);
  } else if (s.trns_color) {
    png_color_16 c{};
    c.gray = 1;
    c.red = 1;
    c.green = 2;
    c.blue = 3;
    png_set_tRNS(png, info, nullptr, 0, &c);
  }
  png_write_info(png, info);
  png_write_image(png, row_ptrs.data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::vector<uint8_t> encode_jpeg(const JpegSpec& s) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);  // the default error_exit exits; inputs here are valid
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = s.width;
  cinfo.image_height = s.height;
  cinfo.input_components = s.components;
  cinfo.in_color_space = s.components == 1 ? JCS_GRAYSCALE : (s.components == 3 ? JCS_RGB : JCS_CMYK);
  jpeg_set_defaults(&cinfo);
  if (s.components == 4) jpeg_set_colorspace(&cinfo, s.ycck ? JCS_YCCK : JCS_CMYK);
  jpeg_set_quality(&cinfo, s.quality, TRUE);
  if (s.no_subsampling)
    for (int c = 0; c < cinfo.num_components; ++c)
      cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  if (s.progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(s.width) * s.components;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(s.pixels.data() + stride * cinfo.next_scanline);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  free(buf);
  return out;
}

std::vector<uint8_t> libjpeg_decode_raw(const std::vector<uint8_t>& jpeg, int* width, int* height,
                                        int* comps) {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, jpeg.data(), jpeg.size());
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.num_components == 4) cinfo.out_color_space = JCS_CMYK;
  jpeg_start_decompress(&cinfo);
  *width = cinfo.output_width;
  *height = cinfo.output_height;
  *comps = cinfo.output_components;
  std::vector<uint8_t> out(static_cast<size_t>(*width) * *height * *comps);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.data() + static_cast<size_t>(cinfo.output_scanline) * *width * *comps;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

uint32_t png_chunk_crc(const std::string& type, const std::vector<uint8_t>& data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(type.data()), static_cast<uInt>(type.size()));
  if (!data.empty()) crc = crc32(crc, data.data(), static_cast<uInt>(data.size()));
  return static_cast<uint32_t>(crc);
}

std::vector<uint8_t> png_chunk(const std::string& type, const std::vector<uint8_t>& data) {
  // Sized up front and written by index (push_back here trips a GCC 12 -Wstringop-overflow
  // false positive).
  std::vector<uint8_t> out(12 + data.size());
  auto put32 = [&](size_t at, uint32_t v) {
    out[at] = static_cast<uint8_t>(v >> 24);
    out[at + 1] = static_cast<uint8_t>(v >> 16);
    out[at + 2] = static_cast<uint8_t>(v >> 8);
    out[at + 3] = static_cast<uint8_t>(v);
  };
  put32(0, static_cast<uint32_t>(data.size()));
  std::memcpy(out.data() + 4, type.data(), 4);
  if (!data.empty()) std::memcpy(out.data() + 8, data.data(), data.size());
  put32(8 + data.size(), png_chunk_crc(type, data));
  return out;
}

}  // namespace recap::testing
