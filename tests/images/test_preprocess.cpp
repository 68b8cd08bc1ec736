// models/preprocess steps on synthetic images. The bicubic resize is compared with a
// deliberately plain transcription of Pillow's algorithm (full-height horizontal pass,
// per-pixel vertical sums in Pillow's loop order, no caching, no pass skipping) over many
// random size pairs: it checks the optimised bookkeeping (row window, bound shifts, skipped
// passes, channel counts). The golden test (test_preprocess_golden.cpp) is what ties both to
// Pillow itself.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "models/preprocess.h"

using namespace recap;

namespace {

std::vector<uint8_t> random_pixels(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng() & 0xFF);
  return v;
}

io::Image random_image(int w, int h, uint32_t seed) {
  io::Image img;
  img.width = w;
  img.height = h;
  img.rgb = random_pixels(static_cast<size_t>(w) * h * 3, seed);
  return img;
}

// ---- Plain reference of Pillow's 8-bit BICUBIC resample --------------------------------------

double keys_cubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct PlainTaps {
  std::vector<int> first, count;
  std::vector<std::vector<int>> weight;
};

PlainTaps plain_taps(int in, int out) {
  PlainTaps t;
  const double scale = double(in) / out;
  const double fscale = std::max(scale, 1.0);
  const double support = 2.0 * fscale;
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(center - support + 0.5));
    const int hi = std::min(in, static_cast<int>(center + support + 0.5));
    std::vector<double> w;
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      w.push_back(keys_cubic((i - center + 0.5) * (1.0 / fscale)));
      sum += w.back();
    }
    std::vector<int> q;
    for (double v : w) {
      const double n = sum != 0.0 ? v / sum : v;
      q.push_back(static_cast<int>(n < 0 ? n * (1 << 22) - 0.5 : n * (1 << 22) + 0.5));
    }
    t.first.push_back(lo);
    t.count.push_back(hi - lo);
    t.weight.push_back(q);
  }
  return t;
}

uint8_t plain_clip(long long acc) {
  const long long v = acc >> 22;
  return static_cast<uint8_t>(std::clamp<long long>(v, 0, 255));
}

std::vector<uint8_t> plain_resize(const std::vector<uint8_t>& src, int w, int h, int C, int nw, int nh) {
  std::vector<uint8_t> mid = src;
  int mw = w;
  if (nw != w) {  // horizontal pass over every row
    const PlainTaps t = plain_taps(w, nw);
    mid.assign(static_cast<size_t>(nw) * h * C, 0);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < nw; ++x)
        for (int c = 0; c < C; ++c) {
          long long acc = 1 << 21;
          for (int k = 0; k < t.count[x]; ++k)
            acc += static_cast<long long>(src[(static_cast<size_t>(y) * w + t.first[x] + k) * C + c]) *
                   t.weight[x][k];
          mid[(static_cast<size_t>(y) * nw + x) * C + c] = plain_clip(acc);
        }
    mw = nw;
  }
  if (nh == h) return mid;
  const PlainTaps t = plain_taps(h, nh);
  std::vector<uint8_t> out(static_cast<size_t>(mw) * nh * C);
  for (int y = 0; y < nh; ++y)
    for (int x = 0; x < mw; ++x)
      for (int c = 0; c < C; ++c) {
        long long acc = 1 << 21;
        for (int k = 0; k < t.count[y]; ++k)
          acc += static_cast<long long>(mid[(static_cast<size_t>(t.first[y] + k) * mw + x) * C + c]) *
                 t.weight[y][k];
        out[(static_cast<size_t>(y) * mw + x) * C + c] = plain_clip(acc);
      }
  return out;
}

// ---- Resize ---------------------------------------------------------------------------------

TEST(ResizeBicubic, MatchesPlainReferenceOnRandomSizes) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> size(1, 90);
  for (int trial = 0; trial < 150; ++trial) {
    const int w = size(rng), h = size(rng), nw = size(rng), nh = size(rng);
    const int C = (trial % 3 == 0) ? 1 : (trial % 3 == 1 ? 3 : 4);
    SCOPED_TRACE(testing::Message() << w << "x" << h << " -> " << nw << "x" << nh << " C=" << C);
    const auto src = random_pixels(static_cast<size_t>(w) * h * C, trial);
    std::vector<uint8_t> got(static_cast<size_t>(nw) * nh * C);
    models::resize_bicubic_pillow(src.data(), w, h, C, got.data(), nw, nh);
    ASSERT_EQ(got, plain_resize(src, w, h, C, nw, nh));
  }
}

