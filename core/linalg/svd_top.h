// The leading singular triplets of a tall float64 matrix, from its Gram matrix: a [m, n], m >= n,
// G = a^T a [n, n] (BLAS dsyrk), the `rank` largest eigenpairs of G (LAPACK dsyevr) give
// s_k = sqrt(lambda_k) and the right singular vectors v_k; a . v_k (= s_k u_k) comes from one
// product with a, so nothing is divided by a small singular value.
//
// Why: MHA2MLA factorizes [k_nope; v] per layer, [7936, 4096] for Llama-2-7B, and needs only its
// top D = 1024 triplets. dgesdd computes all of them and u in full: about 2e12 flops a layer,
// minutes on a CPU; this is about 3e11, mostly in dsyrk at BLAS speed. The price is the squared
// condition number in G: eigenvalues below ~1e-16 of the largest are noise. The directions kept
// are those of the largest singular values, which G resolves to full precision, and at full rank
// av . vt = a . V V^T reproduces a to rounding whatever the spectrum.
#pragma once
#include <cstdint>
#include <vector>

#include "core/linalg/matrix.h"

namespace latte {

struct TopSvd {
  std::vector<double> s;  // [rank], descending, >= 0
  MatrixD vt;             // [rank, n], orthonormal rows
  MatrixD av;             // [m, rank] = a . vt^T = u . diag(s)
  double total_energy = 0;  // ||a||_F^2 = sum of all s^2
};

// Throws numerics for a NaN/Inf entry or when LAPACK does not converge; invalid_argument for
// m < n (use svd_thin), rank outside [1, n], or sizes past LAPACK's 32-bit indices.
TopSvd svd_top(const MatrixD& a, int64_t rank);

}  // namespace latte
