// MLA attention as MHA2MLA builds it (shared/notes/mha2mla-spec.md sections 2.5, 3.5, 4):
//   latent  c      = W_dkv xn                      [L]        one per token, shared by all heads
//   RoPE keys      = RoPE(W_kr xn)                 [Hkv, R]   per KV head, partial frequencies
//   no-RoPE keys   = W_uk c                        [Hkv, dc]
//   values         = W_uv c                        [Hkv, hd]
//   key head j     = [RoPE keys_j | no-RoPE keys_j]; query heads are [rope | nope] by weight surgery
// The cache holds c and the RoPE keys: Hkv*R + L elements per token per layer.
//
// Expanded form (training, prefill): up-project every cached latent and run ordinary attention.
// Absorbed form (decode): fold W_uk into the query (q_lat_h = W_uk_j^T q_nope_h, width L), attend
// over [latent | RoPE keys] directly (Backend::mla_absorbed_attention), then apply W_uv_j to the
// attended latent. Both at run time from the same weights: nothing is pre-merged, so the cost of
// absorption is Hq*dc*L per token instead of a merged d x (Hq*L) matrix (spec section 4.1).
#include <cstring>

#include "core/model/attention_block.h"

namespace latte::detail {

namespace {

// This rank's heads; the latent width L is the whole model's (W_dkv and the latent are replicated).
struct MlaDims {
  int64_t Hq, Hkv, hd, R, dc, L, group;
  explicit MlaDims(const AttentionContext& a)
      : Hq(a.n_heads), Hkv(a.n_kv_heads), hd(a.c.head_dim), R(a.c.rope_dim()), dc(a.c.nope_dim()),
        L(a.c.kv_lora_rank()), group(a.n_heads / a.n_kv_heads) {}
};

// y[M,K] += a[M,N] . w[N,K]: the input-gradient product of a linear layer, reused here to apply
// W_uk (stored [Hkv*dc, L]) from the left without materialising its transpose.
void matmul_accumulate(Backend& be, Tensor& y, const Tensor& a, const Tensor& w) {
  be.linear_backward(&y, nullptr, a, y, w);
}

// Copies src [N, width] into rows [pos, pos+T) of each batch row of dst [B, max_seq, ...].
void write_cache(Tensor& dst, const Tensor& src, int64_t B, int64_t T, int64_t pos, int64_t width) {
  const float* s = src.f32();
  float* d = dst.f32();
  const int64_t max_seq = dst.dim(1);
  for (int64_t b = 0; b < B; ++b) std::memcpy(d + (b * max_seq + pos) * width, s + b * T * width, size_t(T * width) * 4);
}

// k[N, Hkv, hd] = [k_rope[N, Hkv, R] | k_nope[N, Hkv*dc]] per KV head.
void assemble_keys(Tensor& k, const Tensor& k_rope, const Tensor& k_nope, int64_t N, const MlaDims& d) {
  float* kp = k.f32();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < d.Hkv; ++j) {
      float* dst = kp + (n * d.Hkv + j) * d.hd;
      if (d.R > 0) std::memcpy(dst, k_rope.f32() + (n * d.Hkv + j) * d.R, size_t(d.R) * 4);
      if (d.dc > 0) std::memcpy(dst + d.R, k_nope.f32() + (n * d.Hkv + j) * d.dc, size_t(d.dc) * 4);
    }
}

// The inverse of assemble_keys for gradients.
void split_keys(const Tensor& dk, Tensor& dk_rope, Tensor& dk_nope, int64_t N, const MlaDims& d) {
  const float* kp = dk.f32();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < d.Hkv; ++j) {
      const float* src = kp + (n * d.Hkv + j) * d.hd;
      if (d.R > 0) std::memcpy(dk_rope.f32() + (n * d.Hkv + j) * d.R, src, size_t(d.R) * 4);
      if (d.dc > 0) std::memcpy(dk_nope.f32() + (n * d.Hkv + j) * d.dc, src + d.R, size_t(d.dc) * 4);
    }
}

// Latent and rotated RoPE keys of the new tokens: latent[N, L], k_rope[N, Hkv, R].
void project_kv(const AttentionContext& a, const Tensor& xn, std::span<const int32_t> positions, const MlaDims& d,
                Tensor& latent, Tensor& k_rope) {
  const int64_t N = xn.dim(0);
  latent = Tensor::empty({N, d.L});
  a.be.linear_forward(latent, xn, a.w.w_dkv, false);
  k_rope = Tensor::empty({N, d.Hkv, d.R});
  if (d.R > 0) {
    Tensor kr2 = k_rope.reshape({N, d.Hkv * d.R});
    a.be.linear_forward(kr2, xn, a.w.w_kr, false);
    a.be.rope_forward(k_rope, positions, a.k_rope);
  }
}

