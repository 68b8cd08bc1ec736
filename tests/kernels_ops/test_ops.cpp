// Row-wise and element-wise ops (kernels/ops.h): every dispatched ISA against the scalar
// reference on odd sizes with junk-filled padding, with error bounds derived in
// docs/NUMERICS.md ("Ops and attention"); RoPE against the direct formula; the RoPE table
// against double precision; argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/isa.h"
#include "kernels/ops.h"
#include "ops_test_util.h"

namespace recap::kernels {
namespace {

using test::is_junk;
using test::IsaGuard;
using test::isas_to_test;
using test::junk;
using test::kU;
using test::random_rows;
using test::random_vec;

const std::vector<int64_t> kDims = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 63, 100, 4097};
const std::vector<int64_t> kRows = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};

// Rows count tried for a given dim: all of 1..17 for small dims, fewer for the big ones.
std::vector<int64_t> rows_for(int64_t dim) {
  if (dim <= 100) return kRows;
  return {1, 2, 7, 17};
}

void expect_padding_untouched(const std::vector<float>& m, int64_t rows, int64_t dim, int64_t ld,
                              const char* what) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = dim; i < ld; ++i)
      ASSERT_TRUE(is_junk(m[size_t(r * ld + i)]))
          << what << ": padding overwritten at row " << r << " col " << i;
}

TEST(KernelsOps, RmsnormMatchesReference) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (int64_t dim : kDims)
      for (int64_t rows : rows_for(dim)) {
        const int64_t ld_x = dim + 3, ld_y = dim + 5;
        const auto x = random_rows(rows, dim, ld_x, uint32_t(dim * 131 + rows), -3.0f, 3.0f);
        const auto w = random_vec(size_t(dim), uint32_t(dim), 0.5f, 1.5f);
        std::vector<float> y(size_t(rows * ld_y), junk()), y_ref(size_t(rows * ld_y), junk());
        ref::rmsnorm(x.data(), ld_x, w.data(), y_ref.data(), ld_y, rows, dim, 1e-5f);
        rmsnorm(x.data(), ld_x, w.data(), y.data(), ld_y, rows, dim, 1e-5f);
        expect_padding_untouched(y, rows, dim, ld_y, "rmsnorm");
        // mean(x^2) summed in a different order: relative error <= dim*u (f32 partial sums)
        // + u (ref's rounding); rsqrt halves it; two rounded products add 2u per side.
        const double rel = (0.5 * double(dim) + 8.0) * kU;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t i = 0; i < dim; ++i) {
            const double a = y[size_t(r * ld_y + i)], b = y_ref[size_t(r * ld_y + i)];
            ASSERT_NEAR(a, b, rel * std::fabs(b) + 1e-30)
                << isa_name(isa) << " dim=" << dim << " rows=" << rows << " r=" << r << " i=" << i;
          }
      }
  }
}

TEST(KernelsOps, RmsnormInPlace) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    const int64_t rows = 5, dim = 37;
    auto x = random_rows(rows, dim, dim, 7);
    const auto w = random_vec(size_t(dim), 8);
    std::vector<float> y(x.size());
    rmsnorm(x.data(), dim, w.data(), y.data(), dim, rows, dim, 1e-6f);
    rmsnorm(x.data(), dim, w.data(), x.data(), dim, rows, dim, 1e-6f);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], y[i]) << isa_name(isa) << " i=" << i;
  }
}