TEST(ResizeBicubic, MatchesPlainReferenceOnPipelineShapes) {
  // Real-sized cases: 4:3 photo padded to square and reduced to 336, large upscale, one axis only.
  const int cases[][4] = {{640, 640, 336, 336}, {200, 200, 56, 56},   {40, 40, 56, 56}, {1000, 30, 336, 336},
                          {336, 500, 336, 336}, {500, 336, 336, 336}, {7, 1, 336, 336}, {336, 336, 336, 336}};
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << c[0] << "x" << c[1] << " -> " << c[2] << "x" << c[3]);
    const auto src = random_pixels(static_cast<size_t>(c[0]) * c[1] * 3, c[0] + c[1]);
    std::vector<uint8_t> got(static_cast<size_t>(c[2]) * c[3] * 3);
    models::resize_bicubic_pillow(src.data(), c[0], c[1], 3, got.data(), c[2], c[3]);
    ASSERT_EQ(got, plain_resize(src, c[0], c[1], 3, c[2], c[3]));
  }
}

TEST(ResizeBicubic, FusedPadResizeEqualsExpandThenResize) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> size(1, 120);
  const std::array<uint8_t, 3> bg{122, 116, 104};
  for (int trial = 0; trial < 120; ++trial) {
    const int w = size(rng), h = size(rng), side = 1 + size(rng) % 80;
    SCOPED_TRACE(testing::Message() << w << "x" << h << " -> " << side);
    const io::Image img = random_image(w, h, 500 + trial);
    const io::Image fused = models::resize_padded_square_bicubic_pillow(img, bg, side);
    const io::Image plain = models::resize_bicubic_pillow(models::expand2square(img, bg), side, side);
    ASSERT_EQ(fused.width, side);
    ASSERT_EQ(fused.rgb, plain.rgb);
  }
  // Photo-like shapes: 4:3, 16:9, portrait, panorama.
  for (const auto& [w, h] :
       {std::pair{640, 480}, std::pair{1280, 720}, std::pair{480, 640}, std::pair{1000, 90}}) {
    const io::Image img = random_image(w, h, w + h);
    EXPECT_EQ(models::resize_padded_square_bicubic_pillow(img, bg, 336).rgb,
              models::resize_bicubic_pillow(models::expand2square(img, bg), 336, 336).rgb)
        << w << "x" << h;
  }
}

TEST(ResizeBicubic, ConstantImageStaysConstant) {
  for (int v : {0, 1, 122, 254, 255}) {
    io::Image img = io::Image::filled(97, 61, static_cast<uint8_t>(v), static_cast<uint8_t>(255 - v), 7);
    for (const auto& [nw, nh] : {std::pair{56, 56}, std::pair{300, 20}, std::pair{13, 200}}) {
      const io::Image out = models::resize_bicubic_pillow(img, nw, nh);
      for (size_t i = 0; i < out.num_pixels(); ++i) {
        ASSERT_EQ(out.rgb[3 * i], v);
        ASSERT_EQ(out.rgb[3 * i + 1], 255 - v);
        ASSERT_EQ(out.rgb[3 * i + 2], 7);
      }
    }
  }
}

TEST(ResizeBicubic, CoefficientsAreNormalisedFixedPoint) {
  for (const auto& [in, out] :
       {std::pair{640, 336}, std::pair{40, 56}, std::pair{200, 56}, std::pair{1, 336}}) {
    const models::BicubicAxis ax = models::compute_bicubic_axis(in, out);
    ASSERT_EQ(ax.out_size, out);
    for (int o = 0; o < out; ++o) {
      long long sum = 0;
      for (int k = 0; k < ax.bounds[2 * o + 1]; ++k) sum += ax.weights[static_cast<size_t>(o) * ax.ksize + k];
      EXPECT_NEAR(static_cast<double>(sum), double(1 << 22), 8.0) << in << "->" << out << " output " << o;
      EXPECT_GE(ax.bounds[2 * o], 0);
      EXPECT_LE(ax.bounds[2 * o] + ax.bounds[2 * o + 1], in);
    }
  }
  // The cache hands back the same table.
  EXPECT_EQ(models::bicubic_axis(640, 336).get(), models::bicubic_axis(640, 336).get());
}

