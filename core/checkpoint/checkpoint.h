// Checkpoints: every format is read into one in-memory form, a ModelConfig plus tensors under
// Hugging Face Llama names, so the model never knows which file it came from:
//
//   model.embed_tokens.weight                     [vocab_size, dim]
//   model.layers.{i}.input_layernorm.weight       [dim]
//   model.layers.{i}.self_attn.q_proj.weight      [n_heads*head_dim, dim]
//   model.layers.{i}.self_attn.k_proj.weight      [n_kv_heads*head_dim, dim]
//   model.layers.{i}.self_attn.v_proj.weight      [n_kv_heads*head_dim, dim]
//   model.layers.{i}.self_attn.o_proj.weight      [dim, n_heads*head_dim]
//   model.layers.{i}.post_attention_layernorm.weight [dim]
//   model.layers.{i}.mlp.gate_proj.weight         [hidden_dim, dim]   (llama2.c w1)
//   model.layers.{i}.mlp.up_proj.weight           [hidden_dim, dim]   (llama2.c w3)
//   model.layers.{i}.mlp.down_proj.weight         [dim, hidden_dim]   (llama2.c w2)
//   model.norm.weight                             [dim]
//   lm_head.weight                                [vocab_size, dim]   (absent when tied)
//
// The RoPE pairing of q_proj/k_proj rows is recorded in config.rope_layout: llama2.c and GGUF
// keep Meta's interleaved rows, HF safetensors use rotate_half.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "core/model/config.h"
#include "core/tensor/tensor_store.h"
#include "core/tokenizer/tokenizer.h"

namespace latte {

struct Checkpoint {
  ModelConfig config;
  TensorStore tensors;
  std::unique_ptr<Tokenizer> tokenizer;  // when the checkpoint carries one (GGUF, tokenizer.json beside it)
  std::string format;                    // "llama2c", "safetensors", "gguf"
};

struct LoadOptions {
  bool check_finite = true;  // NaN/Inf weights are an error naming tensor and file
};

// Dispatch by path: a folder -> safetensors (+ config.json), *.gguf -> GGUF, else llama2.c .bin.
Checkpoint load_checkpoint(const std::string& path, const LoadOptions& opts = {});
Checkpoint load_llama2c(const std::string& path, const LoadOptions& opts = {});
Checkpoint load_safetensors_dir(const std::string& dir, const LoadOptions& opts = {});
Checkpoint load_gguf(const std::string& path, const LoadOptions& opts = {});

struct SaveOptions {
  DType dtype = DType::f32;         // storage dtype of the written tensors
  size_t max_shard_bytes = 0;       // 0: one model.safetensors; else shards + model.safetensors.index.json
};
// Writes config.json and the tensors atomically (each file: temp + rename).
void save_safetensors_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                          const SaveOptions& opts = {});

}  // namespace latte
