// The float64 oracle: every op of backend.h, forward and backward, written the obvious way on
// flat row-major std::vector<double> with explicit sizes. No Tensor, no BLAS, no OpenMP, no
// cleverness: the textbook formula, so that a reader can check it against the maths and every
// backend (cpu/, cuda/) can be tested against it.
//
// Unlike the backends, every function here returns fresh results ("="); a test of a "+="
// backend method compares against init + reference. Inputs are assumed valid (the backends
// validate); sizes that do not match the vectors throw invalid_argument so that a test bug is loud.
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend/backend.h"  // RopeLayout only

namespace latte::reference {

using Vec = std::vector<double>;
using Ids = std::vector<int32_t>;

// ---- linear: y[M,N] = x[M,K] . w[N,K]^T ----
Vec linear_forward(const Vec& x, const Vec& w, int64_t M, int64_t K, int64_t N);
struct LinearGrads {
  Vec dx;  // [M,K] = dy . w
  Vec dw;  // [N,K] = dy^T . x
};
LinearGrads linear_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t M, int64_t K, int64_t N);

// ---- embedding: out[T,D] = table[tokens[t], :], table [V,D] ----
Vec embedding_forward(const Ids& tokens, const Vec& table, int64_t V, int64_t D);
Vec embedding_backward(const Ids& tokens, const Vec& dout, int64_t V, int64_t D);  // dtable [V,D]

// ---- rmsnorm: y[T,D] = x * rstd * w, rstd[t] = 1/sqrt(mean(x[t]^2) + eps) ----
struct RmsnormOut {
  Vec y;     // [T,D]
  Vec rstd;  // [T]
};
RmsnormOut rmsnorm_forward(const Vec& x, const Vec& w, int64_t T, int64_t D, double eps);
struct RmsnormGrads {
  Vec dx;  // [T,D]
  Vec dw;  // [D]
};
RmsnormGrads rmsnorm_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t T, int64_t D, double eps);

// ---- rope on x[T, H, head_dim]: pair j rotates by positions[t] * theta^(-2j/head_dim) ----
struct RopeShape {
  int64_t T, H, head_dim;
  RopeLayout layout;
  double theta;
  Ids pair_freqs = {};   // [H * head_dim/2] frequency index per slot pair, -1 unrotated; empty: standard
  int64_t freq_dim = 0;  // 0: head_dim
};
Vec rope_forward(const Vec& x, const Ids& positions, const RopeShape& s);
Vec rope_backward(const Vec& dy, const Ids& positions, const RopeShape& s);  // rotation by -angle

// ---- causal GQA attention: q[B,T,Hq,Dk], k[B,S,Hkv,Dk], v[B,S,Hkv,Dv] -> out[B,T,Hq,Dv] ----
// Query t sits at position S-T+t and sees keys 0..S-T+t; query head h reads KV head h/(Hq/Hkv).
struct AttentionShape {
  int64_t B, T, S, Hq, Hkv, Dk, Dv;
};
struct AttentionOut {
  Vec out;  // [B,T,Hq,Dv]
  Vec lse;  // [B,Hq,T], log-sum-exp of the scaled scores
};
AttentionOut attention_forward(const Vec& q, const Vec& k, const Vec& v, const AttentionShape& s, double scale);
struct AttentionGrads {
  Vec dq, dk, dv;  // shapes of q, k, v
};
AttentionGrads attention_backward(const Vec& dout, const Vec& q, const Vec& k, const Vec& v, const AttentionShape& s,
                                  double scale);

// ---- swiglu: h = silu(gate) * up, elementwise ----
Vec swiglu_forward(const Vec& gate, const Vec& up);
struct SwigluGrads {
  Vec dgate, dup;
};
SwigluGrads swiglu_backward(const Vec& dh, const Vec& gate, const Vec& up);

// ---- cross entropy over logits[T,V]; negative targets are ignored (loss 0, zero gradient) ----
Vec cross_entropy_forward(const Vec& logits, const Ids& targets, int64_t T, int64_t V);  // losses [T]
Vec cross_entropy_backward(const Vec& logits, const Ids& targets, int64_t T, int64_t V, double scale);

// ---- elementwise: y + x ----
Vec add(const Vec& y, const Vec& x);

}  // namespace latte::reference
