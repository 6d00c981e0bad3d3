// The Llama decoder (MHA and GQA): weights, a KV cache for generation, and forward + backward for
// training. Follows llama2.c's run.c per layer:
//   xn = rmsnorm(x) * attn_norm;  q,k,v = wq xn, wk xn, wv xn;  RoPE(q, k);
//   x += wo . attention(q, k, v);   xn = rmsnorm(x) * ffn_norm;
//   x += w_down . (silu(w_gate xn) * (w_up xn));
//   logits = lm_head . (rmsnorm(x) * norm)
// Shapes use B (batch), T (new tokens), S (cached + new), D = dim, F = hidden_dim,
// Hq = n_heads, Hkv = n_kv_heads, hd = head_dim, V = vocab_size.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/tensor/tensor_store.h"

namespace latte {

struct LlamaLayerWeights {
  Tensor attn_norm;  // input_layernorm            [D]
  Tensor wq;         // self_attn.q_proj           [Hq*hd, D]
  Tensor wk;         // self_attn.k_proj           [Hkv*hd, D]
  Tensor wv;         // self_attn.v_proj           [Hkv*hd, D]
  Tensor wo;         // self_attn.o_proj           [D, Hq*hd]
  Tensor ffn_norm;   // post_attention_layernorm   [D]
  Tensor w_gate;     // mlp.gate_proj (llama2.c w1) [F, D]
  Tensor w_up;       // mlp.up_proj   (llama2.c w3) [F, D]
  Tensor w_down;     // mlp.down_proj (llama2.c w2) [D, F]
};

struct LlamaWeights {
  Tensor tok_embeddings;  // model.embed_tokens  [V, D]
  std::vector<LlamaLayerWeights> layers;
  Tensor norm;            // model.norm          [D]
  Tensor lm_head;         // lm_head             [V, D]; shares storage with tok_embeddings when tied

  // Calls f(hf_name, tensor&) for every distinct tensor (lm_head skipped when tied).
  template <typename F>
  void for_each(bool tied, F&& f);
};

// Takes the weights from a store under their HF names (core/checkpoint/checkpoint.h), checking
// every shape; errors name the tensor and file.
LlamaWeights llama_weights_from_store(const ModelConfig& c, const TensorStore& store);
// The inverse: views of the weights under HF names (lm_head omitted when tied).
TensorStore llama_weights_to_store(const ModelConfig& c, const LlamaWeights& w);
// Zero-filled f32 tensors with the shapes of the weights (gradients, optimizer moments); when
// tied, lm_head aliases tok_embeddings so both gradient contributions add up in one place.
LlamaWeights llama_weights_zeros_like(const ModelConfig& c);
// f32 copies (training keeps f32 master weights whatever the checkpoint stored).
LlamaWeights llama_weights_to_f32(const ModelConfig& c, const LlamaWeights& w);

// Per-layer K/V for generation: k[l], v[l] are [B, max_seq, Hkv, hd] f32; keys are stored after
// RoPE, so a decode step only rotates the new token.
struct KvCache {
  std::vector<Tensor> k, v;
  int64_t batch = 0, max_seq = 0, length = 0;  // length: positions filled (same for every row)
  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq);
  int64_t bytes() const;
};

enum class LogitsFor { all_positions, last_position };

// Activations kept by forward_train for backward.
struct LlamaActivations {
  struct Layer {
    Tensor x_in, rstd_attn, xn_attn, q, k, v, attn_out, lse, x_mid, rstd_ffn, xn_ffn, gate, up, h;
  };
  std::vector<Layer> layers;
  Tensor x_final, rstd_final, xn_final, logits, losses;
  std::vector<int32_t> tokens, targets, positions;
  int64_t batch = 0, seq = 0, n_targets = 0;
};

class LlamaModel {
 public:
  LlamaModel(ModelConfig config, LlamaWeights weights, Backend& backend);

  const ModelConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }
  LlamaWeights& weights() { return weights_; }
  Backend& backend() const { return *backend_; }

  // Inference: tokens [B*T] (row-major [B][T]) at positions cache.length .. cache.length+T-1,
  // appended to the cache. Returns logits [B*T, V] or [B, V] (last position of each row).
  Tensor forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which);

  // Training forward: tokens and targets [B*T] from position 0; returns the mean cross-entropy
  // over targets >= 0 and keeps what backward needs in acts.
  float forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                      LlamaActivations& acts);
  // Adds d(mean loss)/d(weight) into grads (shapes of llama_weights_zeros_like).
  void backward(const LlamaActivations& acts, LlamaWeights& grads);

 private:
  ModelConfig config_;
  LlamaWeights weights_;
  Backend* backend_;
};

template <typename F>
void LlamaWeights::for_each(bool tied, F&& f) {
  f(std::string("model.embed_tokens.weight"), tok_embeddings);
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    LlamaLayerWeights& L = layers[i];
    f(p + "input_layernorm.weight", L.attn_norm);
    f(p + "self_attn.q_proj.weight", L.wq);
    f(p + "self_attn.k_proj.weight", L.wk);
    f(p + "self_attn.v_proj.weight", L.wv);
    f(p + "self_attn.o_proj.weight", L.wo);
    f(p + "post_attention_layernorm.weight", L.ffn_norm);
    f(p + "mlp.gate_proj.weight", L.w_gate);
    f(p + "mlp.up_proj.weight", L.w_up);
    f(p + "mlp.down_proj.weight", L.w_down);
  }
  f(std::string("model.norm.weight"), norm);
  if (!tied) f(std::string("lm_head.weight"), lm_head);
}

}  // namespace latte
