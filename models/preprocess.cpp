// LLaVA pad + CLIP preprocessing, reproducing Pillow 9.4 Resample.c and transformers 4.44
// bit for bit. Comments name the reference behaviour each step reproduces.
#include "models/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace recap::models {

PreprocessConfig from_vision_config(const VisionConfig& vision) {
  PreprocessConfig cfg;
  const int image_size = static_cast<int>(vision.image_size);
  cfg.resize_shortest_edge =
      vision.resize_shortest_edge > 0 ? static_cast<int>(vision.resize_shortest_edge) : image_size;
  cfg.crop_size = vision.crop_size > 0 ? static_cast<int>(vision.crop_size) : image_size;
  cfg.image_mean = vision.image_mean;
  cfg.image_std = vision.image_std;
  cfg.pad_background = vision.pad_background;
  cfg.pad_to_square = true;
  return cfg;
}

namespace {

void require_image(const io::Image& image, const char* what) {
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != image.num_pixels() * 3)
    throw std::invalid_argument(std::string(what) + ": empty or inconsistent image " +
                                std::to_string(image.width) + "x" + std::to_string(image.height) + " with " +
                                std::to_string(image.rgb.size()) + " bytes");
}

io::Image blank_like(const io::Image& like, int w, int h) {
  io::Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  out.source = like.source;
  return out;
}

// Pillow's bicubic_filter (Keys, a = -0.5), with its exact operation order.
double pillow_bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// clip8: arithmetic shift by PRECISION_BITS, then clamp (Pillow uses a lookup table over
// -640..639, equivalent for every reachable sum).
inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPillowPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

constexpr int32_t kRoundHalf = 1 << (kPillowPrecisionBits - 1);

// ImagingResampleHorizontal_8bpc for `rows` rows starting at src row `first_row`.
template <int C>
void horizontal_pass(const uint8_t* src, int src_w, int first_row, int rows, const BicubicAxis& ax,
                     uint8_t* dst) {
  const int out_w = ax.out_size, ks = ax.ksize;
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* in = src + static_cast<size_t>(first_row + yy) * src_w * C;
    uint8_t* out = dst + static_cast<size_t>(yy) * out_w * C;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = ax.bounds[2 * xx], n = ax.bounds[2 * xx + 1];
      const int32_t* k = ax.weights.data() + static_cast<size_t>(xx) * ks;
      const uint8_t* p = in + static_cast<size_t>(xmin) * C;
      int32_t acc[C];
      for (int c = 0; c < C; ++c) acc[c] = kRoundHalf;
      for (int x = 0; x < n; ++x)
        for (int c = 0; c < C; ++c) acc[c] += static_cast<int32_t>(p[x * C + c]) * k[x];
      for (int c = 0; c < C; ++c) out[xx * C + c] = clip8(acc[c]);
    }
  }
}

// ImagingResampleVertical_8bpc; src rows are indexed relative to the bounds (already shifted
// by the first row the horizontal pass produced). Sums row by row over contiguous bytes so the
// compiler vectorises it; integer addition makes the order irrelevant to the result.
void vertical_pass(const uint8_t* src, int row_elems, const BicubicAxis& ax, uint8_t* dst, int bounds_shift) {
  std::vector<int32_t> acc(static_cast<size_t>(row_elems));
  for (int yy = 0; yy < ax.out_size; ++yy) {
    const int ymin = ax.bounds[2 * yy] - bounds_shift, n = ax.bounds[2 * yy + 1];
    const int32_t* k = ax.weights.data() + static_cast<size_t>(yy) * ax.ksize;
    std::fill(acc.begin(), acc.end(), kRoundHalf);
    int32_t* a = acc.data();
    for (int y = 0; y < n; ++y) {
      const uint8_t* row = src + static_cast<size_t>(ymin + y) * row_elems;
      const int32_t w = k[y];
      for (int i = 0; i < row_elems; ++i) a[i] += static_cast<int32_t>(row[i]) * w;
    }
    uint8_t* out = dst + static_cast<size_t>(yy) * row_elems;
    for (int i = 0; i < row_elems; ++i) out[i] = clip8(a[i]);
  }
}

