// RoRoPE (issue 17; TransMLA, arXiv 2502.07864): instead of keeping RoPE on r frequency pairs of
// every KV head (partial_rope.h), rotate the KV heads' RoPE components into one shared RoPE key of
// d_r dims, DeepSeek's layout (core/model/config.h shared_rope_dim).
//
// Why it is exact before truncation: at frequency f, KV head h's key holds one complex pair
// k_{h,f} (two real coordinates). RoPE multiplies every head's pair at f by the same rotation
// R_{p,f}, so a real orthogonal mixing U_f [Hkv, Hkv] across heads, applied to both coordinates
// alike, commutes with it: k'_{j,f} = sum_h U_f[j,h] k_{h,f} is again rotated by R_{p,f}. Query
// head i of KV group g(i) had <q_{i,f}, k_{g(i),f}> = sum_j <U_f[j,g(i)] q_{i,f}, k'_{j,f}>, so it
// reads component j with the query q'_{i,f,j} = U_f[j,g(i)] q_{i,f}. All Hkv * head_dim/2
// components as one shared key (d_r = Hkv * head_dim) reproduce the source's scores exactly.
//
// Which components to keep: U_f's rows are the eigenvectors of the Hkv x Hkv second moment of the
// heads' pairs at f over the calibration tokens, C_f[h,h'] = E[a_h a_h' + b_h b_h'] (the real and
// imaginary parts' moments summed; invariant under RoPE, so taken before it), whose eigenvalues
// are the energies of the rotated components. The d_r/2 components with the largest eigenvalues,
// over all frequencies of the layer, keep RoPE.
//
// The dropped components, as partial RoPE does with its dropped pairs (spec 2.5), lose their
// rotation but not their content: for KV head g at frequency f, the no-RoPE key is the part of
// k_{g,f} on the dropped components, P_f k_{g,f} with P_f = U_drop^T U_drop (per KV head again,
// so it fits the latent's per-head no-RoPE keys), read by the query's own unrotated pair q_{i,f}:
// sum over dropped j of <q'_{i,f,j}, k'_{j,f}> = <q_{i,f}, P_f k_{g(i),f}>. These no-RoPE keys and
// the values then go through the joint SVD or PCA latent as in MHA2MLA. Frequencies whose
// components are all kept have P_f = 0: their no-RoPE rows are zero and stay out of the latent.
#pragma once
#include <cstdint>
#include <vector>

#include "core/linalg/matrix.h"
#include "core/model/config.h"

namespace latte {

// One rotated component: frequency f, component j of U_f (0 = the largest eigenvalue).
struct RoropeComponent {
  int32_t freq = 0, component = 0;
  double energy = 0;  // its eigenvalue: E|k'_{j,f}|^2 over the calibration tokens
};

struct RoropePlan {
  int64_t n_kv_heads = 0, n_pairs = 0;  // Hkv, head_dim/2
  std::vector<MatrixD> rotation;        // [n_pairs] U_f [Hkv, Hkv]: row j = component j
  std::vector<RoropeComponent> kept;    // d_r/2, ordered by (freq, component): the shared key's pairs
  double energy_kept = 1;               // kept eigenvalues / all: the share of the keys' E||k||^2 on RoPE
  // The shared key's frequency list (config.h shared_rope_freqs[l]): kept[s].freq.
  std::vector<int32_t> freqs() const;
  // Components of frequency f that lost RoPE (empty when all Hkv were kept).
  std::vector<int32_t> dropped(int32_t freq) const;
};

// wk [Hkv*head_dim, dim]: the source's key rows (its RoPE layout, which pair_dims resolves); s
// [dim, dim]: E[u^T u] of the layer's attention input (attention_input_moments.h). d_r even, in
// [2, Hkv*head_dim] (invalid_argument naming it otherwise).
RoropePlan rorope_plan(const ModelConfig& c, const MatrixD& wk, const MatrixD& s, int64_t d_r);

// The rotated weights of one layer, rows in the MLA layout of config.h (shared RoPE key):
struct RoropeWeights {
  MatrixD q;       // [n_heads * (d_r + head_dim), dim]: per head [rope d_r | the source's q rows, its order]
  MatrixD k_rope;  // [d_r, dim]: the shared key's rows, pair s = (first, second) of component kept[s]
  MatrixD k_nope;  // [Hkv*head_dim, dim]: P_f k_{g,f} per KV head g, the source's row order (zeros where all kept)
};
RoropeWeights rorope_weights(const ModelConfig& c, const MatrixD& wq, const MatrixD& wk, const RoropePlan& plan);

}  // namespace latte
