// The activation-aware latent (trainer/mha2mla/latent_pca.h) and its ingredients, against
// float64 references computed here by plain loops:
//  - the attention-input second moment equals sum_t u_t^T u_t;
//  - output_energy_kept on a case worked by hand;
//  - the key scale alpha is the ratio of mean channel RMS;
//  - at full rank the PCA latent reproduces the key and value rows for any alpha (the folding of
//    1/alpha and alpha cancels);
//  - below full rank it keeps at least as much balanced activation energy as the SVD of the same
//    balanced weights (Eckart-Young on the output covariance), strictly more for anisotropic inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/linalg/matmul.h"
#include "core/linalg/svd.h"
#include "trainer/mha2mla/attention_input_moments.h"
#include "trainer/mha2mla/kv_latent.h"
#include "trainer/mha2mla/latent_pca.h"

namespace latte {
namespace {

MatrixD random_matrix(int64_t rows, int64_t cols, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> d;
  MatrixD m(rows, cols);
  for (double& x : m.data) x = scale * d(rng);
  return m;
}

// E[u^T u] for inputs u = z . mix with z ~ N(0, 1): a correlated, anisotropic second moment.
MatrixD anisotropic_moment(int64_t dim, std::mt19937& rng) {
  MatrixD mix = random_matrix(dim, dim, rng);
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t j = 0; j < dim; ++j) mix(i, j) *= std::pow(0.7, double(i));  // decaying scales
  return matmul(mix, mix, Transpose::yes, Transpose::no);
}

double max_abs_diff(const MatrixD& a, const MatrixD& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  double m = 0;
  for (size_t i = 0; i < a.data.size(); ++i) m = std::max(m, std::abs(a.data[i] - b.data[i]));
  return m;
}

double max_abs(const MatrixD& a) {
  double m = 0;
  for (double x : a.data) m = std::max(m, std::abs(x));
  return m;
}

MatrixD stack(const MatrixD& top, const MatrixD& bottom) {
  MatrixD m(top.rows + bottom.rows, top.cols);
  std::copy(top.data.begin(), top.data.end(), m.data.begin());
  std::copy(bottom.data.begin(), bottom.data.end(), m.data.begin() + top.rows * top.cols);
  return m;
}

TEST(AttentionInputMoments, SumsOuterProductsOverAllPositions) {
  // Odd sizes, two layers, two windows of different lengths (one of a single position).
  const int64_t dim = 7;
  std::mt19937 rng(3);
  AttentionInputMomentAccumulator acc(2, dim);
  MatrixD ref(dim, dim);
  for (int64_t n : {int64_t(5), int64_t(1)}) {
    std::vector<float> u(size_t(n * dim));
    std::normal_distribution<float> d;
    for (float& x : u) x = 3.0f * d(rng);
    acc.add(1, Tensor::from_vector(u, {1, n, dim}));
    acc.count_positions(n);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < dim; ++i)
        for (int64_t j = 0; j < dim; ++j) ref(i, j) += double(u[size_t(t * dim + i)]) * double(u[size_t(t * dim + j)]);
  }
  const AttentionInputMoments m = acc.result();
  EXPECT_EQ(m.positions, 6);
  EXPECT_LT(max_abs_diff(m.sum_uu[1], ref), 1e-12 * max_abs(ref));
  EXPECT_EQ(max_abs(m.sum_uu[0]), 0.0);  // layer 0 saw nothing
  MatrixD mean = m.second_moment(1);
  for (double& x : ref.data) x /= 6.0;
  EXPECT_LT(max_abs_diff(mean, ref), 1e-12 * max_abs(ref));
  EXPECT_THROW(AttentionInputMomentAccumulator(1, dim).result(), Error);
}

TEST(OutputEnergyKept, HandWorkedCase) {
  // a = I, rank-1 factorization keeping the first coordinate, inputs with E[u1^2] = 4, E[u2^2] = 1.
  MatrixD a(2, 2), up(2, 1), down(1, 2), s(2, 2);
  a(0, 0) = a(1, 1) = 1;
  up(0, 0) = 1;
  down(0, 0) = 1;
  s(0, 0) = 4;
  s(1, 1) = 1;
  EXPECT_NEAR(output_energy_kept(a, up, down, s), 0.8, 1e-15);
  // Keeping the weaker coordinate instead: 1/5.
  MatrixD up2(2, 1), down2(1, 2);
  up2(1, 0) = 1;
  down2(0, 1) = 1;
  EXPECT_NEAR(output_energy_kept(a, up2, down2, s), 0.2, 1e-15);
}

