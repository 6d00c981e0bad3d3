#include "core/linalg/svd.h"

#include <lapacke.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "core/linalg/lapack_check.h"

namespace latte {

Svd svd_thin(const MatrixD& a) {
  const int64_t m = a.rows, n = a.cols, k = std::min(m, n);
  LATTE_REQUIRE(int64_t(a.data.size()) == m * n, ErrorCode::internal, "svd_thin: matrix data holds ",
                a.data.size(), " values for shape [", m, ", ", n, "]");
  LATTE_REQUIRE(m <= INT_MAX && n <= INT_MAX, ErrorCode::invalid_argument, "svd_thin: matrix [", m, ", ", n,
                "] exceeds LAPACK's 32-bit dimensions");
  for (size_t i = 0; i < a.data.size(); ++i)
    LATTE_REQUIRE(std::isfinite(a.data[i]), ErrorCode::numerics, "svd_thin: entry (", int64_t(i) / n, ", ",
                  int64_t(i) % n, ") of a [", m, ", ", n, "] matrix is ", a.data[i]);
  Svd r{MatrixD(m, k), std::vector<double>(size_t(k)), MatrixD(k, n)};
  if (k == 0) return r;
  MatrixD work = a;  // dgesdd destroys its input
  // jobz 'S': the thin factors. Row-major leading dimensions are row lengths: u has k columns,
  // vt has n. (The row-major wrapper checks ldvt >= n whatever jobz is, env-feasibility.md pitfall 9.)
  LATTE_LAPACK_CHECK(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lapack_int(m), lapack_int(n), work.data.data(),
                                    lapack_int(n), r.s.data(), r.u.data.data(), lapack_int(k), r.vt.data.data(),
                                    lapack_int(n)));
  return r;
}

}  // namespace latte
