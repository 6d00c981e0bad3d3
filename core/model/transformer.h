// The decoder: Llama (MHA/GQA attention) or MLA (MHA2MLA attention), one class, chosen by
// config.architecture. Per layer, as llama2.c's run.c and DeepSeek's model.py Block:
//   x += attention(rmsnorm(x) * attn_norm)
//   x += w_down . (silu(w_gate xn) * (w_up xn)),  xn = rmsnorm(x) * ffn_norm
//   logits = lm_head . (rmsnorm(x) * norm)
// The attention blocks live in gqa_attention.cpp and mla_attention.cpp; this file's class owns
// weights, caches and the residual stream.
//
// Shapes: B batch, T new tokens, S cached + new, D dim, F hidden_dim, Hq n_heads, Hkv n_kv_heads,
// hd head_dim, V vocab; MLA: L = kv_lora_rank (latent width), R = 2r (RoPE dims per head),
// dc = hd - R (no-RoPE dims per head).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/comm/communicator.h"
#include "core/model/config.h"
#include "core/model/model_tensors.h"
#include "core/tensor/tensor_store.h"

namespace latte {

struct LayerWeights {
  Tensor attn_norm;  // input_layernorm            [D]
  Tensor wq;         // self_attn.q_proj           [Hq*hd, D] (MLA: rows per head [rope | nope])
  Tensor wk;         // self_attn.k_proj           [Hkv*hd, D]         (llama)
  Tensor wv;         // self_attn.v_proj           [Hkv*hd, D]         (llama)
  Tensor w_dkv;      // self_attn.kv_a_proj        [L, D]              (MLA) x -> latent
  Tensor w_kr;       // self_attn.k_rope_proj      [Hkv*R, D]          (MLA) x -> RoPE keys
  Tensor w_uk;       // self_attn.k_b_proj         [Hkv*dc, L]         (MLA) latent -> no-RoPE keys
  Tensor w_uv;       // self_attn.v_b_proj         [Hkv*hd, L]         (MLA) latent -> values
  Tensor wo;         // self_attn.o_proj           [D, Hq*hd]
  Tensor ffn_norm;   // post_attention_layernorm   [D]
  Tensor w_gate;     // mlp.gate_proj (llama2.c w1) [F, D]
  Tensor w_up;       // mlp.up_proj   (llama2.c w3) [F, D]
  Tensor w_down;     // mlp.down_proj (llama2.c w2) [D, F]
};

struct ModelWeights {
  Tensor tok_embeddings;  // model.embed_tokens  [V, D]
  std::vector<LayerWeights> layers;
  Tensor norm;            // model.norm          [D]
  Tensor lm_head;         // lm_head             [V, D]; shares storage with tok_embeddings when tied
};

// Calls f(name, shape, tensor&) for every tensor of the config in model_tensor_shapes order
// (lm_head skipped when tied), so weights, gradients and optimizer states share one naming.
// Shapes are this TP rank's (the whole model for the default layout).
void for_each_weight(const ModelConfig& c, const TpLayout& tp, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f);
void for_each_weight(const ModelConfig& c, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f);

// Takes the weights from a store under their checkpoint names, checking every shape against the
// rank's layout (a store sliced by shard_store); errors name the tensor and file. f16 tensors are
// widened to f32 (exact).
ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store, const TpLayout& tp);
ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store);
// The inverse: views of the weights under their names (lm_head omitted when tied).
TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w, const TpLayout& tp);
TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w);
// Zero-filled f32 tensors with the shapes of the weights (gradients, optimizer moments); when
// tied, lm_head aliases tok_embeddings so both gradient contributions add up in one place.
ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp);
ModelWeights weights_zeros_like(const ModelConfig& c);
// f32 copies (training keeps f32 master weights whatever the checkpoint stored).
ModelWeights weights_to_f32(const ModelConfig& c, const ModelWeights& w);

// Per-layer cache for generation, keys stored after RoPE so a decode step only rotates the new
// token. Llama: k[l], v[l] [B, max_seq, Hkv, hd]. MLA: latent[l] [B, max_seq, L] and
// k_rope[l] [B, max_seq, Hkv, R] — n_kv*(2r + d_kv) elements per token per layer.
struct KvCache {
  std::vector<Tensor> k, v;
  std::vector<Tensor> latent, k_rope;
  int64_t batch = 0, max_seq = 0, length = 0;  // length: positions filled (same for every row)
  // For a TP rank: its KV heads only; the MLA latent is replicated (every rank holds all of it).
  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp);
  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq);
  int64_t bytes() const;
};

enum class LogitsFor { all_positions, last_position };

// How MLA attention runs during inference: expanded (up-project the latents, ordinary attention;
// the training and prefill form) or absorbed (W_uk folded into the query and W_uv applied after
// attention over [latent | RoPE keys]; the decode form). auto: absorbed for one new token per row.
enum class MlaForm { automatic, expanded, absorbed };

