// CpuBackend::add_inplace against reference::add. One f32 addition per element: the result must
// equal the correctly rounded sum, i.e. within half an ulp: rtol 6e-8 (2^-24), atol 0.
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

TEST(CpuAddInplace, MatchesReference) {
  CpuBackend be;
  Rng rng(1000);
  for (const Shape& s : {Shape{1}, Shape{3, 7}, Shape{63, 130}, Shape{64, 1536}}) {
    SCOPED_TRACE(shape_str(s));
    Tensor y = random_f32(rng, s), x = random_f32(rng, s);
    const Vec want = reference::add(to_f64(y), to_f64(x));
    be.add_inplace(y, x);
    EXPECT_TRUE(all_close(y, want, 0.0, 6e-8));
  }
}

TEST(CpuAddInplace, BadShapesThrow) {
  CpuBackend be;
  Tensor y = Tensor::zeros({3, 4}), x = Tensor::zeros({4, 3});
  EXPECT_TRUE(
      throws_error([&] { be.add_inplace(y, x); }, ErrorCode::shape_mismatch, "x: expected shape [3, 4], got [4, 3]"));
  Tensor x_bf16 = Tensor::zeros({3, 4}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.add_inplace(y, x_bf16); }, ErrorCode::shape_mismatch, "x: expected dtype f32"));
}

}  // namespace
}  // namespace latte::test