template <int C>
void resize_impl(const uint8_t* src, int w, int h, uint8_t* dst, int new_w, int new_h) {
  const bool need_horizontal = new_w != w;
  const bool need_vertical = new_h != h;
  if (!need_horizontal && !need_vertical) {
    std::memcpy(dst, src, static_cast<size_t>(w) * h * C);
    return;
  }
  if (!need_horizontal) {
    vertical_pass(src, w * C, *bicubic_axis(h, new_h), dst, 0);
    return;
  }
  const auto horiz = bicubic_axis(w, new_w);
  if (!need_vertical) {
    horizontal_pass<C>(src, w, 0, h, *horiz, dst);
    return;
  }
  const auto vert = bicubic_axis(h, new_h);
  // Rows [ybox_first, ybox_last) of the source are all the vertical pass reads.
  const int ybox_first = vert->bounds[0];
  const int ybox_last = vert->bounds[2 * (new_h - 1)] + vert->bounds[2 * (new_h - 1) + 1];
  std::vector<uint8_t> temp(static_cast<size_t>(ybox_last - ybox_first) * new_w * C);
  horizontal_pass<C>(src, w, ybox_first, ybox_last - ybox_first, *horiz, temp.data());
  vertical_pass(temp.data(), new_w * C, *vert, dst, ybox_first);
}

}  // namespace

BicubicAxis compute_bicubic_axis(int in_size, int out_size) {
  if (in_size <= 0 || out_size <= 0)
    throw std::invalid_argument("bicubic resize: sizes must be positive (in " + std::to_string(in_size) +
                                ", out " + std::to_string(out_size) + ")");
  // precompute_coeffs with box = (0, in_size): scale = in/out, antialiasing support when
  // downscaling.
  constexpr double kSupport = 2.0;  // BICUBIC filter support
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kSupport * filterscale;
  BicubicAxis ax;
  ax.in_size = in_size;
  ax.out_size = out_size;
  ax.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  ax.bounds.resize(static_cast<size_t>(out_size) * 2);
  ax.weights.assign(static_cast<size_t>(out_size) * ax.ksize, 0);
  std::vector<double> k(static_cast<size_t>(ax.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation toward zero, as in C
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = pillow_bicubic((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    int32_t* out = ax.weights.data() + static_cast<size_t>(xx) * ax.ksize;
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      // normalize_coeffs_8bpc: round half away from zero.
      out[x] = w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPillowPrecisionBits))
                     : static_cast<int32_t>(0.5 + w * (1 << kPillowPrecisionBits));
    }
    ax.bounds[2 * xx] = xmin;
    ax.bounds[2 * xx + 1] = xmax;
  }
  return ax;
}

std::shared_ptr<const BicubicAxis> bicubic_axis(int in_size, int out_size) {
  // A tiny per-thread cache: the output size is fixed and square inputs share one axis for
  // both passes, so a handful of entries catches the repeats.
  constexpr size_t kEntries = 8;
  thread_local std::vector<std::shared_ptr<const BicubicAxis>> cache;
  thread_local size_t next_slot = 0;
  for (const auto& e : cache)
    if (e->in_size == in_size && e->out_size == out_size) return e;
  auto fresh = std::make_shared<const BicubicAxis>(compute_bicubic_axis(in_size, out_size));
  if (cache.size() < kEntries) {
    cache.push_back(fresh);
  } else {
    cache[next_slot] = fresh;
    next_slot = (next_slot + 1) % kEntries;
  }
  return fresh;
}

void resize_bicubic_pillow(const uint8_t* src, int w, int h, int channels, uint8_t* dst, int new_w,
                           int new_h) {
  if (w <= 0 || h <= 0 || new_w <= 0 || new_h <= 0)
    throw std::invalid_argument("resize_bicubic_pillow: sizes must be positive (" + std::to_string(w) + "x" +
                                std::to_string(h) + " -> " + std::to_string(new_w) + "x" +
                                std::to_string(new_h) + ")");
  switch (channels) {
    case 1:
      return resize_impl<1>(src, w, h, dst, new_w, new_h);
    case 3:
      return resize_impl<3>(src, w, h, dst, new_w, new_h);
    case 4:
      return resize_impl<4>(src, w, h, dst, new_w, new_h);
    default:
      throw std::invalid_argument("resize_bicubic_pillow: channels must be 1, 3 or 4, got " +
                                  std::to_string(channels));
  }
}

io::Image resize_bicubic_pillow(const io::Image& image, int new_w, int new_h) {
  require_image(image, "resize_bicubic_pillow");
  io::Image out = blank_like(image, new_w, new_h);
  resize_bicubic_pillow(image.rgb.data(), image.width, image.height, 3, out.rgb.data(), new_w, new_h);
  return out;
}

