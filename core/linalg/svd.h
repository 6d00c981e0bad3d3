// Thin singular value decomposition of a float64 matrix (LAPACK dgesdd, divide and conquer):
// a [m, n] = u [m, k] . diag(s [k]) . vt [k, n], k = min(m, n), s descending and >= 0, the
// columns of u and the rows of vt orthonormal. Singular vectors are unique only up to sign (and
// rotation within repeated singular values), so callers compare reconstructions, never entries
// (shared/notes/mha2mla-spec.md 3.7).
#pragma once
#include <vector>

#include "core/linalg/matrix.h"

namespace latte {

struct Svd {
  MatrixD u;              // [m, k]
  std::vector<double> s;  // [k], descending
  MatrixD vt;             // [k, n]
};

// Throws numerics for a NaN/Inf entry or when LAPACK does not converge, invalid_argument for a
// matrix too large for LAPACK's 32-bit indices.
Svd svd_thin(const MatrixD& a);

}  // namespace latte
