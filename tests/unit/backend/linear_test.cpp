// CpuBackend::linear_forward / linear_backward against reference::linear_* (float64).
// Inputs are unit normals; the reference gets the exact f32 (or bf16-rounded) values, so the only
// error is f32 accumulation over K (or N for dx, M for dw) terms: about sqrt(K) * 2^-24 * |y|
// for |y| ~ sqrt(K). Tolerance: atol 2e-4 + rtol 2e-5, about 6x the worst error seen (K = 576),
// and far below the O(1) error of a wrong index or a missing term.
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 2e-4, kRtol = 2e-5;

struct LinearCase {
  int64_t M, K, N;
};

// Odd sizes. M = 1 takes the fixed-order gemv loops, 2 <= M <= 32 the skinny kernel
// (skinny_gemm.h: panels of 5 rows of w, rows of x in pairs; N = 17, 11, 7 leave panels of 2, 1
// and 2 rows, M = 3, 5, 7, 31 an odd row, K = 7, 13, 63, 130 a tail after the 8-wide steps), M > 32
// the tiled sgemm: M = 600 with N = 530 makes a 2 x 2 grid of output tiles, K = 576 two dx/dw
// column tiles, and N = 1100 three bf16 widening chunks along dx's reduction (512 + 512 + 76).
// M = 1 with K = 50 and 45 walks the bf16 row kernel's 32-, 16- and scalar steps (32 + 16 + 2,
// 32 + 13).
const LinearCase kCases[] = {{1, 1, 1},     {3, 7, 5},     {7, 63, 17},   {63, 130, 33},  {1, 50, 9},
                             {1, 45, 7},    {1, 576, 500}, {5, 576, 500}, {5, 130, 1100}, {600, 40, 530},
                             {2, 13, 11},   {31, 8, 7},    {32, 576, 96}, {33, 40, 7}};

void check_linear(const LinearCase& c, DType w_dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << c.M << " K=" << c.K << " N=" << c.N << " w " << dtype_name(w_dtype));
  CpuBackend be;
  Rng rng(seed);
  Tensor x = random_f32(rng, {c.M, c.K});
  Tensor w = random_f32(rng, {c.N, c.K}).to(w_dtype);
  const Vec xr = to_f64(x), wr = to_f64(w);  // bf16 w: the reference sees the rounded values

  // "=": y poisoned with NaN must be fully overwritten.
  Tensor y = nan_f32({c.M, c.N});
  be.linear_forward(y, x, w, /*accumulate=*/false);
  const Vec y_ref = ref::linear_forward(xr, wr, c.M, c.K, c.N);
  EXPECT_TRUE(all_close(y, y_ref, kAtol, kRtol)) << "forward";

  // "+=": accumulate onto a random y0.
  Tensor y_acc = random_f32(rng, {c.M, c.N});
  const Vec y0 = to_f64(y_acc);
  be.linear_forward(y_acc, x, w, /*accumulate=*/true);
  EXPECT_TRUE(all_close(y_acc, add_vec(y0, y_ref), kAtol, kRtol)) << "forward accumulate";

  // Backward "+=" onto random dx0, dw0.
  Tensor dy = random_f32(rng, {c.M, c.N});
  Tensor dx = random_f32(rng, {c.M, c.K});
  Tensor dw = random_f32(rng, {c.N, c.K});
  const Vec dx0 = to_f64(dx), dw0 = to_f64(dw);
  be.linear_backward(&dx, &dw, dy, x, w);
  const ref::LinearGrads g = ref::linear_backward(to_f64(dy), xr, wr, c.M, c.K, c.N);
  EXPECT_TRUE(all_close(dx, add_vec(dx0, g.dx), kAtol, kRtol)) << "dx";
  EXPECT_TRUE(all_close(dw, add_vec(dw0, g.dw), kAtol, kRtol)) << "dw";

  // Either gradient alone.
  Tensor dx_only = Tensor::zeros({c.M, c.K});
  be.linear_backward(&dx_only, nullptr, dy, x, w);
  EXPECT_TRUE(all_close(dx_only, g.dx, kAtol, kRtol)) << "dx only";
  Tensor dw_only = Tensor::zeros({c.N, c.K});
  be.linear_backward(nullptr, &dw_only, dy, x, w);
  EXPECT_TRUE(all_close(dw_only, g.dw, kAtol, kRtol)) << "dw only";
}

TEST(CpuLinear, F32MatchesReference) {
  uint64_t seed = 200;
  for (const LinearCase& c : kCases) check_linear(c, DType::f32, seed++);
}

TEST(CpuLinear, Bf16WeightsMatchReferenceOnRoundedValues) {
  uint64_t seed = 300;
  for (const LinearCase& c : kCases) check_linear(c, DType::bf16, seed++);
}