TEST(ResizeBicubic, RejectsBadArguments) {
  uint8_t px[12] = {0};
  EXPECT_THROW(models::resize_bicubic_pillow(px, 2, 2, 2, px, 1, 1), std::invalid_argument);
  EXPECT_THROW(models::resize_bicubic_pillow(px, 0, 2, 3, px, 1, 1), std::invalid_argument);
  EXPECT_THROW(models::resize_bicubic_pillow(px, 2, 2, 3, px, 0, 1), std::invalid_argument);
  EXPECT_THROW(models::resize_bicubic_pillow(io::Image{}, 4, 4), std::invalid_argument);
}

// ---- expand2square, output size, crop, normalize ---------------------------------------------

TEST(Expand2Square, PadsWideAndTallAroundTheCentre) {
  const std::array<uint8_t, 3> bg{122, 116, 104};
  const io::Image wide = random_image(5, 2, 1);
  const io::Image sq = models::expand2square(wide, bg);
  ASSERT_EQ(sq.width, 5);
  ASSERT_EQ(sq.height, 5);
  // (5-2)//2 = 1 background row on top, 2 at the bottom.
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x)
      for (int c = 0; c < 3; ++c) {
        const uint8_t got = sq.rgb[(static_cast<size_t>(y) * 5 + x) * 3 + c];
        if (y == 1 || y == 2)
          ASSERT_EQ(got, wide.rgb[(static_cast<size_t>(y - 1) * 5 + x) * 3 + c]);
        else
          ASSERT_EQ(got, bg[c]);
      }
  const io::Image tall = random_image(3, 8, 2);
  const io::Image sq2 = models::expand2square(tall, bg);
  ASSERT_EQ(sq2.width, 8);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) {
      const bool inside = x >= 2 && x < 5;  // (8-3)//2 = 2
      const uint8_t got = sq2.rgb[(static_cast<size_t>(y) * 8 + x) * 3];
      ASSERT_EQ(got, inside ? tall.rgb[(static_cast<size_t>(y) * 3 + x - 2) * 3] : bg[0]) << x << "," << y;
    }
  const io::Image square = random_image(4, 4, 3);
  EXPECT_EQ(models::expand2square(square, bg).rgb, square.rgb);
}

TEST(ShortestEdge, FollowsTransformersRounding) {
  EXPECT_EQ(models::shortest_edge_output_size(200, 120, 56),
            (std::array<int, 2>{93, 56}));  // int(56*200/120)
  EXPECT_EQ(models::shortest_edge_output_size(90, 150, 56), (std::array<int, 2>{56, 93}));
  EXPECT_EQ(models::shortest_edge_output_size(640, 480, 336), (std::array<int, 2>{448, 336}));
  EXPECT_EQ(models::shortest_edge_output_size(336, 336, 336), (std::array<int, 2>{336, 336}));
  EXPECT_EQ(models::shortest_edge_output_size(1, 1000, 336), (std::array<int, 2>{336, 336000}));
}

TEST(CenterCrop, TakesTheMiddleWithFloorOffsets) {
  const io::Image img = random_image(7, 6, 5);
  const io::Image c = models::center_crop(img, 4, 3);
  ASSERT_EQ(c.width, 4);
  ASSERT_EQ(c.height, 3);
  // top = (6-3)//2 = 1, left = (7-4)//2 = 1
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x)
      for (int ch = 0; ch < 3; ++ch)
        ASSERT_EQ(c.rgb[(static_cast<size_t>(y) * 4 + x) * 3 + ch],
                  img.rgb[(static_cast<size_t>(y + 1) * 7 + x + 1) * 3 + ch]);
}

