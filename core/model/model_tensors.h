// The one table of a model's tensors: for every tensor of a config, its checkpoint name, its
// shape, how it splits under tensor parallelism and the LayerWeights / ModelWeights field it
// fills. Loaders check checkpoints against it, savers write in its order, the model takes its
// weights by it, the trainer and the planner slice by it.
//
// Names, per layer (prefix model.layers.N.), and what the code and the papers call them:
//
//   checkpoint name                  field     shape             TP split          MHA2MLA / DeepSeek
//   input_layernorm.weight           attn_norm [D]               replicated        attn_norm
//   self_attn.q_proj.weight          wq        [Hq*qk, D]        rows by heads     W_q / wq
//   self_attn.k_proj.weight          wk        [Hkv*hd, D]       rows by KV heads  (llama only)
//   self_attn.v_proj.weight          wv        [Hkv*hd, D]       rows by KV heads  (llama only)
//   self_attn.kv_a_proj.weight       w_dkv     [L, D]            replicated        W_dkv / wkv_a
//   self_attn.k_rope_proj.weight     w_kr      [Hkv*R, D]        rows by KV heads  W_kr (per-head RoPE keys)
//                                              or [d_r, D]       replicated        (one shared RoPE key)
//   self_attn.k_b_proj.weight        w_uk      [Hkv*dc, L]       rows by KV heads  W_uk / wkv_b (key part)
//   self_attn.v_b_proj.weight        w_uv      [Hkv*hd, L]       rows by KV heads  W_uv / wkv_b (value part)
//   self_attn.o_proj.weight          wo        [D, Hq*hd]        columns by heads  W_o / wo
//   post_attention_layernorm.weight  ffn_norm  [D]               replicated
//   mlp.gate_proj.weight             w_gate    [F, D]            rows (F)          llama2.c w1
//   mlp.up_proj.weight               w_up      [F, D]            rows (F)          llama2.c w3
//   mlp.down_proj.weight             w_down    [D, F]            columns (F)       llama2.c w2
// qk is a query head's width: hd, or d_r + hd with one shared RoPE key (config.h: shared_rope_dim).
// and model.embed_tokens.weight (tok_embeddings, rows by vocabulary), model.norm.weight (norm,
// replicated), lm_head.weight (lm_head, rows by vocabulary; absent when tied).
//
// Tensor parallelism, Megatron-style, as data: "rows" is column-parallel (output rows split),
// "columns" row-parallel (input columns split); parallel/README.md says which layer runs each.
// Rows split by heads keep whole heads; when n_kv_heads < tp (and divides it) each rank holds the
// one KV head its query heads read. MLA's W_dkv is replicated: every rank computes the same latent
// and holds the same latent cache; so is a shared RoPE key's W_kr (and its cache), which every
// query head reads.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/model/config.h"
#include "core/model/model_weights.h"
#include "core/tensor/tensor_store.h"

namespace latte {

enum class TpSplit { replicated, rows, cols };

struct TpLayout {
  int64_t rank = 0, size = 1;
  // This rank's slice of each dimension that splits, [begin, begin + count) in global units.
  int64_t heads0 = 0, heads = 0;        // query heads
  int64_t kv_heads0 = 0, kv_heads = 0;  // KV heads (a replicated head has kv_heads == 1)
  int64_t hidden0 = 0, hidden = 0;      // MLP inner dimension
  int64_t vocab0 = 0, vocab = 0;        // vocabulary rows of embed_tokens / lm_head
  bool kv_replicated = false;           // n_kv_heads < size: several ranks share a KV head
};

// Checks divisibility (one-line errors naming the dimension and the TP size) and returns the
// rank's layout; size 1 gives the whole model.
TpLayout tp_layout(const ModelConfig& c, int64_t rank, int64_t size);

struct TensorSlice {
  TpSplit split = TpSplit::replicated;
  int64_t begin = 0, count = 0;  // rows (rows split) or columns (cols split); whole for replicated
};

// The unit a split dimension is counted in (how many of them a rank holds comes from TpLayout).
enum class SplitUnit { none, heads, kv_heads, hidden, vocab };

// One row of the table.
struct ModelTensor {
  std::string name;  // checkpoint name
  Shape shape;       // the whole model's
  TpSplit split = TpSplit::replicated;
  SplitUnit unit = SplitUnit::none;
  int64_t unit_width = 1;  // rows (or columns) per unit, e.g. head_dim per query head
  int64_t layer = -1;      // -1 for the embedding, final norm and lm_head
  Tensor LayerWeights::*layer_field = nullptr;
  Tensor ModelWeights::*model_field = nullptr;

  TensorSlice slice(const TpLayout& tp) const;
  Shape local_shape(const TpLayout& tp) const;
  Tensor& in(ModelWeights& w) const;
};

// Every tensor of the config, in file order.
std::vector<ModelTensor> model_tensors(const ModelConfig& c);
// The row named `name`; throws bad_file naming it when the config has no such tensor.
ModelTensor find_model_tensor(const ModelConfig& c, const std::string& name);

// Views of the table: names with whole-model shapes, or with this rank's local shapes.
std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c);
std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c, const TpLayout& tp);
// How tensor `name` of the table splits for this rank (find_model_tensor(c, name).slice(tp); the
// shape argument is unused and kept for the callers that pass it).
TensorSlice tensor_slice(const ModelConfig& c, const TpLayout& tp, const std::string& name, const Shape& shape);

// A full store sliced to this rank, contiguous: row slices are views of `full` (no copy), column
// slices are copies. The slicing the loaders apply at load time.
TensorStore shard_store(const ModelConfig& c, const TpLayout& tp, const TensorStore& full);
// The inverse: the stores of ranks 0..N-1 (in order) merged into the full model, bit-exactly.
// KV heads shared by several ranks (n_kv_heads < N) are taken from the first rank holding each.
TensorStore merge_shards(const ModelConfig& c, const std::vector<TensorStore>& ranks);

// Throws bad_file naming tensor and file for a missing tensor, an unexpected extra one, or a
// shape that does not match the config.
void check_model_tensors(const ModelConfig& c, const TensorStore& tensors);

}  // namespace latte
