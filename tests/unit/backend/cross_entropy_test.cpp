// CpuBackend::cross_entropy_forward / cross_entropy_backward against reference::cross_entropy_*.
// Logits are N(offset, 2): the max subtraction must keep offset = 80 finite (exp(80) overflows
// f32 without it). The loss is m + log(sum) - x[target] in f32: its error is a few ulps of the
// largest term, so atol scales with the offset: 1e-6 + 1e-7 * |offset| (rtol 1e-6; the worst
// error seen is ~1/10 of that). Gradients are softmax probabilities times scale: atol 1e-7 +
// rtol 1e-5.
#include <cmath>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;

void check_ce(int64_t T, int64_t V, double offset, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << T << " V=" << V << " offset=" << offset);
  CpuBackend be;
  Rng rng(seed);
  Tensor logits = make_f32(rng.normal(T * V, 2.0, offset), {T, V});
  std::vector<int32_t> targets = rng.ints(T, 0, int32_t(V - 1));
  if (T > 1) targets[1] = -1;    // ignored
  if (T > 2) targets[2] = -100;  // PyTorch's ignore_index is negative too
  const Vec lr = to_f64(logits);
  const float scale = 1.0f / 3.0f;

  Tensor losses = nan_f32({T});
  be.cross_entropy_forward(losses, logits, targets);
  EXPECT_TRUE(all_close(losses, ref::cross_entropy_forward(lr, targets, T, V), 1e-6 + 1e-7 * std::fabs(offset), 1e-6));

  Tensor d = nan_f32({T, V});
  be.cross_entropy_backward(d, logits, targets, scale);
  EXPECT_TRUE(all_close(d, ref::cross_entropy_backward(lr, targets, T, V, double(scale)), 1e-7, 1e-5));
}

TEST(CpuCrossEntropy, MatchesReference) {
  uint64_t seed = 900;
  for (int64_t T : {1, 3, 7})
    for (int64_t V : {1, 5, 1000}) check_ce(T, V, 0.0, seed++);
  check_ce(63, 4099, 0.0, seed++);  // OpenMP path, V not a multiple of the lanes
}

TEST(CpuCrossEntropy, LargeLogitsStayFinite) {
  check_ce(7, 1000, 80.0, 950);
  check_ce(7, 1000, -80.0, 951);
}

TEST(CpuCrossEntropy, BadTargetsAndShapesThrow) {
  CpuBackend be;
  Tensor logits = Tensor::zeros({3, 7}), losses = nan_f32({3}), d = nan_f32({3, 7});
  const std::vector<int32_t> bad = {0, 6, 7};
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_forward(losses, logits, bad); }, ErrorCode::invalid_argument,
                           "target 7 at position 2"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_backward(d, logits, bad, 1.0f); }, ErrorCode::invalid_argument,
                           "target 7 at position 2"));
  const std::vector<int32_t> short_targets = {0, 1};
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_forward(losses, logits, short_targets); }, ErrorCode::shape_mismatch,
                           "targets has 2 entries"));
  const std::vector<int32_t> ok = {0, 1, 2};
  Tensor losses_bad = Tensor::zeros({3, 1});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_forward(losses_bad, logits, ok); }, ErrorCode::shape_mismatch,
                           "losses: expected shape [3], got [3, 1]"));
  Tensor d_bad = Tensor::zeros({3, 8});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_backward(d_bad, logits, ok, 1.0f); }, ErrorCode::shape_mismatch,
                           "dlogits: expected shape [3, 7]"));
}

}  // namespace
}  // namespace latte::test