// linear_forward_group must give exactly what separate linear_forward calls give (it only changes
// how the work is scheduled), for decode (one loop over all rows) and prefill (a GEMM each).
TEST(CpuLinear, GroupEqualsSeparateCallsBitForBit) {
  CpuBackend be;
  Rng rng(11);
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t M : {1, 3, 40}) {  // gemv, skinny, tiled sgemm
      SCOPED_TRACE(testing::Message() << "M=" << M << " w " << dtype_name(dt));
      const int64_t K = 200;
      Tensor x = random_f32(rng, {M, K});
      const Tensor w0 = random_f32(rng, {96, K}).to(dt), w1 = random_f32(rng, {17, K}).to(dt),
                   w2 = random_f32(rng, {40, K}).to(dt);
      Tensor y0 = nan_f32({M, 96}), y1 = nan_f32({M, 17}), y2 = nan_f32({M, 40});
      Tensor* ys[] = {&y0, &y1, &y2};
      const Tensor* ws[] = {&w0, &w1, &w2};
      be.linear_forward_group(ys, x, ws);
      for (int i = 0; i < 3; ++i) {
        Tensor alone = nan_f32(ys[i]->shape());
        be.linear_forward(alone, x, *ws[i], false);
        EXPECT_EQ(0, std::memcmp(alone.f32(), ys[i]->f32(), size_t(alone.numel()) * sizeof(float))) << "output " << i;
      }
    }
  Tensor x = random_f32(rng, {1, 8}), w = random_f32(rng, {4, 8}), y = Tensor::zeros({1, 4}), bad = Tensor::zeros({1, 5});
  Tensor* two[] = {&y, &y};
  const Tensor* one[] = {&w};
  EXPECT_THROW(be.linear_forward_group(two, x, one), Error);  // 2 outputs for 1 weight
  Tensor* wrong[] = {&bad};
  EXPECT_THROW(be.linear_forward_group(wrong, x, one), Error);  // y [1, 5] for w [4, 8]
}

// Up to kSkinnyMaxRows rows, a row's result depends on that row alone: a decode token's logits
// are the same bits whatever else the serving engine batched with it.
TEST(CpuLinear, SkinnyRowsDoNotDependOnTheirBatch) {
  CpuBackend be;
  Rng rng(12);
  for (DType dt : {DType::f32, DType::bf16}) {
    const int64_t K = 203, N = 23, M = 32;
    Tensor x = random_f32(rng, {M, K});
    const Tensor w = random_f32(rng, {N, K}).to(dt);
    Tensor all = nan_f32({M, N});
    be.linear_forward(all, x, w, false);
    for (int64_t m0 : {0, 5, 30})
      for (int64_t rows : {int64_t(2), int64_t(3), M - m0}) {
        if (m0 + rows > M) continue;
        SCOPED_TRACE(testing::Message() << "rows " << m0 << ".." << m0 + rows << " w " << dtype_name(dt));
        Tensor part = nan_f32({rows, N});
        be.linear_forward(part, x.slice(m0, m0 + rows).clone(), w, false);
        EXPECT_EQ(0, std::memcmp(part.f32(), all.f32() + m0 * N, size_t(rows * N) * sizeof(float)));
      }
  }
}

TEST(CpuLinear, ZeroSizedDims) {
  CpuBackend be;
  // K = 0: y = x . w^T is an empty sum, so "=" writes zeros.
  Tensor y = nan_f32({2, 3});
  be.linear_forward(y, Tensor::zeros({2, 0}), Tensor::zeros({3, 0}), false);
  EXPECT_TRUE(all_close(y, Vec(6, 0.0), 0, 0));
  Tensor empty_y = Tensor::empty({0, 3});
  be.linear_forward(empty_y, Tensor::zeros({0, 4}), Tensor::zeros({3, 4}), false);
}

TEST(CpuLinear, BadShapesAndDtypesThrow) {
  CpuBackend be;
  Tensor x = Tensor::zeros({2, 4}), w = Tensor::zeros({3, 4}), y = Tensor::zeros({2, 3});
  Tensor w_t = Tensor::zeros({4, 3});
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y, x, w_t, false); }, ErrorCode::shape_mismatch,
                           "w: expected shape [N, 4] to match x [2, 4], got [4, 3]"));
  Tensor y_bad = Tensor::zeros({2, 4});
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y_bad, x, w, false); }, ErrorCode::shape_mismatch,
                           "y: expected shape [2, 3], got [2, 4]"));
  Tensor x3 = Tensor::zeros({1, 2, 4});
  EXPECT_TRUE(
      throws_error([&] { be.linear_forward(y, x3, w, false); }, ErrorCode::shape_mismatch, "x: expected a 2-D"));
  Tensor x_bf16 = x.to(DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y, x_bf16, w, false); }, ErrorCode::shape_mismatch,
                           "x: expected dtype f32"));
  Tensor w_f16 = w.to(DType::f16);
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y, x, w_f16, false); }, ErrorCode::shape_mismatch, "f32 or bf16"));
  Tensor dw_bf16 = Tensor::zeros({3, 4}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.linear_backward(nullptr, &dw_bf16, y, x, w); }, ErrorCode::shape_mismatch, "dw"));
  Tensor dx_bad = Tensor::zeros({2, 3});
  EXPECT_TRUE(throws_error([&] { be.linear_backward(&dx_bad, nullptr, y, x, w); }, ErrorCode::shape_mismatch,
                           "dx: expected shape [2, 4]"));
  Tensor dy_bad = Tensor::zeros({3, 3});
  EXPECT_TRUE(
      throws_error([&] { be.linear_backward(nullptr, nullptr, dy_bad, x, w); }, ErrorCode::shape_mismatch, "dy"));
}

TEST(CpuLinear, NonContiguousAndDeviceTensorsThrow) {
  CpuBackend be;
  Tensor big = Tensor::zeros({2, 8});
  Tensor x_strided = big.narrow(1, 0, 4);  // [2, 4] with row stride 8
  Tensor w = Tensor::zeros({3, 4}), y = Tensor::zeros({2, 3});
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y, x_strided, w, false); }, ErrorCode::invalid_argument,
                           "x must be contiguous"));
  std::vector<float> storage(12);
  Tensor w_dev = Tensor::borrow(storage.data(), {3, 4}, DType::f32, Device::cuda(0));
  EXPECT_TRUE(throws_error(
      [&] {
        be.linear_forward(y, Tensor::zeros({2, 4}), w_dev, false);
      },
      ErrorCode::invalid_argument, "w is on cuda:0"));
}

}  // namespace
}  // namespace latte::test
