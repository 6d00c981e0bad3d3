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

  bool is_mla() const { return architecture == "mla"; }
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t kv_lora_rank() const { return n_kv_heads * kv_rank_per_head; }  // D, the latent width
  int64_t rope_dim() const { return 2 * rope_pairs; }                     // rotated dims per head
  int64_t nope_dim() const { return head_dim - 2 * rope_pairs; }          // d_c
  int64_t parameter_count() const;  // trained parameters (tied embedding counted once)
  // Cached elements per token over all layers: llama 2 * n_layers * kv_dim; MLA
  // n_layers * n_kv_heads * (2r + d_kv) (the RoPE keys of every KV head plus one shared latent).
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