// Queries [N, Hq, hd] after partial RoPE.
Tensor project_q(const AttentionContext& a, const Tensor& xn, std::span<const int32_t> positions, const MlaDims& d) {
  const int64_t N = xn.dim(0);
  Tensor q = Tensor::empty({N, d.Hq, d.hd});
  Tensor q2 = q.reshape({N, d.Hq * d.hd});
  a.be.linear_forward(q2, xn, a.w.wq, false);
  a.be.rope_forward(q, positions, a.q_rope);
  return q;
}

// Keys and values [N, Hkv, hd] from latents [N, L] and rotated RoPE keys [N, Hkv, R].
void expand_kv(const AttentionContext& a, const Tensor& latent, const Tensor& k_rope, const MlaDims& d, Tensor& k,
               Tensor& v) {
  const int64_t N = latent.dim(0);
  Tensor k_nope = Tensor::empty({N, d.Hkv * d.dc});
  if (d.dc > 0) a.be.linear_forward(k_nope, latent, a.w.w_uk, false);
  k = Tensor::empty({N, d.Hkv, d.hd});
  assemble_keys(k, k_rope, k_nope, N, d);
  v = Tensor::empty({N, d.Hkv, d.hd});
  Tensor v2 = v.reshape({N, d.Hkv * d.hd});
  a.be.linear_forward(v2, latent, a.w.w_uv, false);
}

void absorbed_attention(const AttentionContext& a, const Tensor& q, int64_t B, int64_t T, KvCache& cache, int64_t S,
                        const MlaDims& d, Tensor& att) {
  const int64_t N = B * T, G = d.group;
  // Split the queries: q_rope [B,T,Hq,R] as is; q_lat [B,T,Hq,L] = W_uk_j^T q_nope per KV group j.
  Tensor q_rope = Tensor::empty({B, T, d.Hq, d.R});
  Tensor q_lat = Tensor::zeros({B, T, d.Hq, d.L});
  Tensor nope_j = Tensor::empty({N * G, d.dc});
  Tensor lat_j = Tensor::empty({N * G, d.L});
  const float* qp = q.f32();
  for (int64_t i = 0; i < N * d.Hq; ++i) std::memcpy(q_rope.f32() + i * d.R, qp + i * d.hd, size_t(d.R) * 4);
  for (int64_t j = 0; j < d.Hkv && d.dc > 0; ++j) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g)
        std::memcpy(nope_j.f32() + (n * G + g) * d.dc, qp + (n * d.Hq + j * G + g) * d.hd + d.R, size_t(d.dc) * 4);
    lat_j.fill(0.0f);
    matmul_accumulate(a.be, lat_j, nope_j, a.w.w_uk.slice(j * d.dc, (j + 1) * d.dc));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g)
        std::memcpy(q_lat.f32() + (n * d.Hq + j * G + g) * d.L, lat_j.f32() + (n * G + g) * d.L, size_t(d.L) * 4);
  }
  Tensor o_lat = Tensor::empty({B, T, d.Hq, d.L});
  a.be.mla_absorbed_attention(o_lat, q_rope, q_lat, cache.k_rope[size_t(a.layer)].narrow(1, 0, S),
                              cache.latent[size_t(a.layer)].narrow(1, 0, S), a.scale);
  // att head h = W_uv_j . o_lat_h, per KV group j.
  Tensor out_j = Tensor::empty({N * G, d.hd});
  for (int64_t j = 0; j < d.Hkv; ++j) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g)
        std::memcpy(lat_j.f32() + (n * G + g) * d.L, o_lat.f32() + (n * d.Hq + j * G + g) * d.L, size_t(d.L) * 4);
    a.be.linear_forward(out_j, lat_j, a.w.w_uv.slice(j * d.hd, (j + 1) * d.hd), false);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g)
        std::memcpy(att.f32() + (n * d.Hq + j * G + g) * d.hd, out_j.f32() + (n * G + g) * d.hd, size_t(d.hd) * 4);
  }
}

}  // namespace