io::Image resize_padded_square_bicubic_pillow(const io::Image& image, std::array<uint8_t, 3> background,
                                              int new_side) {
  require_image(image, "resize_padded_square_bicubic_pillow");
  if (new_side <= 0)
    throw std::invalid_argument("resize_padded_square_bicubic_pillow: size must be positive");
  const int w = image.width, h = image.height, side = std::max(w, h);
  if (w == h || side == new_side)
    return resize_bicubic_pillow(expand2square(image, background), new_side, new_side);
  const int x0 = w > h ? 0 : (h - w) / 2;  // expand2square placement
  const int y0 = w > h ? (w - h) / 2 : 0;
  const auto axis = bicubic_axis(side, new_side);  // both passes: the canvas is square
  const int ybox_first = axis->bounds[0];
  const int ybox_last = axis->bounds[2 * (new_side - 1)] + axis->bounds[2 * (new_side - 1) + 1];
  const size_t out_row = static_cast<size_t>(new_side) * 3;

  // One canvas row of pure background, and its horizontal-pass result (shared by every
  // background row: same input, same output).
  std::vector<uint8_t> canvas_row(static_cast<size_t>(side) * 3);
  for (int x = 0; x < side; ++x) std::memcpy(&canvas_row[static_cast<size_t>(x) * 3], background.data(), 3);
  std::vector<uint8_t> background_result(out_row);
  horizontal_pass<3>(canvas_row.data(), side, 0, 1, *axis, background_result.data());

  std::vector<uint8_t> temp(static_cast<size_t>(ybox_last - ybox_first) * out_row);
  for (int r = ybox_first; r < ybox_last; ++r) {
    uint8_t* out = temp.data() + static_cast<size_t>(r - ybox_first) * out_row;
    if (r < y0 || r >= y0 + h) {
      std::memcpy(out, background_result.data(), out_row);
    } else if (w == side) {
      horizontal_pass<3>(image.row(r - y0), side, 0, 1, *axis, out);
    } else {
      // Tall image: the canvas row is background | image row | background.
      std::memcpy(&canvas_row[static_cast<size_t>(x0) * 3], image.row(r - y0), static_cast<size_t>(w) * 3);
      horizontal_pass<3>(canvas_row.data(), side, 0, 1, *axis, out);
    }
  }
  io::Image result = blank_like(image, new_side, new_side);
  vertical_pass(temp.data(), static_cast<int>(out_row), *axis, result.rgb.data(), ybox_first);
  return result;
}

io::Image expand2square(const io::Image& image, std::array<uint8_t, 3> background) {
  require_image(image, "expand2square");
  const int w = image.width, h = image.height;
  if (w == h) return image;
  const int side = std::max(w, h);
  io::Image out = io::Image::filled(side, side, background[0], background[1], background[2]);
  out.source = image.source;
  const int x0 = w > h ? 0 : (h - w) / 2;
  const int y0 = w > h ? (w - h) / 2 : 0;
  for (int y = 0; y < h; ++y)
    std::memcpy(out.row(y0 + y) + static_cast<size_t>(x0) * 3, image.row(y), static_cast<size_t>(w) * 3);
  return out;
}

std::array<int, 2> shortest_edge_output_size(int width, int height, int shortest_edge) {
  if (width <= 0 || height <= 0 || shortest_edge <= 0)
    throw std::invalid_argument("shortest_edge_output_size: sizes must be positive");
  const bool portrait = width <= height;
  const int64_t short_side = portrait ? width : height, long_side = portrait ? height : width;
  // Python: int(size * long / short) -- true division in double, then truncation.
  const int new_long =
      static_cast<int>(static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side));
  return portrait ? std::array<int, 2>{shortest_edge, new_long} : std::array<int, 2>{new_long, shortest_edge};
}