TEST(KeyValueBalance, IsTheRatioOfMeanChannelRms) {
  std::mt19937 rng(5);
  const int64_t dim = 9;
  const MatrixD s = anisotropic_moment(dim, rng);
  const MatrixD k = random_matrix(4, dim, rng), v = random_matrix(6, dim, rng);
  auto mean_rms = [&](const MatrixD& a) {
    double sum = 0;
    for (int64_t c = 0; c < a.rows; ++c) {
      double e = 0;
      for (int64_t i = 0; i < dim; ++i)
        for (int64_t j = 0; j < dim; ++j) e += a(c, i) * s(i, j) * a(c, j);
      sum += std::sqrt(e);
    }
    return sum / double(a.rows);
  };
  EXPECT_NEAR(key_value_balance(k, v, s), mean_rms(k) / mean_rms(v), 1e-12 * mean_rms(k) / mean_rms(v));
  MatrixD k3 = v;
  for (double& x : k3.data) x *= 3.0;
  EXPECT_NEAR(key_value_balance(k3, v, s), 3.0, 1e-12);
  EXPECT_EQ(key_value_balance(MatrixD(0, dim), v, s), 1.0);  // full RoPE: no no-RoPE keys
}

TEST(LatentPca, FullRankReproducesTheRowsForAnyKeyScale) {
  std::mt19937 rng(7);
  // rows (3 + 5) < dim 11: full rank is 8; keys far larger than values, as in SmolLM2.
  const int64_t dim = 11;
  const MatrixD s = anisotropic_moment(dim, rng);
  const MatrixD k = random_matrix(3, dim, rng, 20.0), v = random_matrix(5, dim, rng);
  for (double alpha : {1.0, key_value_balance(k, v, s), 1000.0}) {
    const LatentPca p = balanced_joint_pca(k, v, s, 8, alpha);
    EXPECT_LT(max_abs_diff(matmul(p.latent.k_up, p.latent.down), k), 1e-10 * max_abs(k)) << alpha;
    EXPECT_LT(max_abs_diff(matmul(p.latent.v_up, p.latent.down), v), 1e-10 * max_abs(v)) << alpha;
    EXPECT_NEAR(p.balanced_energy_kept, 1.0, 1e-12);
    const KvEnergy e = kv_energy_kept(k, v, p.latent, s);
    EXPECT_NEAR(e.keys, 1.0, 1e-10);
    EXPECT_NEAR(e.values, 1.0, 1e-10);
  }
  // rows (9 + 6) > dim 11: the rank bound is dim, and the leading 11 directions span the rows.
  const MatrixD k2 = random_matrix(9, dim, rng), v2 = random_matrix(6, dim, rng);
  const LatentPca p = balanced_joint_pca(k2, v2, s, dim, key_value_balance(k2, v2, s));
  EXPECT_LT(max_abs_diff(matmul(p.latent.k_up, p.latent.down), k2), 1e-9 * max_abs(k2));
  EXPECT_LT(max_abs_diff(matmul(p.latent.v_up, p.latent.down), v2), 1e-9 * max_abs(v2));
}

TEST(LatentPca, KeepsMoreBalancedActivationEnergyThanTheWeightSvd) {
  std::mt19937 rng(11);
  const int64_t dim = 24;
  const MatrixD s = anisotropic_moment(dim, rng);
  const MatrixD k = random_matrix(10, dim, rng, 5.0), v = random_matrix(12, dim, rng);
  const double alpha = key_value_balance(k, v, s);
  MatrixD kb = k;
  for (double& x : kb.data) x /= alpha;
  const MatrixD b = stack(kb, v);
  for (int64_t rank : {1, 4, 9}) {
    const LatentPca p = balanced_joint_pca(k, v, s, rank, alpha);
    // The PCA as a factorization of the balanced rows: up = [k_up / alpha; v_up].
    MatrixD kup = p.latent.k_up;
    for (double& x : kup.data) x /= alpha;
    const double pca = output_energy_kept(b, stack(kup, p.latent.v_up), p.latent.down, s);
    EXPECT_NEAR(pca, p.balanced_energy_kept, 1e-6) << "eigenvalue mass vs measured energy, rank " << rank;
    // The weight SVD of the same balanced rows, truncated to the same rank.
    const Svd w = svd_thin(b);
    MatrixD u(b.rows, rank);
    for (int64_t i = 0; i < b.rows; ++i)
      for (int64_t j = 0; j < rank; ++j) u(i, j) = w.u(i, j);
    const double svd = output_energy_kept(b, u, matmul(u, b, Transpose::yes, Transpose::no), s);
    EXPECT_GT(pca, svd + 1e-3) << "rank " << rank << ": the inputs are anisotropic, so PCA must win clearly";
    EXPECT_LE(pca, 1.0 + 1e-12);
  }
}

TEST(LatentPca, RefusesBadArguments) {
  std::mt19937 rng(13);
  const MatrixD s = anisotropic_moment(5, rng), k = random_matrix(2, 5, rng), v = random_matrix(2, 5, rng);
  EXPECT_THROW(balanced_joint_pca(k, v, s, 0, 1.0), Error);
  EXPECT_THROW(balanced_joint_pca(k, v, s, 5, 1.0), Error);  // only 4 rows
  EXPECT_THROW(balanced_joint_pca(k, v, s, 2, 0.0), Error);
  EXPECT_THROW(balanced_joint_pca(k, random_matrix(2, 4, rng), s, 2, 1.0), Error);
}

}  // namespace
}  // namespace latte
