// The one table of a model's tensors: HF-style names and shapes for a config, in file order.
// Loaders check checkpoints against it, savers write in its order, models take weights by it.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/model/config.h"
#include "core/tensor/tensor_store.h"

namespace latte {

// Per layer, llama: q_proj, k_proj, v_proj, o_proj; MLA (see config.h for the head layout):
//   self_attn.q_proj.weight      [n_heads*head_dim, dim]        rows per head [rope | nope]
//   self_attn.kv_a_proj.weight   [kv_lora_rank, dim]            W_dkv: x -> latent c
//   self_attn.k_rope_proj.weight [n_kv_heads*2r, dim]           W_kr: x -> RoPE keys per KV head
//   self_attn.k_b_proj.weight    [n_kv_heads*(head_dim-2r), D]  W_uk: c -> no-RoPE keys
//   self_attn.v_b_proj.weight    [n_kv_heads*head_dim, D]       W_uv: c -> values
//   self_attn.o_proj.weight      [dim, n_heads*head_dim]
// plus the norms and the MLP, and the embedding / final norm / lm_head (absent when tied).
std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c);

// Throws bad_file naming tensor and file for a missing tensor, an unexpected extra one, or a
// shape that does not match the config.
void check_model_tensors(const ModelConfig& c, const TensorStore& tensors);

}  // namespace latte