io::Image center_crop(const io::Image& image, int crop_w, int crop_h) {
  require_image(image, "center_crop");
  if (crop_w <= 0 || crop_h <= 0) throw std::invalid_argument("center_crop: crop size must be positive");
  const int w = image.width, h = image.height;
  if (crop_w <= w && crop_h <= h) {
    if (crop_w == w && crop_h == h) return image;
    const int top = (h - crop_h) / 2, left = (w - crop_w) / 2;  // non-negative: floor == trunc
    io::Image out = blank_like(image, crop_w, crop_h);
    for (int y = 0; y < crop_h; ++y)
      std::memcpy(out.row(y), image.row(top + y) + static_cast<size_t>(left) * 3,
                  static_cast<size_t>(crop_w) * 3);
    return out;
  }
  // transformers pads a too-small image with zeros into max(crop, size) per axis, the image at
  // ceil((new - orig) / 2), then crops [floor((orig - crop) / 2) + pad, + crop) clipped.
  const int new_h = std::max(crop_h, h), new_w = std::max(crop_w, w);
  const int top_pad = (new_h - h + 1) / 2, left_pad = (new_w - w + 1) / 2;
  auto floor_div2 = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  const int top = floor_div2(h - crop_h) + top_pad, left = floor_div2(w - crop_w) + left_pad;
  io::Image padded = blank_like(image, new_w, new_h);
  std::fill(padded.rgb.begin(), padded.rgb.end(), 0);
  for (int y = 0; y < h; ++y)
    std::memcpy(padded.row(top_pad + y) + static_cast<size_t>(left_pad) * 3, image.row(y),
                static_cast<size_t>(w) * 3);
  const int y0 = std::max(0, top), y1 = std::min(new_h, top + crop_h);
  const int x0 = std::max(0, left), x1 = std::min(new_w, left + crop_w);
  io::Image out = blank_like(image, x1 - x0, y1 - y0);
  for (int y = y0; y < y1; ++y)
    std::memcpy(out.row(y - y0), padded.row(y) + static_cast<size_t>(x0) * 3,
                static_cast<size_t>(x1 - x0) * 3);
  return out;
}

void normalize_to_chw(const uint8_t* rgb, int w, int h, const std::array<float, 3>& mean,
                      const std::array<float, 3>& std, float* out_chw) {
  // Every uint8 value maps to one float per channel: build the 3x256 table once.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      // transformers rescale: image.astype(float64) * (1/255), then .astype(float32);
      // normalize: (image - mean) / std with float32 arrays.
      const float x = static_cast<float>(static_cast<double>(v) * (1.0 / 255.0));
      table[c][v] = (x - mean[c]) / std[c];
    }
  }
  const size_t plane = static_cast<size_t>(w) * h;
  float* r = out_chw;
  float* g = out_chw + plane;
  float* b = out_chw + 2 * plane;
  for (size_t i = 0; i < plane; ++i) {
    r[i] = table[0][rgb[3 * i + 0]];
    g[i] = table[1][rgb[3 * i + 1]];
    b[i] = table[2][rgb[3 * i + 2]];
  }
}

void preprocess_llava_into(const io::Image& image, const PreprocessConfig& cfg, float* out_chw,
                           PreprocessStages* stages) {
  require_image(image, "preprocess_llava");
  if (cfg.resize_shortest_edge <= 0 || cfg.crop_size <= 0)
    throw std::invalid_argument("preprocess_llava: resize_shortest_edge and crop_size must be positive");
  // Each stage is materialised only when it changes the image. Padding followed by a resize
  // goes through the fused path, which never builds the padded canvas.
  const bool pad = cfg.pad_to_square && image.width != image.height;
  const int side = std::max(image.width, image.height);
  const int square_w = pad ? side : image.width, square_h = pad ? side : image.height;
  const auto [rw, rh] = shortest_edge_output_size(square_w, square_h, cfg.resize_shortest_edge);
  const bool resize = rw != square_w || rh != square_h;
  io::Image square_storage, resized_storage;
  const io::Image* resized = &image;
  if (pad && resize) {
    resized_storage = resize_padded_square_bicubic_pillow(image, cfg.pad_background, rw);  // rw == rh
    resized = &resized_storage;
    if (stages) square_storage = expand2square(image, cfg.pad_background);
  } else if (pad) {
    square_storage = expand2square(image, cfg.pad_background);
    resized = &square_storage;
  } else if (resize) {
    resized_storage = resize_bicubic_pillow(image, rw, rh);
    resized = &resized_storage;
  }
  const io::Image* square = pad ? &square_storage : &image;
  io::Image cropped_storage;
  const io::Image* cropped = resized;
  if (resized->width != cfg.crop_size || resized->height != cfg.crop_size) {
    cropped_storage = center_crop(*resized, cfg.crop_size, cfg.crop_size);
    cropped = &cropped_storage;
  }
  normalize_to_chw(cropped->rgb.data(), cropped->width, cropped->height, cfg.image_mean, cfg.image_std,
                   out_chw);
  if (stages) {
    stages->square = *square;
    stages->resized = *cropped;
  }
}

std::vector<float> preprocess_llava(const io::Image& image, const PreprocessConfig& cfg,
                                    PreprocessStages* stages) {
  if (cfg.crop_size <= 0) throw std::invalid_argument("preprocess_llava: crop_size must be positive");
  std::vector<float> out(static_cast<size_t>(3) * cfg.crop_size * cfg.crop_size);
  preprocess_llava_into(image, cfg, out.data(), stages);
  return out;
}

}  // namespace recap::models