TEST(KernelsOps, LayernormMatchesReference) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (int64_t dim : kDims)
      for (int64_t rows : rows_for(dim)) {
        const int64_t ld_x = dim + 2, ld_y = dim + 7;
        // An offset mean makes the variance pass matter (cancellation).
        const auto x = random_rows(rows, dim, ld_x, uint32_t(dim * 17 + rows), 1.0f, 3.0f);
        const auto w = random_vec(size_t(dim), uint32_t(dim + 1), -1.5f, 1.5f);
        const auto b = random_vec(size_t(dim), uint32_t(dim + 2), -0.5f, 0.5f);
        std::vector<float> y(size_t(rows * ld_y), junk()), y_ref(size_t(rows * ld_y), junk());
        ref::layernorm(x.data(), ld_x, w.data(), b.data(), y_ref.data(), ld_y, rows, dim, 1e-5f);
        layernorm(x.data(), ld_x, w.data(), b.data(), y.data(), ld_y, rows, dim, 1e-5f);
        expect_padding_untouched(y, rows, dim, ld_y, "layernorm");
        for (int64_t r = 0; r < rows; ++r) {
          const float* xr = x.data() + r * ld_x;
          double mean = 0, var = 0, mean_abs = 0;
          for (int64_t i = 0; i < dim; ++i) mean += xr[i], mean_abs += std::fabs(xr[i]);
          mean /= double(dim);
          mean_abs /= double(dim);
          for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
          var /= double(dim);
          const double rstd = 1.0 / std::sqrt(var + 1e-5);
          for (int64_t i = 0; i < dim; ++i) {
            // mean off by <= dim*u*mean|x|; (x - mean) * rstd off relatively by the variance's
            // dim*u (halved by the sqrt) plus a few roundings; w, b products/sums a few u.
            const double dev = std::fabs(xr[i] - mean);
            const double tol = (double(dim) + 8.0) * kU * (dev + mean_abs) * rstd * std::fabs(w[size_t(i)]) +
                               4.0 * kU * std::fabs(b[size_t(i)]) + 1e-30;
            const double a = y[size_t(r * ld_y + i)], e = y_ref[size_t(r * ld_y + i)];
            ASSERT_NEAR(a, e, tol) << isa_name(isa) << " dim=" << dim << " rows=" << rows << " r=" << r
                                   << " i=" << i;
          }
        }
      }
  }
}

TEST(KernelsOps, SoftmaxMatchesReference) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (int64_t n : kDims)
      for (int64_t rows : rows_for(n)) {
        const int64_t ld = n + 5;
        auto x = random_rows(rows, n, ld, uint32_t(n * 7 + rows), -12.0f, 12.0f);
        auto x_ref = x;
        ref::softmax(x_ref.data(), ld, rows, n);
        softmax(x.data(), ld, rows, n);
        expect_padding_untouched(x, rows, n, ld, "softmax");
        // exp within 4u relative (measured <= 2 ulp), the denominator's f32 sum within n*u,
        // the reciprocal/division 2u.
        const double rel = (double(n) + 10.0) * kU;
        for (int64_t r = 0; r < rows; ++r) {
          double total = 0;
          for (int64_t i = 0; i < n; ++i) {
            const double a = x[size_t(r * ld + i)], b = x_ref[size_t(r * ld + i)];
            ASSERT_NEAR(a, b, rel * b + 1e-44) << isa_name(isa) << " n=" << n << " r=" << r << " i=" << i;
            total += a;
          }
          ASSERT_NEAR(total, 1.0, rel * 2);
        }
      }
  }
}

TEST(KernelsOps, SoftmaxLargeAndMaskedInputs) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    // -inf entries (masked) get probability 0; huge values do not overflow (max-subtracted).
    std::vector<float> x = {-INFINITY, 1e30f,     1e30f, -INFINITY, 3.0f, -1e30f,    0.0f, -INFINITY, 1e30f,
                            5.0f,      -INFINITY, 2.0f,  1.0f,      0.5f, -INFINITY, 7.0f, 1e30f};
    softmax(x.data(), int64_t(x.size()), 1, int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const float expect = (i == 1 || i == 2 || i == 8 || i == 16) ? 0.25f : 0.0f;
      ASSERT_NEAR(x[i], expect, 1e-7) << isa_name(isa) << " i=" << i;
    }
  }
}

// Inputs for the element-wise activations: odd lengths plus a dense sweep with the special
// values (+-0, denormals, huge, +-inf are checked separately below).
std::vector<float> activation_inputs() {
  std::vector<float> x;
  for (int i = -200000; i <= 200000; ++i) x.push_back(float(i) * 1e-4f);  // [-20, 20] step 1e-4
  for (float v : {1e-30f, -1e-30f, 1e-40f, -1e-40f, 0.0f, -0.0f, 50.0f, -50.0f, 100.0f, -100.0f, 1e10f,
                  -1e10f, 3e38f, -3e38f})
    x.push_back(v);
  return x;
}

