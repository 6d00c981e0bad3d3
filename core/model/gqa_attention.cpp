// Llama attention (MHA when Hkv == Hq, GQA otherwise): q, k, v projections (column-parallel by
// heads), RoPE on q and k, causal attention with query head h reading KV head h / (Hq/Hkv). The
// cache holds k (after RoPE) and v per position: 2 * Hkv * hd elements per token per layer.
#include "core/model/attention_block.h"
#include "parallel/tensor_parallel/column_parallel.h"

namespace latte::detail {

namespace tp = tensor_parallel;

void gqa_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att) {
  const ModelConfig& c = a.c;
  Backend& be = a.be();
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T, pos0 = cache.length, S = pos0 + T;
  Tensor q = be.empty({BT, Hq, c.head_dim});
  Tensor k = be.empty({BT, Hkv, c.head_dim});
  Tensor v = be.empty({BT, Hkv, c.head_dim});
  Tensor q2 = q.reshape({BT, qd}), k2 = k.reshape({BT, kvd}), v2 = v.reshape({BT, kvd});
  Tensor* qkv[] = {&q2, &k2, &v2};
  const Tensor* w_qkv[] = {&a.w.wq, &a.w.wk, &a.w.wv};
  tp::column_parallel_forward_group(a.tp, qkv, xn, w_qkv);
  be.rope_forward(q, positions, a.q_rope);
  be.rope_forward(k, positions, a.k_rope);
  Tensor& kc = cache.k[size_t(a.layer)];
  Tensor& vc = cache.v[size_t(a.layer)];
  KvCache::write(be, kc, k, B, T, pos0);
  KvCache::write(be, vc, v, B, T, pos0);
  be.attention_forward(att, nullptr, q.reshape({B, T, Hq, c.head_dim}), kc.narrow(1, 0, S), vc.narrow(1, 0, S),
                       a.scale);
}

void gqa_attention_paged(const AttentionContext& a, const Tensor& xn, const PagedStep& step, PagedKvCache& cache,
                         Tensor& att) {
  const ModelConfig& c = a.c;
  Backend& be = a.be();
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, N = xn.dim(0);
  Tensor q = be.empty({N, Hq, c.head_dim});
  Tensor k = be.empty({N, Hkv, c.head_dim});
  Tensor v = be.empty({N, Hkv, c.head_dim});
  Tensor q2 = q.reshape({N, Hq * c.head_dim}), k2 = k.reshape({N, Hkv * c.head_dim}),
         v2 = v.reshape({N, Hkv * c.head_dim});
  Tensor* qkv[] = {&q2, &k2, &v2};
  const Tensor* w_qkv[] = {&a.w.wq, &a.w.wk, &a.w.wv};
  tp::column_parallel_forward_group(a.tp, qkv, xn, w_qkv);
  be.rope_forward(q, step.positions, a.q_rope);
  be.rope_forward(k, step.positions, a.k_rope);
  Tensor& kc = cache.k[size_t(a.layer)];
  Tensor& vc = cache.v[size_t(a.layer)];
  be.paged_cache_write(kc, nullptr, k, step.slots);
  be.paged_cache_write(vc, nullptr, v, step.slots);
  be.paged_attention(att, q, kc, vc, step.batch, a.scale);
}

void gqa_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions) {
  const ModelConfig& c = a.c;
  Backend& be = a.be();
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T;
  A.q = be.empty({B, T, Hq, c.head_dim});
  A.k = be.empty({B, T, Hkv, c.head_dim});
  A.v = be.empty({B, T, Hkv, c.head_dim});
  Tensor q2 = A.q.reshape({BT, qd}), k2 = A.k.reshape({BT, kvd}), v2 = A.v.reshape({BT, kvd});
  tp::column_parallel_forward(a.tp, q2, A.xn_attn, a.w.wq);
  tp::column_parallel_forward(a.tp, k2, A.xn_attn, a.w.wk);
  tp::column_parallel_forward(a.tp, v2, A.xn_attn, a.w.wv);
  Tensor q3 = A.q.reshape({BT, Hq, c.head_dim}), k3 = A.k.reshape({BT, Hkv, c.head_dim});
  be.rope_forward(q3, positions, a.q_rope);
  be.rope_forward(k3, positions, a.k_rope);
  A.attn_out = be.empty({B, T, Hq, c.head_dim});
  A.lse = be.empty({B, Hq, T});
  be.attention_forward(A.attn_out, &A.lse, A.q, A.k, A.v, a.scale);
}

void gqa_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G) {
  const ModelConfig& c = a.c;
  Backend& be = a.be();
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T;
  Tensor dq = be.empty({B, T, Hq, c.head_dim});
  Tensor dk = be.empty({B, T, Hkv, c.head_dim});
  Tensor dv = be.empty({B, T, Hkv, c.head_dim});
  be.attention_backward(dq, dk, dv, datt, A.q, A.k, A.v, A.attn_out, A.lse, a.scale);
  Tensor dq3 = dq.reshape({BT, Hq, c.head_dim}), dk3 = dk.reshape({BT, Hkv, c.head_dim});
  be.rope_backward(dq3, positions, a.q_rope);
  be.rope_backward(dk3, positions, a.k_rope);
  Tensor dq2 = dq.reshape({BT, qd}), dk2 = dk.reshape({BT, kvd}), dv2 = dv.reshape({BT, kvd});
  tp::column_parallel_backward(a.tp, &dxn, &G.wq, dq2, A.xn_attn, a.w.wq);
  tp::column_parallel_backward(a.tp, &dxn, &G.wk, dk2, A.xn_attn, a.w.wk);
  tp::column_parallel_backward(a.tp, &dxn, &G.wv, dv2, A.xn_attn, a.w.wv);
}

}  // namespace latte::detail
