#include "inference/server/model_info.h"

#include "core/model/model_tensors.h"
#include "core/model/paged_kv_cache.h"
#include "inference/server/utf8.h"

namespace latte::server {

int64_t kv_bytes_per_token(const ModelConfig& config, DType cache_dtype, int tp_size) {
  int64_t bytes = 0;
  for (int r = 0; r < tp_size; ++r)
    bytes += PagedKvCache::bytes_per_block(config, 1, cache_dtype, tp_layout(config, r, tp_size));
  return bytes;
}

v1::ModelInfoResponse describe_model(const std::string& name, const ModelConfig& config, const Tokenizer* tokenizer,
                                     const Engine& engine, int tp_size) {
  v1::ModelInfoResponse m;
  m.set_model_name(to_valid_utf8(name));
  // Every model Latte serves is a Llama-family decoder; an MLA conversion differs in its attention.
  m.set_architecture("llama");
  m.set_attention(config.is_mla() ? v1::ATTENTION_KIND_MLA : v1::ATTENTION_KIND_LLAMA);
  m.set_n_layers(int32_t(config.n_layers));
  m.set_n_heads(int32_t(config.n_heads));
  m.set_n_kv_heads(int32_t(config.n_kv_heads));
  m.set_dim(int32_t(config.dim));
  m.set_head_dim(int32_t(config.head_dim));
  m.set_vocab_size(int32_t(config.vocab_size));
  m.set_context_length(int32_t(config.max_seq_len));
  m.set_kv_latent_rank(config.is_mla() ? int32_t(config.kv_lora_rank()) : 0);
  m.set_rope_dim(config.is_mla() ? int32_t(config.rope_dim()) : 0);
  m.set_kv_bytes_per_token(kv_bytes_per_token(config, engine.cache().dtype, tp_size));
  m.set_kv_dtype(dtype_name(engine.cache().dtype));
  m.set_tp_size(tp_size);
  m.set_block_size(int32_t(engine.cache().block_size));
  m.set_bos_id(tokenizer ? tokenizer->bos_id() : config.bos_id);
  m.set_eos_id(tokenizer ? tokenizer->eos_id() : config.eos_id);
  return m;
}

}  // namespace latte::server