// Runs a dispatched element-wise op and its reference over `inputs`; returns the max error
// relative to max(|ref|, floor) (or to max(|x|, floor) when relative_to_input) and checks the
// guard element after the array.
template <class Op, class RefOp>
double max_rel_error(Op op, RefOp ref_op, const std::vector<float>& inputs, double floor,
                     bool relative_to_input = false) {
  std::vector<float> y = inputs, y_ref = inputs;
  y.push_back(junk());
  op(y.data(), int64_t(inputs.size()));
  ref_op(y_ref.data(), int64_t(inputs.size()));
  EXPECT_TRUE(is_junk(y.back())) << "wrote past the end";
  double worst = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (std::isnan(y_ref[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << "x=" << inputs[i];
      continue;
    }
    const double scale = relative_to_input ? std::fabs(double(inputs[i])) : std::fabs(double(y_ref[i]));
    const double err = std::fabs(double(y[i]) - double(y_ref[i])) / std::max(scale, floor);
    worst = std::max(worst, err);
  }
  return worst;
}

// Relative bounds for the vector activations (docs/NUMERICS.md): exp is 1-2 ulp, the erf
// fits < 3e-7 relative in f32; a few roundings around them. The floor keeps denormal
// outputs (|y| < 1e-37), where relative error is meaningless, on an absolute scale.
constexpr double kActivationFloor = 1e-37;
// GELU is compared relative to |x|, not |gelu(x)|: the reference (like PyTorch) forms
// 1 + erf(z) in f32, which cancels for x < 0 (it is exactly 0 below x ~ -5.7), so the
// reference itself is only accurate to ~u |x| there; the vector code computes erfc directly.
constexpr double kGeluRelBound = 4e-7;
constexpr double kSigmoidRelBound = 12 * kU;

TEST(KernelsOps, GeluErfMatchesReference) {
  IsaGuard guard;
  const auto inputs = activation_inputs();
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    const double worst = max_rel_error(gelu_erf, ref::gelu_erf, inputs, kActivationFloor, true);
    std::printf("[measure] gelu_erf %s max |error|/|x| %.3g\n", isa_name(isa), worst);
    EXPECT_LE(worst, kGeluRelBound) << isa_name(isa);
    for (int64_t n : kDims) {  // tails
      auto x = random_vec(size_t(n), uint32_t(n), -6.0f, 6.0f);
      x.push_back(junk());
      auto x_ref = x;
      gelu_erf(x.data(), n);
      ref::gelu_erf(x_ref.data(), n);
      ASSERT_TRUE(is_junk(x.back()));
      const auto x_in = random_vec(size_t(n), uint32_t(n), -6.0f, 6.0f);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(x[size_t(i)], x_ref[size_t(i)], kGeluRelBound * std::fabs(x_in[size_t(i)]) + 1e-37);
    }
  }
}

TEST(KernelsOps, QuickGeluMatchesReference) {
  IsaGuard guard;
  const auto inputs = activation_inputs();
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    const double worst = max_rel_error(quick_gelu, ref::quick_gelu, inputs, kActivationFloor);
    std::printf("[measure] quick_gelu %s max rel error %.3g\n", isa_name(isa), worst);
    EXPECT_LE(worst, kSigmoidRelBound) << isa_name(isa);
  }
}

TEST(KernelsOps, SiluMulMatchesReference) {
  IsaGuard guard;
  const auto inputs = activation_inputs();
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    // Element-wise accuracy over the sweep (up = 1 makes it silu alone).
    const int64_t n = int64_t(inputs.size());
    std::vector<float> ones(inputs.size(), 1.0f), y(inputs.size()), y_ref(inputs.size());
    silu_mul(inputs.data(), n, ones.data(), n, y.data(), n, 1, n);
    ref::silu_mul(inputs.data(), n, ones.data(), n, y_ref.data(), n, 1, n);
    double worst = 0;
    for (size_t i = 0; i < inputs.size(); ++i)
      worst = std::max(worst, std::fabs(double(y[i]) - y_ref[i]) /
                                  std::max(std::fabs(double(y_ref[i])), kActivationFloor));
    std::printf("[measure] silu %s max rel error %.3g\n", isa_name(isa), worst);
    EXPECT_LE(worst, kSigmoidRelBound) << isa_name(isa);
    // Strided rows with junk padding.
    for (int64_t dim : kDims)
      for (int64_t rows : rows_for(dim)) {
        const int64_t ldg = dim + 1, ldu = dim + 4, ldo = dim + 2;
        const auto g = random_rows(rows, dim, ldg, uint32_t(dim + rows), -8.0f, 8.0f);
        const auto u = random_rows(rows, dim, ldu, uint32_t(dim * rows + 3), -2.0f, 2.0f);
        std::vector<float> o(size_t(rows * ldo), junk()), o_ref(size_t(rows * ldo), junk());
        silu_mul(g.data(), ldg, u.data(), ldu, o.data(), ldo, rows, dim);
        ref::silu_mul(g.data(), ldg, u.data(), ldu, o_ref.data(), ldo, rows, dim);
        expect_padding_untouched(o, rows, dim, ldo, "silu_mul");
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t i = 0; i < dim; ++i) {
            const double b = o_ref[size_t(r * ldo + i)];
            ASSERT_NEAR(o[size_t(r * ldo + i)], b, (kSigmoidRelBound + 2 * kU) * std::fabs(b) + 1e-37)
                << isa_name(isa) << " dim=" << dim << " rows=" << rows;
          }
      }
  }
}

