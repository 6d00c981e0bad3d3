// Llama attention (MHA when Hkv == Hq, GQA otherwise): q, k, v projections, RoPE on q and k,
// causal attention with query head h reading KV head h / (Hq/Hkv). The cache holds k (after
// RoPE) and v per position: 2 * Hkv * hd elements per token per layer.
#include <cstring>

#include "core/model/attention_block.h"

namespace latte::detail {

namespace {

// Copies src [B*T, H, d] into dst [B, max_seq, H, d] at positions pos .. pos+T-1.
void write_cache(Tensor& dst, const Tensor& src, int64_t B, int64_t T, int64_t pos) {
  const int64_t row = dst.dim(2) * dst.dim(3);
  const float* s = src.f32();
  float* d = dst.f32();
  for (int64_t b = 0; b < B; ++b) std::memcpy(d + (b * dst.dim(1) + pos) * row, s + b * T * row, size_t(T * row) * 4);
}

}  // namespace

void gqa_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att) {
  const ModelConfig& c = a.c;
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T, pos0 = cache.length, S = pos0 + T;
  Tensor q = Tensor::empty({BT, Hq, c.head_dim});
  Tensor k = Tensor::empty({BT, Hkv, c.head_dim});
  Tensor v = Tensor::empty({BT, Hkv, c.head_dim});
  Tensor q2 = q.reshape({BT, qd}), k2 = k.reshape({BT, kvd}), v2 = v.reshape({BT, kvd});
  a.be.linear_forward(q2, xn, a.w.wq, false);
  a.be.linear_forward(k2, xn, a.w.wk, false);
  a.be.linear_forward(v2, xn, a.w.wv, false);
  a.be.rope_forward(q, positions, a.q_rope);
  a.be.rope_forward(k, positions, a.k_rope);
  Tensor& kc = cache.k[size_t(a.layer)];
  Tensor& vc = cache.v[size_t(a.layer)];
  write_cache(kc, k, B, T, pos0);
  write_cache(vc, v, B, T, pos0);
  a.be.attention_forward(att, nullptr, q.reshape({B, T, Hq, c.head_dim}), kc.narrow(1, 0, S), vc.narrow(1, 0, S),
                         a.scale);
}

void gqa_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions) {
  const ModelConfig& c = a.c;
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T;
  A.q = Tensor::empty({B, T, Hq, c.head_dim});
  A.k = Tensor::empty({B, T, Hkv, c.head_dim});
  A.v = Tensor::empty({B, T, Hkv, c.head_dim});
  Tensor q2 = A.q.reshape({BT, qd}), k2 = A.k.reshape({BT, kvd}), v2 = A.v.reshape({BT, kvd});
  a.be.linear_forward(q2, A.xn_attn, a.w.wq, false);
  a.be.linear_forward(k2, A.xn_attn, a.w.wk, false);
  a.be.linear_forward(v2, A.xn_attn, a.w.wv, false);
  Tensor q3 = A.q.reshape({BT, Hq, c.head_dim}), k3 = A.k.reshape({BT, Hkv, c.head_dim});
  a.be.rope_forward(q3, positions, a.q_rope);
  a.be.rope_forward(k3, positions, a.k_rope);
  A.attn_out = Tensor::empty({B, T, Hq, c.head_dim});
  A.lse = Tensor::empty({B, Hq, T});
  a.be.attention_forward(A.attn_out, &A.lse, A.q, A.k, A.v, a.scale);
}

void gqa_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G) {
  const ModelConfig& c = a.c;
  const int64_t Hq = a.n_heads, Hkv = a.n_kv_heads, qd = Hq * c.head_dim, kvd = Hkv * c.head_dim;
  const int64_t BT = B * T;
  Tensor dq = Tensor::empty({B, T, Hq, c.head_dim});
  Tensor dk = Tensor::empty({B, T, Hkv, c.head_dim});
  Tensor dv = Tensor::empty({B, T, Hkv, c.head_dim});
  a.be.attention_backward(dq, dk, dv, datt, A.q, A.k, A.v, A.attn_out, A.lse, a.scale);
  Tensor dq3 = dq.reshape({BT, Hq, c.head_dim}), dk3 = dk.reshape({BT, Hkv, c.head_dim});
  a.be.rope_backward(dq3, positions, a.q_rope);
  a.be.rope_backward(dk3, positions, a.k_rope);
  Tensor dq2 = dq.reshape({BT, qd}), dk2 = dk.reshape({BT, kvd}), dv2 = dv.reshape({BT, kvd});
  a.be.linear_backward(&dxn, &G.wq, dq2, A.xn_attn, a.w.wq);
  a.be.linear_backward(&dxn, &G.wk, dk2, A.xn_attn, a.w.wk);
  a.be.linear_backward(&dxn, &G.wv, dv2, A.xn_attn, a.w.wv);
}

}  // namespace latte::detail
