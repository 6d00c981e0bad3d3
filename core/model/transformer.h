// The decoder: Llama (MHA/GQA attention) or MLA (MHA2MLA attention), one class, chosen by
// config.architecture. Per layer, as llama2.c's run.c and DeepSeek's model.py Block:
//   x += attention(rmsnorm(x) * attn_norm)
//   x += w_down . (silu(w_gate xn) * (w_up xn)),  xn = rmsnorm(x) * ffn_norm
//   logits = lm_head . (rmsnorm(x) * norm)
// The pieces live beside it: weights (model_weights.h) and their table (model_tensors.h), the KV
// cache (kv_cache.h), what training keeps (activations.h), RoPE tables (rope_tables.h), the
// attention blocks (gqa_attention.cpp, mla_attention.cpp). This class owns the residual stream.
//
// Device: every tensor is allocated, filled and copied through the Backend it is given, and the
// weights are handed to it once (Backend::to_device), so the same code runs on any backend.
//
// Tensor parallelism (Megatron-style; the layers are in parallel/tensor_parallel, see
// parallel/README.md): weights are this rank's shards (model_tensors.h); activations entering and
// leaving each layer are replicated. Embedding and logits are vocabulary-parallel, q/k/v (MLA:
// q, W_kr, W_uk, W_uv) and gate/up column-parallel, o_proj and down_proj row-parallel, MLA's W_dkv
// replicated. With no communicator (or one of size 1) no collective runs and the model is the
// single-rank one.
#pragma once
#include <cstdint>
#include <functional>
#include <span>

#include "core/backend/backend.h"
#include "core/comm/communicator.h"
#include "core/model/activations.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model_tensors.h"
#include "core/model/model_weights.h"
#include "core/model/paged_kv_cache.h"
#include "core/model/rope_tables.h"
#include "parallel/tensor_parallel/tp_group.h"

namespace latte {

namespace detail {
struct AttentionContext;
}

class Transformer {
 public:
  Transformer(ModelConfig config, ModelWeights weights, Backend& backend, Communicator* tp_comm = nullptr);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& weights() { return weights_; }
  Backend& backend() const { return *backend_; }
  const TpLayout& tp() const { return tp_; }
  KvCache make_cache(int64_t batch, int64_t max_seq) const {
    return KvCache::create(config_, batch, max_seq, tp_, *backend_);
  }

  // Inference: tokens [B*T] (row-major [B][T]) at positions cache.length .. cache.length+T-1,
  // appended to the cache. Returns logits [B*T, V] or [B, V] (last position of each row), in the
  // backend's memory (Backend::to_host to read them).
  Tensor forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which,
                 MlaForm form = MlaForm::automatic);

  // Serving: one step over a ragged batch of sequences (PagedStep, paged_kv_cache.h): every
  // token's K/V goes to its slot of the paged cache, every token attends over its sequence's
  // blocks, and the logits of step.logit_rows come back, [logit_rows, V] (the whole vocabulary on
  // every TP rank), in the backend's memory. MLA attends in the absorbed form.
  Tensor forward_paged(const PagedStep& step, PagedKvCache& cache);

  // Training forward: tokens and targets [B*T] from position 0; returns the mean cross-entropy
  // over targets >= 0 and keeps what backward needs in acts.
  float forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                      Activations& acts);
  // forward_train one layer at a time, for passes that hold one layer's weights at a time (the
  // streamed calibration of a model larger than memory): embed_train is the embedding of tokens
  // [B*T] ([B*T, dim]), layer_forward_train one decoder layer from its input x [B*T, dim] at
  // positions 0..T-1 of each row, filling A as forward_train fills acts.layers[l]; the same
  // kernels on the same inputs as forward_train, so the same bits.
  Tensor embed_train(std::span<const int32_t> tokens);
  Tensor layer_forward_train(int64_t l, const Tensor& x, int64_t batch, Activations::Layer& A);

  // Activation recomputation per layer: forward_train keeps only each layer's input and backward
  // runs the layer's forward again before its backward (memory for compute; same gradients).
  void set_recompute(bool on) { recompute_ = on; }

  // Adds d(mean loss)/d(weight) into grads (shapes of weights_zeros_like). extra_dlogits
  // ([B*T, this rank's vocabulary slice], optional) is added to the cross-entropy's logit gradient:
  // how a distillation term enters without a second backward pass.
  void backward(const Activations& acts, ModelWeights& grads, const Tensor* extra_dlogits = nullptr);

  // RoPE parameters of layer l for this rank's query heads and for the keys the layer caches.
  RopeParams q_rope(int64_t layer) const { return rope_.q(layer); }
  RopeParams k_rope(int64_t layer) const { return rope_.k(layer); }

 private:
  // The decoder stack of an inference forward over tokens [N]: embedding, then per layer the
  // attention sublayer (`attend` maps xn [N, D] to att [N, Hq, hd]: the only part that differs
  // between the contiguous and the paged cache), o_proj and the MLP. Returns the residual stream.
  using AttendFn = std::function<void(const detail::AttentionContext&, const Tensor& xn, Tensor& att)>;
  Tensor infer_layers(std::span<const int32_t> tokens, const AttendFn& attend);
  // One decoder layer of forward_train from its input x; fills A, returns the layer's output.
  Tensor layer_forward_train(int64_t l, const Tensor& x, int64_t batch, int64_t T, std::span<const int32_t> positions,
                             Activations::Layer& A);
  tensor_parallel::TpGroup group() const { return {*backend_, *comm_}; }

  ModelConfig config_;
  ModelWeights weights_;
  Backend* backend_;
  SoloCommunicator solo_;
  Communicator* comm_;
  TpLayout tp_;
  RopeTables rope_;
  bool recompute_ = false;
};

}  // namespace latte