TEST(KernelsOps, ActivationsSpecialValues) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    std::vector<float> x = {INFINITY, -INFINITY, NAN, 0.0f, -0.0f};
    auto g = x;
    gelu_erf(g.data(), int64_t(g.size()));
    EXPECT_EQ(g[0], INFINITY) << isa_name(isa);
    EXPECT_TRUE(std::isnan(g[2])) << isa_name(isa);  // NaN propagates
    EXPECT_EQ(g[3], 0.0f);
    EXPECT_EQ(g[4], 0.0f);
    auto q = x;
    quick_gelu(q.data(), int64_t(q.size()));
    EXPECT_EQ(q[0], INFINITY) << isa_name(isa);
    EXPECT_TRUE(std::isnan(q[2])) << isa_name(isa);
    EXPECT_EQ(q[3], 0.0f);
    std::vector<float> ones(x.size(), 1.0f), s(x.size());
    silu_mul(x.data(), int64_t(x.size()), ones.data(), int64_t(x.size()), s.data(), int64_t(x.size()), 1,
             int64_t(x.size()));
    EXPECT_EQ(s[0], INFINITY) << isa_name(isa);
    EXPECT_TRUE(std::isnan(s[2])) << isa_name(isa);
    EXPECT_EQ(s[3], 0.0f);
  }
}

TEST(KernelsOps, AddInplaceExact) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (int64_t n : kDims) {
      auto y = random_vec(size_t(n), uint32_t(n));
      const auto x = random_vec(size_t(n), uint32_t(n + 100));
      auto expect = y;
      for (int64_t i = 0; i < n; ++i) expect[size_t(i)] += x[size_t(i)];
      y.push_back(junk());
      add_inplace(y.data(), x.data(), n);
      ASSERT_TRUE(is_junk(y.back()));
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(y[size_t(i)], expect[size_t(i)]) << isa_name(isa) << " n=" << n;
    }
  }
}

TEST(KernelsOps, RopeMatchesDirectFormulaExactly) {
  IsaGuard guard;
  for (Isa isa : isas_to_test()) {
    set_active_isa(isa);
    for (int64_t head_dim : {2, 4, 6, 10, 18, 34, 64, 128}) {
      const int64_t max_pos = 700, half = head_dim / 2;
      std::vector<float> cos_t(size_t(max_pos * half)), sin_t(size_t(max_pos * half));
      build_rope_table(max_pos, head_dim, 500000.0f, cos_t.data(), sin_t.data());
      for (int64_t n_heads : {1, 3, 8}) {
        const int64_t n_tokens = 13, ld = n_heads * head_dim + 5;
        std::vector<int32_t> pos(n_tokens);
        for (int64_t t = 0; t < n_tokens; ++t) pos[size_t(t)] = int32_t((t * 97 + 3) % max_pos);
        const auto x0 =
            random_rows(n_tokens, n_heads * head_dim, ld, uint32_t(head_dim * n_heads), -4.0f, 4.0f);
        auto x = x0;
        rope_apply(x.data(), ld, n_tokens, n_heads, head_dim, pos.data(), cos_t.data(), sin_t.data());
        expect_padding_untouched(x, n_tokens, n_heads * head_dim, ld, "rope");
        // Direct HF formula: out = x*cos + rotate_half(x)*sin with cos/sin duplicated halves.
        for (int64_t t = 0; t < n_tokens; ++t)
          for (int64_t h = 0; h < n_heads; ++h)
            for (int64_t d = 0; d < head_dim; ++d) {
              const float* xh = x0.data() + t * ld + h * head_dim;
              const int64_t i = d % half;
              const float c = cos_t[size_t(pos[size_t(t)] * half + i)],
                          s = sin_t[size_t(pos[size_t(t)] * half + i)];
              const float rot = d < half ? -xh[d + half] : xh[d - half];
              const float prod_x = xh[d] * c;
              const float prod_rot = rot * s;
              const float expect = prod_x + prod_rot;
              ASSERT_EQ(x[size_t(t * ld + h * head_dim + d)], expect)
                  << isa_name(isa) << " head_dim=" << head_dim << " t=" << t << " h=" << h << " d=" << d;
            }
      }
    }
  }
}

