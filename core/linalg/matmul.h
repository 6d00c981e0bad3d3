// Products of float64 matrices (BLAS dgemm): the small dense algebra of the conversion, kept
// beside the SVD so callers do not each write their own triple loops.
#pragma once
#include "core/linalg/matrix.h"

namespace latte {

enum class Transpose { no, yes };

// op(a) . op(b), op = transpose or not; inner dimensions must agree (invalid_argument otherwise).
MatrixD matmul(const MatrixD& a, const MatrixD& b, Transpose ta = Transpose::no, Transpose tb = Transpose::no);

// The rows [begin, end) of m.
MatrixD row_block(const MatrixD& m, int64_t begin, int64_t end);

}  // namespace latte
