// Image path cost per image on one core: decode a 640x480 JPEG (generated in memory with
// libjpeg, q90, 4:2:0) and run the LLaVA preprocessing to a 336x336 f32 tensor, plus each
// stage alone. One iteration = one image: read the CPU column (the Time column is wall time,
// which includes waiting for the core on a shared machine).
#include <benchmark/benchmark.h>
// jpeglib.h uses size_t and FILE without including their headers: keep this block before it.
#include <jpeglib.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "io/image.h"
#include "models/preprocess.h"

namespace {

using namespace recap;

// A photo-like 640x480 RGB JPEG: smooth gradients, edges and some texture, so the entropy
// decoder sees realistic coefficient counts.
std::vector<uint8_t> make_jpeg(int w, int h, int quality) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  uint32_t noise = 12345;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      noise = noise * 1664525u + 1013904223u;
      const int n = static_cast<int>((noise >> 24) & 15) - 8;
      const bool disc = (x - w / 2) * (x - w / 2) + (y - h / 3) * (y - h / 3) < (h / 4) * (h / 4);
      uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(std::clamp(x * 255 / w + n, 0, 255));
      p[1] = static_cast<uint8_t>(std::clamp(disc ? 200 + n : y * 255 / h + n, 0, 255));
      p[2] = static_cast<uint8_t>(std::clamp(((x / 40 + y / 40) % 2) ? 60 + n : 180 + n, 0, 255));
    }
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = &rgb[static_cast<size_t>(cinfo.next_scanline) * w * 3];
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buf, buf + size);
  std::free(buf);
  return out;
}

const std::vector<uint8_t>& jpeg_640x480() {
  static const std::vector<uint8_t> jpeg = make_jpeg(640, 480, 90);
  return jpeg;
}

models::PreprocessConfig clip336() {
  models::VisionConfig vc;
  vc.image_size = 336;
  return models::from_vision_config(vc);
}

// The whole per-image path: JPEG bytes -> pixel_values [3,336,336].
void BM_DecodeAndPreprocess_640x480_to_336(benchmark::State& state) {
  const auto& jpeg = jpeg_640x480();
  const models::PreprocessConfig cfg = clip336();
  std::vector<float> pixel_values(3 * 336 * 336);
  for (auto _ : state) {
    const io::Image img = io::decode_image(jpeg);
    models::preprocess_llava_into(img, cfg, pixel_values.data());
    benchmark::DoNotOptimize(pixel_values.data());
  }
  state.counters["jpeg_bytes"] = static_cast<double>(jpeg.size());
}
BENCHMARK(BM_DecodeAndPreprocess_640x480_to_336)->Unit(benchmark::kMillisecond);

void BM_DecodeJpeg_640x480(benchmark::State& state) {
  const auto& jpeg = jpeg_640x480();
  for (auto _ : state) {
    const io::Image img = io::decode_image(jpeg);
    benchmark::DoNotOptimize(img.rgb.data());
  }
}
BENCHMARK(BM_DecodeJpeg_640x480)->Unit(benchmark::kMillisecond);

void BM_Preprocess_640x480_to_336(benchmark::State& state) {
  const io::Image img = io::decode_image(jpeg_640x480());
  const models::PreprocessConfig cfg = clip336();
  std::vector<float> pixel_values(3 * 336 * 336);
  for (auto _ : state) {
    models::preprocess_llava_into(img, cfg, pixel_values.data());
    benchmark::DoNotOptimize(pixel_values.data());
  }
}
BENCHMARK(BM_Preprocess_640x480_to_336)->Unit(benchmark::kMillisecond);

// A 16:9 HD frame: more than 40% of the padded canvas is background.
void BM_Preprocess_1280x720_to_336(benchmark::State& state) {
  const io::Image img = io::decode_image(make_jpeg(1280, 720, 90));
  const models::PreprocessConfig cfg = clip336();
  std::vector<float> pixel_values(3 * 336 * 336);
  for (auto _ : state) {
    models::preprocess_llava_into(img, cfg, pixel_values.data());
    benchmark::DoNotOptimize(pixel_values.data());
  }
}
BENCHMARK(BM_Preprocess_1280x720_to_336)->Unit(benchmark::kMillisecond);

void BM_Expand2Square_640x480(benchmark::State& state) {
  const io::Image img = io::decode_image(jpeg_640x480());
  for (auto _ : state) {
    const io::Image sq = models::expand2square(img, {122, 116, 104});
    benchmark::DoNotOptimize(sq.rgb.data());
  }
}
BENCHMARK(BM_Expand2Square_640x480)->Unit(benchmark::kMillisecond);

// Resize alone, square input side N -> 336 (640 = a padded 4:3 VGA photo, 1024 = larger).
void BM_ResizeBicubic_Square_to_336(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const io::Image src = io::Image::filled(n, n, 10, 20, 30);
  std::vector<uint8_t> dst(336 * 336 * 3);
  for (auto _ : state) {
    models::resize_bicubic_pillow(src.rgb.data(), n, n, 3, dst.data(), 336, 336);
    benchmark::DoNotOptimize(dst.data());
  }
}
BENCHMARK(BM_ResizeBicubic_Square_to_336)->Arg(224)->Arg(640)->Arg(1024)->Unit(benchmark::kMillisecond);

void BM_Normalize_336(benchmark::State& state) {
  const io::Image img = io::Image::filled(336, 336, 1, 2, 3);
  const models::PreprocessConfig cfg = clip336();
  std::vector<float> out(3 * 336 * 336);
  for (auto _ : state) {
    models::normalize_to_chw(img.rgb.data(), 336, 336, cfg.image_mean, cfg.image_std, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_Normalize_336)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
