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
//
// Tensor parallelism (the head-parallel MLA layer, parallel/README.md): W_q, W_kr, W_uk and W_uv
// are column-parallel by heads, so a rank computes, caches and attends only its own heads' RoPE
// keys; W_dkv is a replicated linear, so every rank computes the same latent and keeps the same
// latent cache (DeepSeek-V3 and vLLM shard MLA the same way).
//
// DeepSeek's layout (config.h shared_rope_dim, from the RoRoPE conversion): one RoPE key [1, d_r]
// per token instead of [Hkv, R], read by every query head; query and key heads are [d_r | hd]
// wide (qk), the no-RoPE keys per KV head as above. W_kr is then a replicated linear like W_dkv
// (every rank caches the whole shared key); the expanded form copies the shared key into every
// KV head's [rope | nope] key, and its gradient sums over them. The absorbed kernels need no
// change: a RoPE key cache with one head is the grouped-query case with Hq query heads per head.
#include "core/model/attention_block.h"
#include "parallel/tensor_parallel/column_parallel.h"
#include "parallel/tensor_parallel/replicated_linear.h"

namespace latte::detail {

namespace {

namespace tp = tensor_parallel;

// This rank's heads; the latent width L is the whole model's (W_dkv and the latent are replicated).
// qk: width of a query/key head (hd, or d_r + hd when shared); Hkr: RoPE key heads (Hkv, or 1).
struct MlaDims {
  int64_t Hq, Hkv, hd, qk, R, dc, L, group, Hkr;
  bool shared;
  explicit MlaDims(const AttentionContext& a)
      : Hq(a.n_heads), Hkv(a.n_kv_heads), hd(a.c.head_dim), qk(a.c.qk_head_dim()), R(a.c.rope_dim()),
        dc(a.c.nope_dim()), L(a.c.kv_lora_rank()), group(a.n_heads / a.n_kv_heads),
        Hkr(a.c.rope_key_heads(a.n_kv_heads)), shared(a.c.shared_rope()) {}
};

// y[M,K] += a[M,N] . w[N,K]: the input-gradient product of a linear layer, reused here to apply
// W_uk (stored [Hkv*dc, L]) from the left without materialising its transpose.
void matmul_accumulate(Backend& be, Tensor& y, const Tensor& a, const Tensor& w) {
  be.linear_backward(&y, nullptr, a, y, w);
}

// k[N, Hkv, qk] = [k_rope[N, Hkv, R] | k_nope[N, Hkv*dc]] per KV head; a shared k_rope[N, 1, R]
// goes into every KV head.
void assemble_keys(Backend& be, Tensor& k, const Tensor& k_rope, const Tensor& k_nope, int64_t N, const MlaDims& d) {
  if (d.R > 0) {
    if (d.shared) {
      for (int64_t j = 0; j < d.Hkv; ++j) {
        Tensor rope_part = k.narrow(1, j, j + 1).narrow(2, 0, d.R);
        be.copy(rope_part, k_rope);
      }
    } else {
      Tensor rope_part = k.narrow(2, 0, d.R);
      be.copy(rope_part, k_rope);
    }
  }
  if (d.dc > 0) {
    Tensor nope_part = k.narrow(2, d.R, d.qk);
    be.copy(nope_part, k_nope.reshape({N, d.Hkv, d.dc}));
  }
}

// The inverse of assemble_keys for gradients (shared: the KV heads' RoPE parts summed, in head order).
void split_keys(Backend& be, const Tensor& dk, Tensor& dk_rope, Tensor& dk_nope, int64_t N, const MlaDims& d) {
  const Tensor dk3 = dk.reshape({N, d.Hkv, d.qk});
  if (d.R > 0) {
    if (d.shared) {
      be.copy(dk_rope, dk3.narrow(1, 0, 1).narrow(2, 0, d.R));
      Tensor part = be.empty({N, 1, d.R});
      for (int64_t j = 1; j < d.Hkv; ++j) {
        be.copy(part, dk3.narrow(1, j, j + 1).narrow(2, 0, d.R));
        be.add_inplace(dk_rope, part);
      }
    } else {
      be.copy(dk_rope, dk3.narrow(2, 0, d.R));
    }
  }
  if (d.dc > 0) {
    Tensor nope = dk_nope.reshape({N, d.Hkv, d.dc});
    be.copy(nope, dk3.narrow(2, d.R, d.qk));
  }
}

// Latent and rotated RoPE keys of the new tokens: latent[N, L], k_rope[N, Hkr, R].
void project_kv(const AttentionContext& a, const Tensor& xn, std::span<const int32_t> positions, const MlaDims& d,
                Tensor& latent, Tensor& k_rope) {
  const int64_t N = xn.dim(0);
  latent = a.be().empty({N, d.L});
  tp::replicated_linear_forward(a.tp, latent, xn, a.w.w_dkv);
  k_rope = a.be().empty({N, d.Hkr, d.R});
  if (d.R > 0) {
    Tensor kr2 = k_rope.reshape({N, d.Hkr * d.R});
    if (d.shared) {
      tp::replicated_linear_forward(a.tp, kr2, xn, a.w.w_kr);
    } else {
      tp::column_parallel_forward(a.tp, kr2, xn, a.w.w_kr);
    }
    a.be().rope_forward(k_rope, positions, a.k_rope);
  }
}

// Queries [N, Hq, qk] after partial RoPE.
Tensor project_q(const AttentionContext& a, const Tensor& xn, std::span<const int32_t> positions, const MlaDims& d) {
  const int64_t N = xn.dim(0);
  Tensor q = a.be().empty({N, d.Hq, d.qk});
  Tensor q2 = q.reshape({N, d.Hq * d.qk});
  tp::column_parallel_forward(a.tp, q2, xn, a.w.wq);
  a.be().rope_forward(q, positions, a.q_rope);
  return q;
}

// Keys [N, Hkv, qk] and values [N, Hkv, hd] from latents [N, L] and rotated RoPE keys [N, Hkr, R].
void expand_kv(const AttentionContext& a, const Tensor& latent, const Tensor& k_rope, const MlaDims& d, Tensor& k,
               Tensor& v) {
  Backend& be = a.be();
  const int64_t N = latent.dim(0);
  Tensor k_nope = be.empty({N, d.Hkv * d.dc});
  if (d.dc > 0) tp::column_parallel_forward(a.tp, k_nope, latent, a.w.w_uk);
  k = be.empty({N, d.Hkv, d.qk});
  assemble_keys(be, k, k_rope, k_nope, N, d);
  v = be.empty({N, d.Hkv, d.hd});
  Tensor v2 = v.reshape({N, d.Hkv * d.hd});
  tp::column_parallel_forward(a.tp, v2, latent, a.w.w_uv);
}

// The absorbed form's two ends, for N tokens. The query heads of KV group j are heads
// [jG, (j+1)G): views [N, G, width] of them are regrouped into [N*G, width] matrices so each
// group's W_uk / W_uv slice applies in one GEMM.
Tensor group_heads(const Tensor& t, int64_t j, int64_t G) { return t.narrow(1, j * G, (j + 1) * G); }

// q [N, Hq, qk] -> q_rope [N, Hq, R] as is, q_lat [N, Hq, L] = W_uk_j^T q_nope per KV group j.
void fold_queries(const AttentionContext& a, const Tensor& q, int64_t N, const MlaDims& d, Tensor& q_rope,
                  Tensor& q_lat) {
  Backend& be = a.be();
  const int64_t G = d.group;
  q_rope = be.empty({N, d.Hq, d.R});
  q_lat = be.zeros({N, d.Hq, d.L});
  if (d.R > 0) be.copy(q_rope, q.narrow(2, 0, d.R));
  if (d.dc == 0) return;
  Tensor nope_j = be.empty({N * G, d.dc});
  Tensor lat_j = be.empty({N * G, d.L});
  Tensor nope_j3 = nope_j.reshape({N, G, d.dc}), lat_j3 = lat_j.reshape({N, G, d.L});
  for (int64_t j = 0; j < d.Hkv; ++j) {
    be.copy(nope_j3, group_heads(q, j, G).narrow(2, d.R, d.qk));
    be.fill(lat_j, 0.0f);
    matmul_accumulate(be, lat_j, nope_j, a.w.w_uk.slice(j * d.dc, (j + 1) * d.dc));
    Tensor dst = group_heads(q_lat, j, G);
    be.copy(dst, lat_j3);
  }
}

// att head h [N, Hq, hd] = W_uv_j . o_lat_h [N, Hq, L], per KV group j.
void unfold_output(const AttentionContext& a, const Tensor& o_lat, int64_t N, const MlaDims& d, Tensor& att) {
  Backend& be = a.be();
  const int64_t G = d.group;
  Tensor lat_j = be.empty({N * G, d.L});
  Tensor lat_j3 = lat_j.reshape({N, G, d.L});
  Tensor att3 = att.reshape({N, d.Hq, d.hd});
  Tensor out_j = be.empty({N * G, d.hd});
  const Tensor out_j3 = out_j.reshape({N, G, d.hd});
  for (int64_t j = 0; j < d.Hkv; ++j) {
    be.copy(lat_j3, group_heads(o_lat, j, G));
    tp::column_parallel_forward(a.tp, out_j, lat_j, a.w.w_uv.slice(j * d.hd, (j + 1) * d.hd));
    Tensor dst = group_heads(att3, j, G);
    be.copy(dst, out_j3);
  }
}

void absorbed_attention(const AttentionContext& a, const Tensor& q, int64_t B, int64_t T, KvCache& cache, int64_t S,
                        const MlaDims& d, Tensor& att) {
  Backend& be = a.be();
  const int64_t N = B * T;
  Tensor q_rope, q_lat;
  fold_queries(a, q.reshape({N, d.Hq, d.qk}), N, d, q_rope, q_lat);
  Tensor o_lat = be.empty({B, T, d.Hq, d.L});
  be.mla_absorbed_attention(o_lat, q_rope.reshape({B, T, d.Hq, d.R}), q_lat.reshape({B, T, d.Hq, d.L}),
                            cache.k_rope[size_t(a.layer)].narrow(1, 0, S), cache.latent[size_t(a.layer)].narrow(1, 0, S),
                            a.scale);
  unfold_output(a, o_lat.reshape({N, d.Hq, d.L}), N, d, att);
}

}  // namespace

void mla_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att, MlaForm form) {
  Backend& be = a.be();
  const MlaDims d(a);
  const int64_t pos0 = cache.length, S = pos0 + T;
  Tensor latent, k_rope;
  project_kv(a, xn, positions, d, latent, k_rope);
  KvCache::write(be, cache.latent[size_t(a.layer)], latent, B, T, pos0);
  KvCache::write(be, cache.k_rope[size_t(a.layer)], k_rope, B, T, pos0);
  Tensor q = project_q(a, xn, positions, d);

  const bool absorbed = form == MlaForm::absorbed || (form == MlaForm::automatic && T == 1);
  if (absorbed) {
    absorbed_attention(a, q, B, T, cache, S, d, att);
    return;
  }
  // Expanded: up-project the latents of all S positions (cached prefix included).
  Tensor lat_all = be.contiguous(cache.latent[size_t(a.layer)].narrow(1, 0, S)).reshape({B * S, d.L});
  Tensor kr_all = be.contiguous(cache.k_rope[size_t(a.layer)].narrow(1, 0, S)).reshape({B * S, d.Hkr, d.R});
  Tensor k, v;
  expand_kv(a, lat_all, kr_all, d, k, v);
  be.attention_forward(att, nullptr, q.reshape({B, T, d.Hq, d.qk}), k.reshape({B, S, d.Hkv, d.qk}),
                       v.reshape({B, S, d.Hkv, d.hd}), a.scale);
}

