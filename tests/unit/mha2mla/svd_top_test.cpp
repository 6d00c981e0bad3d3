// core/linalg/svd_top: the leading singular triplets through the Gram matrix, against dgesdd
// (svd_thin) in float64: the same singular values, the same truncation error at every rank, exact
// reconstruction at full rank, orthonormal right vectors; and its refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/linalg/svd.h"
#include "core/linalg/svd_top.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

// Rows with a decaying spectrum (as attention weights have), so truncation matters.
MatrixD decaying_matrix(int64_t m, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist;
  MatrixD a(m, n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) a(i, j) = dist(rng) * std::exp(-double(j) / 12.0) + 0.01 * dist(rng);
  return a;
}

// ||a - av . vt||_F / ||a||_F
double truncation_error(const MatrixD& a, const MatrixD& av, const MatrixD& vt) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < a.cols; ++j) {
      double x = 0;
      for (int64_t k = 0; k < vt.rows; ++k) x += av(i, k) * vt(k, j);
      num += (a(i, j) - x) * (a(i, j) - x);
      den += a(i, j) * a(i, j);
    }
  return std::sqrt(num / den);
}

TEST(SvdTop, MatchesDgesddAtEveryRank) {
  const MatrixD a = decaying_matrix(90, 48, 3);
  const Svd full = svd_thin(a);
  double energy = 0;
  for (double s : full.s) energy += s * s;
  for (int64_t rank : {1, 5, 16, 47, 48}) {
    const TopSvd t = svd_top(a, rank);
    ASSERT_EQ(int64_t(t.s.size()), rank);
    EXPECT_NEAR(t.total_energy, energy, 1e-10 * energy);
    for (int64_t k = 0; k < rank; ++k) EXPECT_NEAR(t.s[size_t(k)], full.s[size_t(k)], 1e-9 * full.s[0]) << k;
    // The reference truncation: u_k s_k vt_k of dgesdd.
    MatrixD us(a.rows, rank), vt(rank, a.cols);
    for (int64_t i = 0; i < a.rows; ++i)
      for (int64_t k = 0; k < rank; ++k) us(i, k) = full.u(i, k) * full.s[size_t(k)];
    for (int64_t k = 0; k < rank; ++k)
      for (int64_t j = 0; j < a.cols; ++j) vt(k, j) = full.vt(k, j);
    const double want = truncation_error(a, us, vt), got = truncation_error(a, t.av, t.vt);
    EXPECT_NEAR(got, want, 1e-9) << "rank " << rank;
    // Orthonormal right vectors.
    for (int64_t p = 0; p < rank; ++p)
      for (int64_t q = 0; q < rank; ++q) {
        double d = 0;
        for (int64_t j = 0; j < a.cols; ++j) d += t.vt(p, j) * t.vt(q, j);
        EXPECT_NEAR(d, p == q ? 1.0 : 0.0, 1e-12);
      }
  }
  EXPECT_LT(truncation_error(a, svd_top(a, 48).av, svd_top(a, 48).vt), 1e-13);  // full rank: a itself
}

TEST(SvdTop, ARankDeficientMatrixIsStillReproduced) {
  MatrixD a(40, 12);  // rank 3
  const MatrixD b = decaying_matrix(40, 3, 5), c = decaying_matrix(3, 12, 6);
  for (int64_t i = 0; i < 40; ++i)
    for (int64_t j = 0; j < 12; ++j)
      for (int64_t k = 0; k < 3; ++k) a(i, j) += b(i, k) * c(k, j);
  EXPECT_LT(truncation_error(a, svd_top(a, 12).av, svd_top(a, 12).vt), 1e-13);
  EXPECT_LT(truncation_error(a, svd_top(a, 3).av, svd_top(a, 3).vt), 1e-7);
}

TEST(SvdTop, Refusals) {
  expect_error([] { svd_top(MatrixD(3, 5), 2); }, ErrorCode::invalid_argument, {"wide", "svd_thin"});
  expect_error([] { svd_top(MatrixD(5, 3), 4); }, ErrorCode::invalid_argument, {"rank 4"});
  MatrixD nan(4, 2);
  nan(2, 1) = std::nan("");
  expect_error([&] { svd_top(nan, 1); }, ErrorCode::numerics, {"(2, 1)"});
}

}  // namespace
}  // namespace latte