// Activations kept by forward_train for backward.
struct Activations {
  struct Layer {
    Tensor x_in, rstd_attn, xn_attn;
    Tensor q, k, v;                  // [B,T,Hq,hd], [B,T,Hkv,hd] x2, after RoPE (MLA: k = [k_rope | k_nope])
    Tensor latent;                   // MLA: [B*T, L]
    Tensor attn_out, lse;            // [B,T,Hq,hd], [B,Hq,T]
    Tensor x_mid, rstd_ffn, xn_ffn, gate, up, h;
  };
  std::vector<Layer> layers;
  Tensor x_final, rstd_final, xn_final, logits, losses;
  Tensor logsumexp;  // [B*T] over the whole vocabulary (vocab-parallel cross-entropy, TP > 1)
  std::vector<int32_t> tokens, targets, positions;
  int64_t batch = 0, seq = 0, n_targets = 0;
  bool recomputed = false;  // layers hold only x_in; backward recomputes the rest
};

// Tensor parallelism (Megatron-style, shared/notes/systems-anchors.md): weights are this rank's
// shards (model_tensors.h TpSplit); activations entering and leaving each layer are replicated.
// The collectives, all over the TP communicator:
//  - embedding: vocab-parallel lookup, all-reduce (each token's row lives on one rank);
//  - after o_proj and after down_proj (row-parallel): all-reduce of the partial outputs;
//  - backward, at the input of every column-parallel block (q/k/v or MLA projections, gate/up,
//    lm_head): all-reduce of the input gradient, whose terms are spread over the ranks' heads;
//  - MLA's replicated W_dkv: all-reduce of its gradient (each rank's latent gradient holds only
//    its heads' share);
//  - logits: vocab-parallel; cross-entropy all-reduces the row max, the sum of exponentials and
//    the target logit, never the full logits; inference all-gathers logits for sampling.
// With no communicator (or one of size 1) no collective runs and the model is the single-rank one.
class Transformer {
 public:
  Transformer(ModelConfig config, ModelWeights weights, Backend& backend, Communicator* tp_comm = nullptr);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& weights() { return weights_; }
  Backend& backend() const { return *backend_; }
  const TpLayout& tp() const { return tp_; }
  KvCache make_cache(int64_t batch, int64_t max_seq) const { return KvCache::create(config_, batch, max_seq, tp_); }

  // Inference: tokens [B*T] (row-major [B][T]) at positions cache.length .. cache.length+T-1,
  // appended to the cache. Returns logits [B*T, V] or [B, V] (last position of each row).
  Tensor forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which,
                 MlaForm form = MlaForm::automatic);

  // Training forward: tokens and targets [B*T] from position 0; returns the mean cross-entropy
  // over targets >= 0 and keeps what backward needs in acts.
  float forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                      Activations& acts);
  // Activation recomputation per layer: forward_train keeps only each layer's input and backward
  // runs the layer's forward again before its backward (memory for compute; same gradients).
  void set_recompute(bool on) { recompute_ = on; }

  // Adds d(mean loss)/d(weight) into grads (shapes of weights_zeros_like). extra_dlogits
  // ([B*T, this rank's vocabulary slice], optional) is added to the cross-entropy's logit gradient:
  // how a distillation term enters without a second backward pass.
  void backward(const Activations& acts, ModelWeights& grads, const Tensor* extra_dlogits = nullptr);

  // RoPE parameters of layer l for this rank's query heads and for the keys the layer caches
  // (MLA: the compact [Hkv, R] RoPE keys; llama: full key heads).
  RopeParams q_rope(int64_t layer) const;
  RopeParams k_rope(int64_t layer) const;

 private:
  Tensor embed(std::span<const int32_t> tokens);
  // One decoder layer of forward_train from its input x; fills A, returns the layer's output.
  Tensor layer_forward_train(int64_t l, const Tensor& x, int64_t batch, int64_t T, std::span<const int32_t> positions,
                             Activations::Layer& A);
  void embed_backward(std::span<const int32_t> tokens, const Tensor& dx, ModelWeights& g);
  // y += x . w^T for a row-parallel w: the partial products are summed over the TP group.
  void row_parallel_accumulate(Tensor& y, const Tensor& x, const Tensor& w);
  Tensor gather_logits(const Tensor& local);
  void vocab_parallel_cross_entropy(Activations& a, std::span<const int32_t> targets);
  void vocab_parallel_cross_entropy_backward(const Activations& a, Tensor& dlogits, float scale);
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum);
  bool parallel() const { return tp_.size > 1; }

  ModelConfig config_;
  ModelWeights weights_;
  Backend* backend_;
  SoloCommunicator solo_;
  Communicator* comm_;
  TpLayout tp_;
  bool recompute_ = false;
  // MLA partial-RoPE tables per layer: q [Hq * hd/2], k [Hkv * r] (backend.h RopeParams).
  std::vector<std::vector<int32_t>> q_pair_freqs_, k_pair_freqs_;
};

}  // namespace latte