void mla_attention_paged(const AttentionContext& a, const Tensor& xn, const PagedStep& step, PagedKvCache& cache,
                         Tensor& att) {
  Backend& be = a.be();
  const MlaDims d(a);
  const int64_t N = xn.dim(0);
  const size_t l = size_t(a.layer);
  Tensor latent, k_rope;
  project_kv(a, xn, step.positions, d, latent, k_rope);
  Tensor* latent_scales = cache.latent_scale.empty() ? nullptr : &cache.latent_scale[l];
  Tensor* k_rope_scales = cache.k_rope_scale.empty() ? nullptr : &cache.k_rope_scale[l];
  be.paged_cache_write(cache.latent[l], latent_scales, latent, step.slots);
  be.paged_cache_write(cache.k_rope[l], k_rope_scales, k_rope, step.slots);
  const Tensor q = project_q(a, xn, step.positions, d);
  Tensor q_rope, q_lat;
  fold_queries(a, q, N, d, q_rope, q_lat);
  Tensor o_lat = be.empty({N, d.Hq, d.L});
  be.paged_mla_attention(o_lat, q_rope, q_lat, cache.k_rope[l], k_rope_scales, cache.latent[l], latent_scales, step.batch,
                         a.scale);
  unfold_output(a, o_lat, N, d, att);
}

