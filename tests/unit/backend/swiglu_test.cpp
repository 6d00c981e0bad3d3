// CpuBackend::swiglu_forward / swiglu_backward against reference::swiglu_*. Elementwise, no
// reductions: a handful of f32 roundings plus expf's ~1 ulp. gate spans +-30 (stddev 6) to cover
// sigmoid saturation at both ends. Tolerance: atol 1e-6 + rtol 1e-5.
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 1e-6, kRtol = 1e-5;

void check_swiglu(int64_t T, int64_t F, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << T << " F=" << F);
  CpuBackend be;
  Rng rng(seed);
  Tensor gate = random_f32(rng, {T, F}, 6.0), up = random_f32(rng, {T, F});
  const Vec gr = to_f64(gate), ur = to_f64(up);

  Tensor h = nan_f32({T, F});
  be.swiglu_forward(h, gate, up);
  EXPECT_TRUE(all_close(h, ref::swiglu_forward(gr, ur), kAtol, kRtol)) << "h";

  Tensor dh = random_f32(rng, {T, F});
  Tensor dgate = nan_f32({T, F}), dup = nan_f32({T, F});
  be.swiglu_backward(dgate, dup, dh, gate, up);
  const ref::SwigluGrads g = ref::swiglu_backward(to_f64(dh), gr, ur);
  EXPECT_TRUE(all_close(dgate, g.dgate, kAtol, kRtol)) << "dgate";
  EXPECT_TRUE(all_close(dup, g.dup, kAtol, kRtol)) << "dup";
}

TEST(CpuSwiglu, MatchesReference) {
  check_swiglu(1, 1, 800);
  check_swiglu(3, 7, 801);
  check_swiglu(63, 130, 802);
  check_swiglu(64, 1536, 803);  // OpenMP path
}

TEST(CpuSwiglu, BadShapesThrow) {
  CpuBackend be;
  Tensor gate = Tensor::zeros({3, 4}), up = Tensor::zeros({3, 5}), h = Tensor::zeros({3, 4});
  EXPECT_TRUE(throws_error([&] { be.swiglu_forward(h, gate, up); }, ErrorCode::shape_mismatch,
                           "up: expected shape [3, 4], got [3, 5]"));
  Tensor up_ok = Tensor::zeros({3, 4}), h_bad = Tensor::zeros({4, 3});
  EXPECT_TRUE(throws_error([&] { be.swiglu_forward(h_bad, gate, up_ok); }, ErrorCode::shape_mismatch, "h"));
  Tensor dgate = Tensor::zeros({3, 4}), dup = Tensor::zeros({3, 4}), dh_bad = Tensor::zeros({3, 4}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.swiglu_backward(dgate, dup, dh_bad, gate, up_ok); }, ErrorCode::shape_mismatch,
                           "dh: expected dtype f32"));
}

}  // namespace
}  // namespace latte::test
