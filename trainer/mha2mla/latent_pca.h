// Activation-aware latent initialisation (issue 17; TransMLA, arXiv 2502.07864): instead of the
// SVD of the weights [k_nope; v] (blind to which directions the inputs use and to the scales of
// keys and values), take as the latent basis the top principal directions of the *outputs*
// [K_nope / alpha ; V] over calibration tokens.
//
// With u the attention input and S = E[u^T u] (attention_input_moments.h), B = [k_nope/alpha; v]
// [R, dim] has output second moment C = B S B^T [R, R] = Q diag(lambda) Q^T. Keeping the D
// leading eigenvectors Q_D [R, D]:
//   down = Q_D^T B                  (the latent is the projection of the balanced outputs)
//   k_up = alpha * (rows of Q_D for the keys),  v_up = rows of Q_D for the values,
// so k_up . down = alpha Q_k Q_D^T B: at D = rank the 1/alpha folded into the key rows and the alpha
// folded into the key up-projection cancel and the scores are those of the source; below it,
// alpha only decides how keys and values share the latent. Among all rank-D projections of the
// balanced outputs this one keeps the most E||.||^2 (Eckart-Young on C).
#pragma once
#include <cstdint>

#include "core/linalg/matrix.h"
#include "trainer/mha2mla/kv_latent.h"

namespace latte {

// alpha = mean over key channels of sqrt(E[k_c^2]) / the same mean over value channels: the issue's
// "mean channel norm of K_nope / mean channel norm of V" (norms over the calibration tokens; the
// token count cancels). 1 when either side has no channel or no energy, so the balancing is a no-op.
double key_value_balance(const MatrixD& k_nope, const MatrixD& v, const MatrixD& s);

struct LatentPca {
  KvLatent latent;
  double alpha = 1;                 // the key scale used
  double balanced_energy_kept = 1;  // sum of the D leading eigenvalues of C / their total
};

// k_nope [rk, dim], v [rv, dim], s [dim, dim] (symmetric PSD), 1 <= rank <= min(rk + rv, dim);
// alpha > 0 (key_value_balance for the balanced PCA, 1 for an unbalanced one). s is damped by
// 1e-8 of its mean diagonal so that weight directions the calibration never excited still get a
// (last) place in the basis: a full-rank latent then reproduces the weights whatever the text.
LatentPca balanced_joint_pca(const MatrixD& k_nope, const MatrixD& v, const MatrixD& s, int64_t rank, double alpha);

}  // namespace latte
