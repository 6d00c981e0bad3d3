// An MLA model with one shared RoPE key (core/model/config.h shared_rope_dim, from RoRoPE) written
// as a DeepSeek-V3-style Hugging Face folder (`latte export --format deepseek-v3`), and read back.
//
// config.json: model_type "deepseek_v3", kv_lora_rank (= Latte's latent width L),
// qk_rope_head_dim (= d_r), qk_nope_head_dim = v_head_dim (= head_dim), q_lora_rank null, no
// experts; num_key_value_heads = num_attention_heads (DeepSeek up-projects one key/value per query
// head). Per layer, DeepSeek's tensor names:
//   self_attn.q_proj.weight              [Hq*(hd + d_r), D]  per head [nope | rope] (Latte: [rope | nope])
//   self_attn.kv_a_proj_with_mqa.weight  [L + d_r, D]        [kv_a_proj ; k_rope_proj]
//   self_attn.kv_a_layernorm.weight      [L]                 ones (see below)
//   self_attn.kv_b_proj.weight           [Hq*(hd + hd), L]   per query head [k_b rows | v_b rows] of its KV group
//   self_attn.o_proj.weight, the norms, the MLP, the embedding and lm_head as Latte names them.
// The RoPE rows stay interleaved (pairs (2s, 2s+1)), as DeepSeek-V3's stored weights are.
//
// What a stock DeepSeek-V3 loader would do differently (so it does NOT compute the same
// function; no other loader was run on these folders): it RMS-normalizes the latent
// (kv_a_layernorm; Latte's latent has no norm, the ones written are a placeholder), scales scores
// by 1/sqrt(hd + d_r) (Latte keeps the source's 1/sqrt(hd)), and rotates RoPE pair s with its own
// frequency theta^(-2s/d_r) (RoRoPE's pairs rotate with source frequencies, repeated and
// unordered). These are recorded in latte_* keys (latte_rope_freqs, latte_kv_groups,
// latte_softmax_scale_dim, latte_kv_a_layernorm = false) so that Latte reads its folders back
// bit for bit; a deepseek_v3 folder without them is refused.
#pragma once
#include <string>

#include "core/model/config.h"
#include "core/tensor/tensor_store.h"

namespace latte {

// config.json text for c (an MLA config with a shared RoPE key; invalid_argument naming the
// problem otherwise).
std::string deepseek_config_json(const ModelConfig& c);
// Latte's tensors of c under DeepSeek's names and layout (f32 copies where rows move).
TensorStore to_deepseek_tensors(const ModelConfig& c, const TensorStore& latte);

// True when config.json's text says model_type "deepseek_v3".
bool is_deepseek_config(const std::string& config_json);
// The Latte config of a folder deepseek_config_json wrote (bad_file naming the key otherwise).
ModelConfig config_from_deepseek_json(const std::string& config_json, const std::string& source);
// The inverse of to_deepseek_tensors: bit for bit, checking that the repeated KV rows agree and
// the latent norm is all ones (bad_file naming the tensor otherwise).
TensorStore from_deepseek_tensors(const ModelConfig& c, const TensorStore& deepseek);

}  // namespace latte
