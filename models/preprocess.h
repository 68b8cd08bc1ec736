// LLaVA-1.5 image preprocessing (image_aspect_ratio="pad"), bit-exact with the reference:
//
//   Pillow RGB image --expand2square(bg)--> square --Pillow BICUBIC resize (shortest edge S)-->
//   --center crop--> uint8 [S,S,3] --x/255, (x-mean)/std in f32--> pixel_values f32 [3,S,S]
//
// The uint8 stages equal Pillow 9.4 / transformers 4.44 exactly (golden tensors
// image.{k}.square_u8, image.{k}.resized_u8); pixel_values is computed with the same f32
// operations as transformers' rescale + normalize. See docs/NUMERICS.md, "Preprocessing".
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "io/image.h"
#include "models/config.h"

namespace recap::models {

struct PreprocessConfig {
  bool pad_to_square = true;  // LLaVA's expand2square before the CLIP processor
  std::array<uint8_t, 3> pad_background{122, 116, 104};
  int resize_shortest_edge = 336;  // CLIPImageProcessor size["shortest_edge"]
  int crop_size = 336;             // square center crop; also the output side S
  std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std{0.26862954f, 0.26130258f, 0.27577711f};
};

// resize_shortest_edge and crop_size default to image_size when the VisionConfig leaves them 0.
PreprocessConfig from_vision_config(const VisionConfig& vision);

// The uint8 intermediates, for tracing/golden checks (image.{k}.square_u8, .resized_u8).
struct PreprocessStages {
  io::Image square;   // after expand2square (a copy of the input when already square)
  io::Image resized;  // after the bicubic resize and the center crop: [crop, crop, 3]
};

// Full pipeline. Returns pixel_values, f32 CHW [3, crop, crop] (channel planes R, G, B).
// Throws std::invalid_argument on an empty image or a non-positive size in cfg.
std::vector<float> preprocess_llava(const io::Image& image, const PreprocessConfig& cfg,
                                    PreprocessStages* stages = nullptr);
// Same, writing 3*crop*crop floats to out_chw (e.g. one slot of a batch tensor).
void preprocess_llava_into(const io::Image& image, const PreprocessConfig& cfg, float* out_chw,
                           PreprocessStages* stages = nullptr);

// ---- The individual steps ----------------------------------------------------------------

// LLaVA expand2square: w == h -> unchanged; w > h -> (w,w) canvas of `background` with the
// image at (0, (w-h)/2); h > w -> (h,h) canvas with the image at ((h-w)/2, 0).
io::Image expand2square(const io::Image& image, std::array<uint8_t, 3> background);

// transformers get_resize_output_image_size(default_to_square=False): the short side becomes
// shortest_edge, the long side int(shortest_edge * long / short). Returns {width, height}.
std::array<int, 2> shortest_edge_output_size(int width, int height, int shortest_edge);

// Pillow's Image.resize(BICUBIC, reducing_gap=None) on 8-bit data, bit-exact (Resample.c):
// separable; horizontal pass first into an 8-bit intermediate holding only the rows the
// vertical pass reads; Keys cubic a = -0.5 with support 2 * max(1, in/out) (antialiasing);
// weights normalised in double and rounded to 22-bit fixed point; each pass rounds with
// +2^21 and clamps to 0..255; a pass is skipped when its dimension does not change.
// src: [h, w, channels] uint8, dst: [new_h, new_w, channels]; channels is 1, 3 or 4.
void resize_bicubic_pillow(const uint8_t* src, int w, int h, int channels, uint8_t* dst, int new_w,
                           int new_h);
io::Image resize_bicubic_pillow(const io::Image& image, int new_w, int new_h);

// resize_bicubic_pillow(expand2square(image, background), new_side, new_side), bit-identical,
// without building the padded canvas: rows that are pure background share one computed
// horizontal-pass row. This is what preprocess_llava uses.
io::Image resize_padded_square_bicubic_pillow(const io::Image& image, std::array<uint8_t, 3> background,
                                              int new_side);

// transformers center_crop: top = (H - crop_h) // 2, left = (W - crop_w) // 2; an image
// smaller than the crop is first zero-padded (centered, ceil split) as transformers does.
io::Image center_crop(const io::Image& image, int crop_w, int crop_h);

// transformers rescale(1/255, computed in f64 then cast to f32) + normalize((x - mean) / std in
// f32), HWC uint8 [h, w, 3] -> CHW f32 [3, h, w].
void normalize_to_chw(const uint8_t* rgb, int w, int h, const std::array<float, 3>& mean,
                      const std::array<float, 3>& std, float* out_chw);

// Pillow's per-axis filter for one (in_size -> out_size) pair: output i reads inputs
// bounds[2i] .. bounds[2i] + bounds[2i+1] - 1 with weights[i*ksize ...] (22-bit fixed point).
struct BicubicAxis {
  int in_size = 0;
  int out_size = 0;
  int ksize = 0;
  std::vector<int> bounds;       // [out_size][2]: first input index, tap count
  std::vector<int32_t> weights;  // [out_size][ksize]
};
inline constexpr int kPillowPrecisionBits = 22;  // PRECISION_BITS = 32 - 8 - 2
BicubicAxis compute_bicubic_axis(int in_size, int out_size);
// Cached per thread (a few recent size pairs), since the same pairs recur for every image.
std::shared_ptr<const BicubicAxis> bicubic_axis(int in_size, int out_size);

}  // namespace recap::models