void mla_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att, MlaForm form) {
  const MlaDims d(a);
  const int64_t pos0 = cache.length, S = pos0 + T;
  Tensor latent, k_rope;
  project_kv(a, xn, positions, d, latent, k_rope);
  write_cache(cache.latent[size_t(a.layer)], latent, B, T, pos0, d.L);
  write_cache(cache.k_rope[size_t(a.layer)], k_rope, B, T, pos0, d.Hkv * d.R);
  Tensor q = project_q(a, xn, positions, d);

  const bool absorbed = form == MlaForm::absorbed || (form == MlaForm::automatic && T == 1);
  if (absorbed) {
    absorbed_attention(a, q, B, T, cache, S, d, att);
    return;
  }
  // Expanded: up-project the latents of all S positions (cached prefix included).
  Tensor lat_all = contiguous(cache.latent[size_t(a.layer)].narrow(1, 0, S)).reshape({B * S, d.L});
  Tensor kr_all = contiguous(cache.k_rope[size_t(a.layer)].narrow(1, 0, S)).reshape({B * S, d.Hkv, d.R});
  Tensor k, v;
  expand_kv(a, lat_all, kr_all, d, k, v);
  a.be.attention_forward(att, nullptr, q.reshape({B, T, d.Hq, d.hd}), k.reshape({B, S, d.Hkv, d.hd}),
                         v.reshape({B, S, d.Hkv, d.hd}), a.scale);
}

void mla_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions) {
  const MlaDims d(a);
  Tensor k_rope, k, v;
  project_kv(a, A.xn_attn, positions, d, A.latent, k_rope);
  expand_kv(a, A.latent, k_rope, d, k, v);
  A.q = project_q(a, A.xn_attn, positions, d).reshape({B, T, d.Hq, d.hd});
  A.k = k.reshape({B, T, d.Hkv, d.hd});
  A.v = v.reshape({B, T, d.Hkv, d.hd});
  A.attn_out = Tensor::empty({B, T, d.Hq, d.hd});
  A.lse = Tensor::empty({B, d.Hq, T});
  a.be.attention_forward(A.attn_out, &A.lse, A.q, A.k, A.v, a.scale);
}

void mla_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G) {
  const MlaDims d(a);
  const int64_t N = B * T;
  Tensor dq = Tensor::empty({B, T, d.Hq, d.hd});
  Tensor dk = Tensor::empty({B, T, d.Hkv, d.hd});
  Tensor dv = Tensor::empty({B, T, d.Hkv, d.hd});
  a.be.attention_backward(dq, dk, dv, datt, A.q, A.k, A.v, A.attn_out, A.lse, a.scale);

  Tensor dq3 = dq.reshape({N, d.Hq, d.hd});
  a.be.rope_backward(dq3, positions, a.q_rope);
  a.be.linear_backward(&dxn, &G.wq, dq.reshape({N, d.Hq * d.hd}), A.xn_attn, a.w.wq);

  Tensor dk_rope = Tensor::empty({N, d.Hkv, d.R}), dk_nope = Tensor::empty({N, d.Hkv * d.dc});
  split_keys(dk, dk_rope, dk_nope, N, d);
  if (d.R > 0) {
    a.be.rope_backward(dk_rope, positions, a.k_rope);
    a.be.linear_backward(&dxn, &G.w_kr, dk_rope.reshape({N, d.Hkv * d.R}), A.xn_attn, a.w.w_kr);
  }
  // The latent feeds the no-RoPE keys and the values: its gradient sums both.
  Tensor dlatent = Tensor::zeros({N, d.L});
  if (d.dc > 0) a.be.linear_backward(&dlatent, &G.w_uk, dk_nope, A.latent, a.w.w_uk);
  a.be.linear_backward(&dlatent, &G.w_uv, dv.reshape({N, d.Hkv * d.hd}), A.latent, a.w.w_uv);
  if (a.comm.size() == 1) {
    a.be.linear_backward(&dxn, &G.w_dkv, dlatent, A.xn_attn, a.w.w_dkv);
    return;
  }
  // W_dkv is replicated but dlatent holds only this rank's heads' share: the input gradient stays
  // partial (the caller all-reduces dxn), the weight gradient is summed here.
  Tensor dw = Tensor::zeros(G.w_dkv.shape());
  a.be.linear_backward(&dxn, &dw, dlatent, A.xn_attn, a.w.w_dkv);
  a.comm.all_reduce(dw, ReduceOp::sum);
  a.be.add_inplace(G.w_dkv, dw);
}

}  // namespace latte::detail