TEST(CenterCrop, PadsSmallImagesWithZerosLikeTransformers) {
  // 3 wide, 2 high into 6x5: padded to 6x5 with the image at top ceil(3/2)=2, left ceil(3/2)=2.
  const io::Image img = random_image(3, 2, 6);
  const io::Image c = models::center_crop(img, 6, 5);
  ASSERT_EQ(c.width, 6);
  ASSERT_EQ(c.height, 5);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x) {
      const bool inside = y >= 2 && y < 4 && x >= 2 && x < 5;
      const uint8_t got = c.rgb[(static_cast<size_t>(y) * 6 + x) * 3 + 1];
      ASSERT_EQ(got, inside ? img.rgb[(static_cast<size_t>(y - 2) * 3 + x - 2) * 3 + 1] : 0) << x << "," << y;
    }
}

TEST(Normalize, IsChannelMajorRescaleThenStandardise) {
  const uint8_t rgb[] = {0, 128, 255, 10, 20, 30};  // 2 pixels
  const std::array<float, 3> mean{0.5f, 0.25f, 0.125f}, std{0.5f, 0.25f, 2.0f};
  float out[6];
  models::normalize_to_chw(rgb, 2, 1, mean, std, out);
  auto expect = [&](uint8_t v, int c) { return (static_cast<float>(v * (1.0 / 255.0)) - mean[c]) / std[c]; };
  EXPECT_EQ(out[0], expect(0, 0));  // R plane
  EXPECT_EQ(out[1], expect(10, 0));
  EXPECT_EQ(out[2], expect(128, 1));  // G plane
  EXPECT_EQ(out[3], expect(20, 1));
  EXPECT_EQ(out[4], expect(255, 2));  // B plane
  EXPECT_EQ(out[5], expect(30, 2));
  EXPECT_FLOAT_EQ(out[0], -1.0f);
}

TEST(PreprocessLlava, PipelineShapesAndConfig) {
  models::VisionConfig vc;
  vc.image_size = 336;
  const models::PreprocessConfig cfg = models::from_vision_config(vc);
  EXPECT_EQ(cfg.resize_shortest_edge, 336);
  EXPECT_EQ(cfg.crop_size, 336);
  EXPECT_EQ(cfg.pad_background, (std::array<uint8_t, 3>{122, 116, 104}));
  vc.resize_shortest_edge = 300;
  vc.crop_size = 224;
  EXPECT_EQ(models::from_vision_config(vc).resize_shortest_edge, 300);
  EXPECT_EQ(models::from_vision_config(vc).crop_size, 224);

  const io::Image img = random_image(64, 48, 9);
  models::PreprocessStages st;
  const std::vector<float> pv = models::preprocess_llava(img, cfg, &st);
  EXPECT_EQ(pv.size(), 3u * 336 * 336);
  EXPECT_EQ(st.square.width, 64);
  EXPECT_EQ(st.square.height, 64);
  EXPECT_EQ(st.resized.width, 336);
  // The stages chain as documented, and the _into variant writes the same values.
  const io::Image resized =
      models::resize_bicubic_pillow(models::expand2square(img, cfg.pad_background), 336, 336);
  EXPECT_EQ(st.resized.rgb, resized.rgb);
  std::vector<float> again(pv.size());
  models::preprocess_llava_into(img, cfg, again.data());
  EXPECT_EQ(again, pv);

  // Without padding a wide image is resized on its short side, then center-cropped.
  models::PreprocessConfig nopad = cfg;
  nopad.pad_to_square = false;
  models::preprocess_llava(img, nopad, &st);
  EXPECT_EQ(st.square.width, 64);
  EXPECT_EQ(st.square.height, 48);
  EXPECT_EQ(st.resized.width, 336);
  EXPECT_EQ(st.resized.height, 336);
  EXPECT_EQ(st.resized.rgb, models::center_crop(models::resize_bicubic_pillow(img, 448, 336), 336, 336).rgb);

  EXPECT_THROW(models::preprocess_llava(io::Image{}, cfg), std::invalid_argument);
  models::PreprocessConfig bad = cfg;
  bad.crop_size = 0;
  EXPECT_THROW(models::preprocess_llava(img, bad), std::invalid_argument);
}

}  // namespace