void mla_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions) {
  Backend& be = a.be();
  const MlaDims d(a);
  Tensor k_rope, k, v;
  project_kv(a, A.xn_attn, positions, d, A.latent, k_rope);
  expand_kv(a, A.latent, k_rope, d, k, v);
  A.q = project_q(a, A.xn_attn, positions, d).reshape({B, T, d.Hq, d.qk});
  A.k = k.reshape({B, T, d.Hkv, d.qk});
  A.v = v.reshape({B, T, d.Hkv, d.hd});
  A.attn_out = be.empty({B, T, d.Hq, d.hd});
  A.lse = be.empty({B, d.Hq, T});
  be.attention_forward(A.attn_out, &A.lse, A.q, A.k, A.v, a.scale);
}

void mla_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G) {
  Backend& be = a.be();
  const MlaDims d(a);
  const int64_t N = B * T;
  Tensor dq = be.empty({B, T, d.Hq, d.qk});
  Tensor dk = be.empty({B, T, d.Hkv, d.qk});
  Tensor dv = be.empty({B, T, d.Hkv, d.hd});
  be.attention_backward(dq, dk, dv, datt, A.q, A.k, A.v, A.attn_out, A.lse, a.scale);

  Tensor dq3 = dq.reshape({N, d.Hq, d.qk});
  be.rope_backward(dq3, positions, a.q_rope);
  tp::column_parallel_backward(a.tp, &dxn, &G.wq, dq.reshape({N, d.Hq * d.qk}), A.xn_attn, a.w.wq);

  Tensor dk_rope = be.empty({N, d.Hkr, d.R}), dk_nope = be.empty({N, d.Hkv * d.dc});
  split_keys(be, dk, dk_rope, dk_nope, N, d);
  if (d.R > 0) {
    be.rope_backward(dk_rope, positions, a.k_rope);
    const Tensor dk_rope2 = dk_rope.reshape({N, d.Hkr * d.R});
    if (d.shared) {
      // This rank's heads' share of the shared key's gradient: W_kr's is summed over the group
      // there, the input's joins dxn for the caller's reduction (as W_dkv below).
      tp::replicated_linear_backward(a.tp, dxn, G.w_kr, dk_rope2, A.xn_attn, a.w.w_kr);
    } else {
      tp::column_parallel_backward(a.tp, &dxn, &G.w_kr, dk_rope2, A.xn_attn, a.w.w_kr);
    }
  }
  // The latent feeds the no-RoPE keys and the values: its gradient sums both. It holds only this
  // rank's heads' share, which replicated_linear_backward sums over the group for W_dkv.
  Tensor dlatent = be.zeros({N, d.L});
  if (d.dc > 0) tp::column_parallel_backward(a.tp, &dlatent, &G.w_uk, dk_nope, A.latent, a.w.w_uk);
  tp::column_parallel_backward(a.tp, &dlatent, &G.w_uv, dv.reshape({N, d.Hkv * d.hd}), A.latent, a.w.w_uv);
  tp::replicated_linear_backward(a.tp, dxn, G.w_dkv, dlatent, A.xn_attn, a.w.w_dkv);
}

}  // namespace latte::detail
