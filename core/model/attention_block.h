// Internal to core/model: the attention sublayer of a decoder layer, one implementation per
// architecture (gqa_attention.cpp, mla_attention.cpp). Each maps the normed input xn [B*T, D] to
// this rank's heads' outputs att [B, T, Hq, hd] (before o_proj, which the decoder applies as a
// row-parallel linear with the residual). Tensor parallelism enters only through the layers of
// parallel/tensor_parallel (column-parallel projections by heads; MLA's replicated W_dkv).
#pragma once
#include <span>

#include "core/model/activations.h"
#include "core/model/kv_cache.h"
#include "core/model/paged_kv_cache.h"
#include "core/model/model_weights.h"
#include "parallel/tensor_parallel/tp_group.h"

namespace latte::detail {

struct AttentionContext {
  const ModelConfig& c;  // the whole model's shape
  tensor_parallel::TpGroup tp;
  const LayerWeights& w;  // this rank's shards
  int64_t layer;
  int64_t n_heads, n_kv_heads;  // this rank's query and KV heads (the whole model at TP = 1)
  RopeParams q_rope, k_rope;
  float scale;  // 1/sqrt(head_dim): MHA2MLA keeps the original scale (spec section 1.5)
  Backend& be() const { return tp.be; }
};

// Inference with a cache: the new tokens sit at positions cache.length .. +T-1 (cache.length is
// advanced by the caller after the last layer).
void gqa_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att);
void mla_attention_infer(const AttentionContext& a, const Tensor& xn, int64_t B, int64_t T, KvCache& cache,
                         std::span<const int32_t> positions, Tensor& att, MlaForm form);

// Serving: xn [N, D] holds every token of the step (PagedStep); each token's K/V (MLA: latent
// and RoPE keys) goes to its slot, then it attends over its sequence's blocks. att [N, Hq, hd].
// MLA attends in the absorbed form for every token, prefill chunks included.
void gqa_attention_paged(const AttentionContext& a, const Tensor& xn, const PagedStep& step, PagedKvCache& cache,
                         Tensor& att);
void mla_attention_paged(const AttentionContext& a, const Tensor& xn, const PagedStep& step, PagedKvCache& cache,
                         Tensor& att);

// Training: fills A.q, A.k, A.v (and A.latent for MLA), A.attn_out and A.lse from A.xn_attn.
void gqa_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions);
void mla_attention_train(const AttentionContext& a, Activations::Layer& A, int64_t B, int64_t T,
                         std::span<const int32_t> positions);

// Backward: datt [B,T,Hq,hd] -> dxn [B*T, D] (+=, this rank's part: the caller reduces it over
// the group) and the layer's attention gradients (+=).
void gqa_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G);
void mla_attention_backward(const AttentionContext& a, const Activations::Layer& A, const Tensor& datt, int64_t B,
                            int64_t T, std::span<const int32_t> positions, Tensor& dxn, LayerWeights& G);

}  // namespace latte::detail
