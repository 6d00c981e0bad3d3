// The weights of a decoder, as the code names them, and the operations over all of them. Which
// checkpoint tensor fills which field, its shape and how it splits under tensor parallelism is
// the one table in model_tensors.h.
//
// Shapes: D dim, F hidden_dim, Hq n_heads, Hkv n_kv_heads, hd head_dim, V vocab; MLA: L =
// kv_lora_rank (latent width), R = 2r (RoPE dims per head), dc = hd - R (no-RoPE dims per head);
// with one shared RoPE key (config.h shared_rope_dim): R = d_r, dc = hd, query heads R + hd wide.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"

namespace latte {

struct LayerWeights {
  Tensor attn_norm;  // [D]
  Tensor wq;         // [Hq*hd, D] (MLA: rows per head [rope | nope]; shared RoPE key: [Hq*(R+hd), D])
  Tensor wk;         // [Hkv*hd, D]   (llama)
  Tensor wv;         // [Hkv*hd, D]   (llama)
  Tensor w_dkv;      // [L, D]        (MLA) x -> latent
  Tensor w_kr;       // [Hkv*R, D]    (MLA) x -> RoPE keys ([R, D]: one shared key)
  Tensor w_uk;       // [Hkv*dc, L]   (MLA) latent -> no-RoPE keys
  Tensor w_uv;       // [Hkv*hd, L]   (MLA) latent -> values
  Tensor wo;         // [D, Hq*hd]
  Tensor ffn_norm;   // [D]
  Tensor w_gate;     // [F, D]
  Tensor w_up;       // [F, D]
  Tensor w_down;     // [D, F]
};

struct ModelWeights {
  Tensor tok_embeddings;  // [V, D]
  std::vector<LayerWeights> layers;
  Tensor norm;            // [D]
  Tensor lm_head;         // [V, D]; shares storage with tok_embeddings when tied
};

struct ModelConfig;
struct TpLayout;
class TensorStore;
class Backend;

// Calls f(name, shape, tensor&) for every tensor of the config in table order (lm_head skipped
// when tied), so weights, gradients and optimizer states share one naming. Shapes are this TP
// rank's (the whole model for the default layout).
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
// Zero-filled f32 tensors with the shapes of the weights (gradients, optimizer moments) in the
// backend's memory (host when none is given); when tied, lm_head aliases tok_embeddings so both
// gradient contributions add up in one place.
ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp, Backend& be);
ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp);
ModelWeights weights_zeros_like(const ModelConfig& c);
// f32 copies (training keeps f32 master weights whatever the checkpoint stored).
ModelWeights weights_to_f32(const ModelConfig& c, const ModelWeights& w);

}  // namespace latte
