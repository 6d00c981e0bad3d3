// Every comparison helper the op tests rely on, shown failing on purpose: a helper that cannot
// fail would make every test that uses it vacuous.
#include <cmath>
#include <limits>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

TEST(ComparisonHelpers, AllCloseAcceptsWithinToleranceAndRejectsPerturbation) {
  const Vec want = {1.0, -2.0, 3.5, 0.0};
  std::vector<float> got = {1.0f, -2.0f, 3.5f, 0.0f};
  EXPECT_TRUE(all_close(got, want, 1e-6, 1e-6));
  got[2] = 3.5f + 1e-3f;
  EXPECT_FALSE(all_close(got, want, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(got, want, 2e-3, 0.0));
}

TEST(ComparisonHelpers, AllCloseRejectsNanInfAndSizeMismatch) {
  const Vec want = {1.0, 2.0};
  EXPECT_FALSE(all_close(std::vector<float>{1.0f, std::numeric_limits<float>::quiet_NaN()}, want, 1e3, 1e3));
  EXPECT_FALSE(all_close(std::vector<float>{1.0f, std::numeric_limits<float>::infinity()}, want, 1e3, 1e3));
  EXPECT_FALSE(all_close(std::vector<float>{1.0f}, want, 1e3, 1e3));
}

TEST(ComparisonHelpers, BitEqualRejectsOneUlp) {
  Tensor a = make_f32({1.0f, 2.0f, 3.0f}, {3});
  Tensor b = a.clone();
  EXPECT_TRUE(bit_equal(a, b));
  b.f32()[1] = std::nextafter(2.0f, 3.0f);
  EXPECT_FALSE(bit_equal(a, b));
  EXPECT_FALSE(bit_equal(a, make_f32({1.0f, 2.0f, 3.0f}, {1, 3})));
}

TEST(ComparisonHelpers, GradCloseRejectsWrongGradient) {
  // f(x) = x0^2 + 3 x1: gradient (2 x0, 3).
  auto f = [](const Vec& x) { return x[0] * x[0] + 3 * x[1]; };
  const Vec x = {0.7, -1.2};
  const Vec numeric = numeric_grad(f, x);
  EXPECT_TRUE(grad_close(numeric, {1.4, 3.0}));
  EXPECT_FALSE(grad_close(numeric, {1.4, 3.0 + 1e-4}));
  EXPECT_FALSE(grad_close(numeric, {1.4}));
}

TEST(ComparisonHelpers, ThrowsErrorChecksCodeAndMessage) {
  auto thrower = [] { fail(ErrorCode::shape_mismatch, "x: expected shape [2]"); };
  EXPECT_TRUE(throws_error(thrower, ErrorCode::shape_mismatch, "expected shape"));
  EXPECT_FALSE(throws_error(thrower, ErrorCode::invalid_argument));
  EXPECT_FALSE(throws_error(thrower, ErrorCode::shape_mismatch, "not in the message"));
  EXPECT_FALSE(throws_error([] {}, ErrorCode::shape_mismatch));
}

}  // namespace
}  // namespace latte::test
