#include "core/linalg/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <climits>

#include "core/base/error.h"

namespace latte {

MatrixD matmul(const MatrixD& a, const MatrixD& b, Transpose ta, Transpose tb) {
  const bool at = ta == Transpose::yes, bt = tb == Transpose::yes;
  const int64_t m = at ? a.cols : a.rows, k = at ? a.rows : a.cols;
  const int64_t kb = bt ? b.cols : b.rows, n = bt ? b.rows : b.cols;
  LATTE_REQUIRE(k == kb, ErrorCode::invalid_argument, "matmul: inner dimensions ", k, " and ", kb, " differ");
  LATTE_REQUIRE(std::max({m, n, k}) <= INT_MAX, ErrorCode::invalid_argument, "matmul: [", m, ", ", k, "] x [", k,
                ", ", n, "] exceeds BLAS's 32-bit sizes");
  MatrixD c(m, n);
  if (m == 0 || n == 0 || k == 0) return c;
  cblas_dgemm(CblasRowMajor, at ? CblasTrans : CblasNoTrans, bt ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              1.0, a.data.data(), int(a.cols), b.data.data(), int(b.cols), 0.0, c.data.data(), int(n));
  return c;
}

MatrixD row_block(const MatrixD& m, int64_t begin, int64_t end) {
  LATTE_ASSERT(0 <= begin && begin <= end && end <= m.rows);
  MatrixD out(end - begin, m.cols);
  std::copy(m.data.begin() + begin * m.cols, m.data.begin() + end * m.cols, out.data.begin());
  return out;
}

}  // namespace latte
