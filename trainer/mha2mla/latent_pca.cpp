#include "trainer/mha2mla/latent_pca.h"

#include <algorithm>
#include <cmath>

#include "core/base/error.h"
#include "core/linalg/matmul.h"
#include "core/linalg/svd.h"

namespace latte {

namespace {

// Mean over the rows c of a of sqrt((a s a^T)_cc), the RMS of output channel c.
double mean_channel_rms(const MatrixD& a, const MatrixD& s) {
  if (a.rows == 0) return 0;
  const MatrixD as = matmul(a, s);
  double sum = 0;
  for (int64_t c = 0; c < a.rows; ++c) {
    double e = 0;
    for (int64_t i = 0; i < a.cols; ++i) e += as(c, i) * a(c, i);
    sum += std::sqrt(std::max(0.0, e));
  }
  return sum / double(a.rows);
}

}  // namespace

double key_value_balance(const MatrixD& k_nope, const MatrixD& v, const MatrixD& s) {
  const double k = mean_channel_rms(k_nope, s), vv = mean_channel_rms(v, s);
  return k > 0 && vv > 0 ? k / vv : 1.0;
}

LatentPca balanced_joint_pca(const MatrixD& k_nope, const MatrixD& v, const MatrixD& s, int64_t rank, double alpha) {
  const int64_t dim = s.rows, rk = k_nope.rows, R = k_nope.rows + v.rows;
  LATTE_REQUIRE(s.cols == dim && k_nope.cols == dim && v.cols == dim, ErrorCode::shape_mismatch,
                "latent PCA: k_nope [", rk, ", ", k_nope.cols, "], v [", v.rows, ", ", v.cols, "] and moment [", s.rows,
                ", ", s.cols, "] do not share the input width");
  LATTE_REQUIRE(rank >= 1 && rank <= std::min(R, dim), ErrorCode::invalid_argument, "latent PCA: rank ", rank,
                " outside [1, min(rows ", R, ", dim ", dim, ")]");
  LATTE_REQUIRE(alpha > 0 && std::isfinite(alpha), ErrorCode::invalid_argument, "latent PCA: key scale ", alpha,
                " must be positive and finite");

  MatrixD b(R, dim);  // [k_nope / alpha; v]
  for (int64_t i = 0; i < rk; ++i)
    for (int64_t c = 0; c < dim; ++c) b(i, c) = k_nope(i, c) / alpha;
  std::copy(v.data.begin(), v.data.end(), b.data.begin() + rk * dim);

  MatrixD damped = s;
  double trace = 0;
  for (int64_t i = 0; i < dim; ++i) trace += s(i, i);
  const double delta = 1e-8 * (trace > 0 ? trace / double(dim) : 1.0);
  for (int64_t i = 0; i < dim; ++i) damped(i, i) += delta;

  // C is symmetric positive semi-definite, so its SVD is its eigendecomposition: u holds the
  // eigenvectors and s the eigenvalues, descending.
  const MatrixD c = matmul(matmul(b, damped), b, Transpose::no, Transpose::yes);
  const Svd eig = svd_thin(c);

  LatentPca out;
  out.alpha = alpha;
  double kept = 0, total = 0;
  for (size_t i = 0; i < eig.s.size(); ++i) {
    total += eig.s[i];
    if (int64_t(i) < rank) kept += eig.s[i];
  }
  out.balanced_energy_kept = total > 0 ? kept / total : 1.0;

  MatrixD q(R, rank);  // Q_D
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = 0; k < rank; ++k) q(i, k) = eig.u(i, k);
  out.latent.down = matmul(q, b, Transpose::yes, Transpose::no);
  out.latent.k_up = row_block(q, 0, rk);
  for (double& x : out.latent.k_up.data) x *= alpha;
  out.latent.v_up = row_block(q, rk, R);
  return out;
}

}  // namespace latte
