// ModelConfig: the shape of a Llama-family decoder, as read from a checkpoint (llama2.c header,
// config.json, GGUF metadata). Field names follow llama2.c; the HF config.json keys are in
// comments and in config.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend/backend.h"

namespace latte {

struct ModelConfig {
  std::string architecture = "llama";  // "llama" (MHA/GQA); "mla" once converted
  int64_t dim = 0;                     // hidden_size
  int64_t hidden_dim = 0;              // intermediate_size (SwiGLU inner width)
  int64_t n_layers = 0;                // num_hidden_layers
  int64_t n_heads = 0;                 // num_attention_heads
  int64_t n_kv_heads = 0;              // num_key_value_heads
  int64_t head_dim = 0;                // head_dim (dim / n_heads unless stated)
  int64_t vocab_size = 0;              // vocab_size
  int64_t max_seq_len = 0;             // max_position_embeddings
  float rope_theta = 10000.0f;         // rope_theta
  float norm_eps = 1e-5f;              // rms_norm_eps
  RopeLayout rope_layout = RopeLayout::rotate_half;  // how q/k rows pair up (see backend.h)
  bool tied_embeddings = true;         // tie_word_embeddings
  int32_t bos_id = 1;                  // bos_token_id
  int32_t eos_id = 2;                  // eos_token_id

  // MLA (architecture "mla"), from the MHA2MLA conversion (shared/notes/mha2mla-spec.md). Each KV
  // head j of layer l keeps RoPE on the frequency pairs rope_freqs[l][j] (r = rope_pairs of them,
  // ascending); its other head_dim - 2r dims and its values come from one latent per token of
  // width kv_lora_rank = n_kv_heads * kv_rank_per_head.
  //
  // Head layout after conversion: every query and key head is [rope | nope], where rope holds the
  // kept pairs as adjacent (first, second) coordinates in ascending frequency order, and nope the
  // remaining coordinates in their original order. So the RoPE pairing of an MLA checkpoint is
  // always interleaved within the first 2r dims, whatever the source layout was.
  int64_t rope_pairs = 0;        // r                         (mla_rope_pairs)
  int64_t kv_rank_per_head = 0;  // d_kv                      (mla_kv_rank_per_head)
  std::vector<std::vector<std::vector<int32_t>>> rope_freqs;  // [layer][kv head][r] (mla_rope_freqs)
  std::string mla_provenance;    // how the conversion was made, JSON text (mla_provenance)

  // DeepSeek's layout (the RoRoPE conversion, trainer/mha2mla/rorope.h): instead of a RoPE key per
  // KV head, ONE RoPE key of shared_rope_dim = d_r dims per token, read by every query head. RoPE
  // pair s of that key (coordinates 2s, 2s+1) rotates with frequency shared_rope_freqs[l][s]
  // (indices into the source's head_dim/2 frequencies; RoRoPE keeps several components of one
  // frequency, so an index may repeat). Query and key heads are then [rope d_r | nope head_dim]
  // (the no-RoPE keys still per KV head, from the latent), values head_dim wide, scale still
  // 1/sqrt(head_dim). 0: the per-KV-head layout above (rope_pairs, rope_freqs); with d_r > 0,
  // rope_pairs is 0 and rope_freqs empty.
  int64_t shared_rope_dim = 0;                          // d_r   (mla_shared_rope_dim)
  std::vector<std::vector<int32_t>> shared_rope_freqs;  // [layer][d_r/2] (mla_shared_rope_freqs)

  bool is_mla() const { return architecture == "mla"; }
  bool shared_rope() const { return is_mla() && shared_rope_dim > 0; }
  // Width of a query (and key) head: head_dim, or d_r + head_dim in the shared layout.
  int64_t qk_head_dim() const { return shared_rope() ? shared_rope_dim + head_dim : head_dim; }
  int64_t q_dim() const { return n_heads * qk_head_dim(); }  // q_proj rows
  int64_t o_dim() const { return n_heads * head_dim; }       // o_proj columns (value heads)
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t kv_lora_rank() const { return n_kv_heads * kv_rank_per_head; }  // D, the latent width
  // RoPE dims of a head (2r), or of the one shared key (d_r).
  int64_t rope_dim() const { return shared_rope() ? shared_rope_dim : 2 * rope_pairs; }
  // No-RoPE dims of a query/key head (d_c): head_dim - 2r, or head_dim in the shared layout.
  int64_t nope_dim() const { return shared_rope() ? head_dim : head_dim - 2 * rope_pairs; }
  // RoPE key heads a rank holding `kv_heads` KV heads caches: its own, or the one shared key.
  int64_t rope_key_heads(int64_t kv_heads) const { return shared_rope() ? 1 : kv_heads; }
  int64_t parameter_count() const;  // trained parameters (tied embedding counted once)
  // Cached elements per token over all layers: llama 2 * n_layers * kv_dim; MLA
  // n_layers * n_kv_heads * (2r + d_kv) (the RoPE keys of every KV head plus one shared latent),
  // or n_layers * (d_r + n_kv_heads * d_kv) in the shared layout.
  int64_t kv_cache_elements_per_token() const;

  // Throws invalid_argument naming the field when values are inconsistent (e.g. n_heads not a
  // multiple of n_kv_heads); `source` (a file name) goes into the message.
  void validate(const std::string& source) const;
};

// config.json (Hugging Face LlamaForCausalLM keys, plus "latte_rope_layout" when a checkpoint
// keeps Meta's interleaved pairing).
ModelConfig config_from_json_text(const std::string& text, const std::string& source);
std::string config_to_json_text(const ModelConfig& c);

}  // namespace latte