TEST(KernelsOps, RopeTableMatchesDoublePrecision) {
  for (int64_t head_dim : {2, 8, 64, 128}) {
    for (float theta : {10000.0f, 500000.0f}) {
      const int64_t max_pos = 8192, half = head_dim / 2;
      std::vector<float> cos_t(size_t(max_pos * half)), sin_t(size_t(max_pos * half));
      build_rope_table(max_pos, head_dim, theta, cos_t.data(), sin_t.data());
      for (int64_t i = 0; i < half; ++i) {
        // HF's f32 exponent and inv_freq, recomputed in double: f32 pow + f32 reciprocal are
        // each within an ulp, so inv_freq (= table angle at pos 1) is within 2 ulp.
        const float exponent = float(2 * i) / float(head_dim);
        const double inv_d = 1.0 / std::pow(double(theta), double(exponent));
        const double angle1 = std::atan2(double(sin_t[size_t(half + i)]), double(cos_t[size_t(half + i)]));
        ASSERT_NEAR(angle1, inv_d, 4 * kU * inv_d + 2e-7) << "i=" << i;
        for (int64_t p = 0; p < max_pos; p += 37) {
          // The table's angle is f32(p) * inv_freq_f32 rounded to f32: within (2 ulp + 0.5 ulp)
          // of p * inv_d; cos/sin of it within half an ulp (+ the angle error, |d cos| <= |d angle|).
          const double angle_d = double(p) * inv_d;
          const double tol = 6 * kU * angle_d + 2 * kU;
          ASSERT_NEAR(cos_t[size_t(p * half + i)], std::cos(angle_d), tol) << "p=" << p << " i=" << i;
          ASSERT_NEAR(sin_t[size_t(p * half + i)], std::sin(angle_d), tol) << "p=" << p << " i=" << i;
          // And exactly HF's f32 recipe: cos of the f32 angle (libm cosf/sinf: < 1 ulp).
          const float angle_f = float(p) * (1.0f / std::pow(theta, exponent));
          ASSERT_NEAR(cos_t[size_t(p * half + i)], std::cos(double(angle_f)), 2 * kU);
          ASSERT_NEAR(sin_t[size_t(p * half + i)], std::sin(double(angle_f)), 2 * kU);
        }
      }
    }
  }
}

TEST(KernelsOps, BadArgumentsThrow) {
  std::vector<float> x(64), w(64), y(64);
  std::vector<int32_t> pos(4, 0);
  EXPECT_THROW(rmsnorm(x.data(), 4, w.data(), y.data(), 8, 2, 8, 1e-5f), std::invalid_argument);  // ld < dim
  EXPECT_THROW(rmsnorm(x.data(), 8, w.data(), y.data(), 8, -1, 8, 1e-5f), std::invalid_argument);
  EXPECT_THROW(layernorm(x.data(), 8, w.data(), nullptr, y.data(), 8, 2, 8, 1e-5f), std::invalid_argument);
  EXPECT_THROW(softmax(x.data(), 3, 2, 4), std::invalid_argument);
  EXPECT_THROW(gelu_erf(x.data(), -1), std::invalid_argument);
  EXPECT_THROW(rope_apply(x.data(), 8, 1, 1, 7, pos.data(), w.data(), w.data()),
               std::invalid_argument);  // odd
  pos[0] = -3;
  EXPECT_THROW(rope_apply(x.data(), 8, 1, 1, 8, pos.data(), w.data(), w.data()), std::invalid_argument);
  EXPECT_THROW(build_rope_table(4, 5, 10000.0f, x.data(), y.data()), std::invalid_argument);
  EXPECT_THROW(build_rope_table(4, 8, -1.0f, x.data(), y.data()), std::invalid_argument);
  try {
    rmsnorm(x.data(), 4, w.data(), y.data(), 8, 2, 8, 1e-5f);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace recap::kernels
