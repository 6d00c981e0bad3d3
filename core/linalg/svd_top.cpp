#include "core/linalg/svd_top.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "core/linalg/lapack_check.h"

namespace latte {

TopSvd svd_top(const MatrixD& a, int64_t rank) {
  const int64_t m = a.rows, n = a.cols;
  LATTE_REQUIRE(int64_t(a.data.size()) == m * n, ErrorCode::internal, "svd_top: matrix data holds ", a.data.size(),
                " values for shape [", m, ", ", n, "]");
  LATTE_REQUIRE(m >= n, ErrorCode::invalid_argument, "svd_top: matrix [", m, ", ", n,
                "] is wide; the Gram route needs rows >= columns (use svd_thin)");
  LATTE_REQUIRE(rank >= 1 && rank <= n, ErrorCode::invalid_argument, "svd_top: rank ", rank, " outside [1, ", n, "]");
  LATTE_REQUIRE(m <= INT_MAX && n <= INT_MAX, ErrorCode::invalid_argument, "svd_top: matrix [", m, ", ", n,
                "] exceeds BLAS/LAPACK's 32-bit dimensions");
  for (size_t i = 0; i < a.data.size(); ++i)
    LATTE_REQUIRE(std::isfinite(a.data[i]), ErrorCode::numerics, "svd_top: entry (", int64_t(i) / n, ", ",
                  int64_t(i) % n, ") of a [", m, ", ", n, "] matrix is ", a.data[i]);

  MatrixD g(n, n);  // upper triangle of a^T a
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(m), 1.0, a.data.data(), int(n), 0.0,
              g.data.data(), int(n));
  TopSvd r;
  for (int64_t i = 0; i < n; ++i) r.total_energy += g(i, i);

  // Eigenpairs il..iu (1-based, ascending) = the `rank` largest.
  std::vector<double> w(static_cast<size_t>(n));
  MatrixD z(n, rank);
  std::vector<lapack_int> support(size_t(2 * rank));
  lapack_int found = 0;
  LATTE_LAPACK_CHECK(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', lapack_int(n), g.data.data(), lapack_int(n), 0.0,
                                    0.0, lapack_int(n - rank + 1), lapack_int(n), 0.0, &found, w.data(),
                                    z.data.data(), lapack_int(rank), support.data()));
  LATTE_REQUIRE(found == rank, ErrorCode::numerics, "svd_top: LAPACKE_dsyevr found ", found, " of ", rank,
                " eigenpairs");

  r.s.resize(size_t(rank));
  r.vt = MatrixD(rank, n);
  for (int64_t k = 0; k < rank; ++k) {
    const int64_t src = rank - 1 - k;  // ascending -> descending
    r.s[size_t(k)] = std::sqrt(std::max(0.0, w[size_t(src)]));
    for (int64_t c = 0; c < n; ++c) r.vt(k, c) = z(c, src);
  }
  r.av = MatrixD(m, rank);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rank), int(n), 1.0, a.data.data(), int(n),
              r.vt.data.data(), int(n), 0.0, r.av.data.data(), int(rank));
  return r;
}

}  // namespace latte
