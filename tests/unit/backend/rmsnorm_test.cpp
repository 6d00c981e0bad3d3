// CpuBackend::rmsnorm_forward / rmsnorm_backward against reference::rmsnorm_* (float64; the
// reference recomputes rstd rather than using the saved one). Unit-normal inputs, so y, rstd
// and the gradients are O(1); the f32 error is a sum of squares over D <= 576 terms
// (~sqrt(D) * 2^-24 relative) feeding a few multiplies. Tolerance: atol 2e-5 + rtol 2e-5.
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 2e-5, kRtol = 2e-5;
constexpr float kEps = 1e-5f;

void check_rmsnorm(int64_t T, int64_t D, DType w_dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << T << " D=" << D << " w " << dtype_name(w_dtype));
  CpuBackend be;
  Rng rng(seed);
  Tensor x = random_f32(rng, {T, D});
  Tensor w = make_f32(rng.normal(D, 0.5, 1.0), {D}).to(w_dtype);
  const Vec xr = to_f64(x), wr = to_f64(w);
  const ref::RmsnormOut want = ref::rmsnorm_forward(xr, wr, T, D, double(kEps));

  Tensor y = nan_f32({T, D}), rstd = nan_f32({T});
  be.rmsnorm_forward(y, &rstd, x, w, kEps);
  EXPECT_TRUE(all_close(y, want.y, kAtol, kRtol)) << "y";
  EXPECT_TRUE(all_close(rstd, want.rstd, kAtol, kRtol)) << "rstd";

  Tensor y2 = nan_f32({T, D});
  be.rmsnorm_forward(y2, nullptr, x, w, kEps);
  EXPECT_TRUE(bit_equal(y, y2)) << "rstd = nullptr must not change y";

  Tensor dy = random_f32(rng, {T, D});
  Tensor dx = random_f32(rng, {T, D}), dw = random_f32(rng, {D});
  const Vec dx0 = to_f64(dx), dw0 = to_f64(dw);
  be.rmsnorm_backward(dx, dw, dy, x, w, rstd);
  const ref::RmsnormGrads g = ref::rmsnorm_backward(to_f64(dy), xr, wr, T, D, double(kEps));
  EXPECT_TRUE(all_close(dx, add_vec(dx0, g.dx), kAtol, kRtol)) << "dx";
  // dw sums over T rows: allow sqrt(T) more.
  EXPECT_TRUE(all_close(dw, add_vec(dw0, g.dw), kAtol * 8, kRtol)) << "dw";
}

TEST(CpuRmsnorm, MatchesReference) {
  uint64_t seed = 500;
  for (int64_t T : {1, 3, 63})
    for (int64_t D : {1, 7, 64, 130}) check_rmsnorm(T, D, DType::f32, seed++);
  check_rmsnorm(200, 576, DType::f32, seed++);  // OpenMP path
}

TEST(CpuRmsnorm, Bf16WeightsMatchReferenceOnRoundedValues) {
  check_rmsnorm(3, 7, DType::bf16, 520);
  check_rmsnorm(63, 130, DType::bf16, 521);
  check_rmsnorm(200, 576, DType::bf16, 522);
}

TEST(CpuRmsnorm, BadShapesThrow) {
  CpuBackend be;
  Tensor x = Tensor::zeros({3, 4}), w = Tensor::zeros({4}), y = Tensor::zeros({3, 4});
  Tensor w_bad = Tensor::zeros({3});
  EXPECT_TRUE(throws_error([&] { be.rmsnorm_forward(y, nullptr, x, w_bad, kEps); }, ErrorCode::shape_mismatch,
                           "w: expected shape [4], got [3]"));
  Tensor rstd_bad = Tensor::zeros({4});
  EXPECT_TRUE(throws_error([&] { be.rmsnorm_forward(y, &rstd_bad, x, w, kEps); }, ErrorCode::shape_mismatch,
                           "rstd: expected shape [3]"));
  Tensor y_bad = Tensor::zeros({4, 3});
  EXPECT_TRUE(throws_error([&] { be.rmsnorm_forward(y_bad, nullptr, x, w, kEps); }, ErrorCode::shape_mismatch, "y"));
  Tensor rstd = Tensor::zeros({3}), dx = Tensor::zeros({3, 4}), dw_bad = Tensor::zeros({5});
  EXPECT_TRUE(throws_error([&] { be.rmsnorm_backward(dx, dw_bad, y, x, w, rstd); }, ErrorCode::shape_mismatch,
                           "dw: expected shape [4]"));
  Tensor empty_d = Tensor::zeros({3, 0}), w0 = Tensor::zeros({0}), y0 = Tensor::zeros({3, 0});
  EXPECT_TRUE(throws_error([&] { be.rmsnorm_forward(y0, nullptr, empty_d, w0, kEps); }, ErrorCode::shape_mismatch,
                           "D must be > 0"));
}

}  // namespace
}  // namespace latte::test
