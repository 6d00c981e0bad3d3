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
#include <utility>
#include <vector>

#include "core/model/config.h"
#include "core/model/model_tensors.h"
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
  bool config_only = false;  // read only the config (config.json, the llama2.c header, the GGUF
                             // metadata): no tensors, no tokenizer, nothing decoded or allocated
};

// Dispatch by path: a folder -> safetensors (+ config.json), *.gguf -> GGUF, else llama2.c .bin.
Checkpoint load_checkpoint(const std::string& path, const LoadOptions& opts = {});
Checkpoint load_llama2c(const std::string& path, const LoadOptions& opts = {});
Checkpoint load_safetensors_dir(const std::string& dir, const LoadOptions& opts = {});
Checkpoint load_gguf(const std::string& path, const LoadOptions& opts = {});
// The config alone (LoadOptions::config_only), validated: what a run needs to check its layout
// before it loads or allocates any weight (latte train, latte plan --model).
ModelConfig load_checkpoint_config(const std::string& path);

struct SaveOptions {
  DType dtype = DType::f32;         // storage dtype of the written tensors
  size_t max_shard_bytes = 0;       // 0: one model.safetensors; else shards + model.safetensors.index.json
};
// Writes config.json and the tensors atomically (each file: temp + rename).
void save_safetensors_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                          const SaveOptions& opts = {});

// The same model as a DeepSeek-V3-style folder (core/checkpoint/deepseek_layout.h: an MLA model
// with one shared RoPE key; invalid_argument otherwise). load_checkpoint reads it back bit for bit.
void save_deepseek_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                       const SaveOptions& opts = {});

// The tensor set of a config is checked by check_model_tensors (core/model/model_tensors.h).

// RoPE pairing of q_proj/k_proj rows [n_heads*head_dim, dim]. Within each head, interleaved
// (Meta, llama2.c, GGUF) pairs rows (2j, 2j+1); rotate_half (HF) pairs (j, j + head_dim/2).
// interleaved -> rotate_half moves row 2j to j and 2j+1 to j + head_dim/2 (HF's permute); the
// reverse undoes it. Returns a new contiguous tensor of the same dtype (a copy even when from == to).
Tensor permute_rope_rows(const Tensor& w, int64_t head_dim, RopeLayout from, RopeLayout to);
// Rewrites every layer's q_proj/k_proj in `tensors` into layout `to` and records it in config.
void convert_rope_layout(ModelConfig& config, TensorStore& tensors, RopeLayout to);

struct ExportOptions {
  DType dtype = DType::f32;
  size_t max_shard_bytes = 0;     // as SaveOptions
  bool keep_rope_layout = false;  // false: permute q/k to HF rotate_half; true: keep rows and
                                  // record "latte_rope_layout" in config.json
  std::string llama2c_tokenizer;  // a tokenizer.bin to copy beside the weights when src.tokenizer
                                  // has no BPE vocabulary (empty: none)
  bool deepseek_layout = false;   // DeepSeek-V3 names and config keys (save_deepseek_dir)
};
// Writes a Hugging Face folder: config.json, model.safetensors (or shards + index), and the
// tokenizer (tokenizer.json from a BPE vocabulary, else a copy of opts.llama2c_tokenizer).
void export_checkpoint(const Checkpoint& src, const std::string& out_dir, const ExportOptions& opts = {});
// export_checkpoint's tokenizer step alone (for weights written another way, e.g. streamed):
// tokenizer.json from tokenizer's BPE vocabulary, else a copy of llama2c_tokenizer (checked
// against vocab_size first), else nothing; a tokenizer file of the other kind is removed.
// Returns the path written, or "" when none.
std::string export_tokenizer(const Tokenizer* tokenizer, const std::string& out_dir,
                             const std::string& llama2c_tokenizer, int64_t vocab_size);

}  // namespace latte
