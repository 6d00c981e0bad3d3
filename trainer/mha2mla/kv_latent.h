// One layer's factorized K/V side as the MLA checkpoint stores it (core/model/model_tensors.h),
// whichever method made it (SVD of the weights, or the activation-aware PCA of latent_pca.h):
//   c = u . down^T (the cached latent), k_nope = c . k_up^T, v = c . v_up^T.
// And the measure both methods are judged by in the conversion report (issue 17): how much of the
// calibration activations' energy the factorization keeps, rather than how much of the weights'.
#pragma once
#include <cstdint>

#include "core/linalg/matrix.h"

namespace latte {

struct KvLatent {
  MatrixD down;  // [D, dim]              kv_a_proj
  MatrixD k_up;  // [n_kv * d_nope, D]    k_b_proj
  MatrixD v_up;  // [n_kv * head_dim, D]  v_b_proj
};

// Of the outputs y = a u over inputs u with second moment s = E[u^T u], the fraction of E||y||^2
// that the factorization up . down keeps: 1 - E||(a - up down) u||^2 / E||a u||^2 (1 when a's
// outputs carry no energy). a [rows, dim], up [rows, D], down [D, dim], s [dim, dim]. Can be
// negative when up . down is a poor approximation.
double output_energy_kept(const MatrixD& a, const MatrixD& up, const MatrixD& down, const MatrixD& s);

// The same for the keys and the values of a latent, against the source rows k_nope and v.
struct KvEnergy {
  double keys = 1, values = 1;
};
KvEnergy kv_energy_kept(const MatrixD& k_nope, const MatrixD& v, const KvLatent& f, const MatrixD& s);

}  // namespace latte
