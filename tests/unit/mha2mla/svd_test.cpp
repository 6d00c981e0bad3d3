// core/linalg/svd: thin SVD through LAPACK dgesdd. Oracle: the defining identities (a = u s vt,
// orthonormal factors, descending s), in float64 with tolerance 1e-12 relative; singular vectors
// are compared only through products (their signs are arbitrary).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include <lapacke.h>

#include "core/linalg/lapack_check.h"
#include "core/linalg/svd.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

MatrixD random_matrix(int64_t m, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist;
  MatrixD a(m, n);
  for (double& x : a.data) x = dist(rng);
  return a;
}

double frobenius(const MatrixD& a) {
  double s = 0;
  for (double x : a.data) s += x * x;
  return std::sqrt(s);
}

void expect_valid_svd(const MatrixD& a, const Svd& r) {
  const int64_t m = a.rows, n = a.cols, k = std::min(m, n);
  ASSERT_EQ(r.u.rows, m);
  ASSERT_EQ(r.u.cols, k);
  ASSERT_EQ(int64_t(r.s.size()), k);
  ASSERT_EQ(r.vt.rows, k);
  ASSERT_EQ(r.vt.cols, n);
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_GE(r.s[size_t(i)], 0.0);
    if (i > 0) {
      EXPECT_LE(r.s[size_t(i)], r.s[size_t(i - 1)]);
    }
  }
  const double scale = std::max(frobenius(a), 1.0);
  double err = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double v = 0;
      for (int64_t t = 0; t < k; ++t) v += r.u(i, t) * r.s[size_t(t)] * r.vt(t, j);
      err = std::max(err, std::abs(v - a(i, j)));
    }
  EXPECT_LT(err / scale, 1e-12) << "reconstruction of [" << m << ", " << n << "]";
  for (int64_t p = 0; p < k; ++p)
    for (int64_t q = 0; q < k; ++q) {
      double uu = 0, vv = 0;
      for (int64_t i = 0; i < m; ++i) uu += r.u(i, p) * r.u(i, q);
      for (int64_t j = 0; j < n; ++j) vv += r.vt(p, j) * r.vt(q, j);
      EXPECT_NEAR(uu, p == q ? 1.0 : 0.0, 1e-12) << "u^T u (" << p << ", " << q << ")";
      EXPECT_NEAR(vv, p == q ? 1.0 : 0.0, 1e-12) << "vt vt^T (" << p << ", " << q << ")";
    }
}

TEST(Svd, ReconstructsAndIsOrthonormalForOddShapes) {
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 7}, {7, 1}, {5, 3}, {3, 5}, {17, 17}, {63, 40}, {40, 63}})
    expect_valid_svd(random_matrix(m, n, uint32_t(m * 100 + n)), svd_thin(random_matrix(m, n, uint32_t(m * 100 + n))));
}

TEST(Svd, KnownSingularValues) {
  // diag(3, -5) in a rotated basis: singular values 5, 3.
  MatrixD a(2, 2);
  const double c = std::cos(0.3), s = std::sin(0.3);
  // a = R diag(3, -5): columns scaled.
  a(0, 0) = 3 * c, a(0, 1) = -5 * -s, a(1, 0) = 3 * s, a(1, 1) = -5 * c;
  Svd r = svd_thin(a);
  EXPECT_NEAR(r.s[0], 5.0, 1e-14);
  EXPECT_NEAR(r.s[1], 3.0, 1e-14);
  expect_valid_svd(a, r);
}

TEST(Svd, RankDeficientHasZeroTail) {
  // A rank-2 [9, 6] matrix: the last four singular values vanish, reconstruction is exact.
  MatrixD x = random_matrix(9, 2, 1), y = random_matrix(2, 6, 2), a(9, 6);
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t j = 0; j < 6; ++j) a(i, j) = x(i, 0) * y(0, j) + x(i, 1) * y(1, j);
  Svd r = svd_thin(a);
  expect_valid_svd(a, r);
  for (size_t i = 2; i < r.s.size(); ++i) EXPECT_LT(r.s[i], 1e-12 * r.s[0]) << i;
}

TEST(Svd, EmptyAndZeroMatrices) {
  Svd e = svd_thin(MatrixD(0, 4));
  EXPECT_TRUE(e.s.empty());
  EXPECT_EQ(e.u.rows, 0);
  EXPECT_EQ(e.vt.cols, 4);
  Svd z = svd_thin(MatrixD(3, 4));
  for (double s : z.s) EXPECT_EQ(s, 0.0);
}

TEST(Svd, NonFiniteEntryIsRefused) {
  MatrixD a = random_matrix(4, 3, 5);
  a(2, 1) = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { svd_thin(a); }, ErrorCode::numerics, {"(2, 1)", "nan"});
}

TEST(Svd, LapackCheckNamesTheCallAndInfo) {
  // lda = 1 < n = 2 is illegal in row-major: LAPACKE returns info = -6 (and prints its own note).
  double a[4] = {1, 2, 3, 4}, s[2], u[4], vt[4];
  expect_error([&] { LATTE_LAPACK_CHECK(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', 2, 2, a, 1, s, u, 2, vt, 2)); },
               ErrorCode::internal, {"LAPACKE_dgesdd(", "info -6", "illegal argument"});
}

}  // namespace
}  // namespace latte
