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

// ---- memory: a strided view of a flat storage vector (shape, strides in elements, offset) ----
// Element i (row-major over shape, index (i_0, ..., i_{n-1})) of the view is
// storage[offset + sum_d i_d * strides[d]]. A 0-d shape is one element.
struct StridedView {
  std::vector<int64_t> shape, strides;
  int64_t offset = 0;
};
Vec gather_strided(const Vec& storage, const StridedView& v);  // the view's elements, row-major
// storage with the view's elements replaced by values (row-major, numel(shape) of them).
Vec scatter_strided(const Vec& storage, const StridedView& v, const Vec& values);
Vec fill_strided(const Vec& storage, const StridedView& v, double value);  // scatter of a constant

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
// Vocabulary slice: table [V,D] holds rows [vocab_begin, vocab_begin + V) of the whole vocabulary;
// out[t] = table[tokens[t] - vocab_begin] in the slice, else zeros; the backward scatters only the
// tokens in the slice (dtable [V,D]).
Vec embedding_slice_forward(const Ids& tokens, const Vec& table, int64_t V, int64_t D, int64_t vocab_begin);
Vec embedding_slice_backward(const Ids& tokens, const Vec& dout, int64_t V, int64_t D, int64_t vocab_begin);

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

// ---- paged KV cache (Backend::PagedBatch): a cache is [num_slots, W] rows, slot = block *
// block_size + offset; key position p of sequence s is in slot block_table[s * max_blocks +
// p / block_size] * block_size + p % block_size. ----
struct PagedLayout {
  Ids query_start;  // [S+1]
  Ids context_len;  // [S]
  Ids block_table;  // [S * max_blocks]
  int64_t max_blocks = 0, block_size = 0;
};
// cache with rows[n] (each W values) copied into slot slots[n].
Vec paged_cache_write(const Vec& cache, const Vec& rows, const Ids& slots, int64_t W);
// Symmetric int8 quantization of rows [N, W]: scale[n] = max_i |x[n,i]| / 127 (0 for a zero row),
// q[n,i] = round(x / scale) (ties to even) clamped to [-127, 127], 0 where scale is 0.
struct I8Rows {
  Vec q;      // [N, W], integers
  Vec scale;  // [N]
};
I8Rows quantize_i8_rows(const Vec& rows, int64_t N, int64_t W);
// Causal GQA attention of a ragged batch: q[N,Hq,Dk], k_cache [num_slots,Hkv,Dk], v_cache
// [num_slots,Hkv,Dv] -> out[N,Hq,Dv]; query i of sequence s sits at position context_len[s] - n_s
// + i and sees keys 0..that position; query head h reads KV head h / (Hq/Hkv).
struct PagedAttentionShape {
  int64_t N, Hq, Hkv, Dk, Dv;
};
Vec paged_attention(const Vec& q, const Vec& k_cache, const Vec& v_cache, const PagedLayout& p,
                    const PagedAttentionShape& s, double scale);
// Absorbed MLA over a ragged batch: q_rope[N,Hq,R], q_lat[N,Hq,L], k_rope_cache [num_slots,Hkv,R],
// latent_cache [num_slots,L] (each times its scales[slot] when those are non-empty: an i8 cache's
// codes) -> out[N,Hq,L] = sum_j softmax_j(scale (q_rope . k_rope_j + q_lat . latent_j)) latent_j.
struct PagedMlaShape {
  int64_t N, Hq, Hkv, R, L;
};
Vec paged_mla_attention(const Vec& q_rope, const Vec& q_lat, const Vec& k_rope_cache, const Vec& k_rope_scales,
                        const Vec& latent_cache, const Vec& latent_scales, const PagedLayout& p,
                        const PagedMlaShape& s, double scale);

// ---- swiglu: h = silu(gate) * up, elementwise ----
Vec swiglu_forward(const Vec& gate, const Vec& up);
struct SwigluGrads {
  Vec dgate, dup;
};
SwigluGrads swiglu_backward(const Vec& dh, const Vec& gate, const Vec& up);

// ---- cross entropy over logits[T,V]; negative targets are ignored (loss 0, zero gradient) ----
Vec cross_entropy_forward(const Vec& logits, const Ids& targets, int64_t T, int64_t V);  // losses [T]
Vec cross_entropy_backward(const Vec& logits, const Ids& targets, int64_t T, int64_t V, double scale);

// Cross entropy over a vocabulary slice: logits[N,V] are columns [vocab_begin, vocab_begin + V)
// of the whole vocabulary. The three forward steps (the caller combines ranks in between: max of
// row_max, sum of sum_exp and target_logit), then the backward of one slice.
Vec cross_entropy_slice_max(const Vec& logits, int64_t N, int64_t V);  // row_max [N]
struct CeSliceSums {
  Vec sum_exp;       // [N] sum_v exp(logits[n,v] - row_max[n])
  Vec target_logit;  // [N] logits[n, targets[n] - vocab_begin] in the slice, else 0
};
CeSliceSums cross_entropy_slice_sums(const Vec& logits, const Vec& row_max, const Ids& targets, int64_t N, int64_t V,
                                     int64_t vocab_begin);
struct CeSliceLosses {
  Vec losses;  // [N] lse - target_logit, 0 for targets < 0
  Vec lse;     // [N] row_max + log(sum_exp)
};
CeSliceLosses cross_entropy_slice_losses(const Vec& row_max, const Vec& sum_exp, const Vec& target_logit,
                                         const Ids& targets);
// dlogits [N,V] = scale * (exp(logits - lse) - onehot(targets - vocab_begin)); zero rows for targets < 0.
Vec cross_entropy_slice_backward(const Vec& logits, const Vec& lse, const Ids& targets, int64_t N, int64_t V,
                                 int64_t vocab_begin, double scale);

// ---- elementwise: y + x ----
Vec add(const Vec& y, const Vec& x);

}  // namespace latte::reference
