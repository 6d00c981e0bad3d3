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

// Tensor parallelism, Megatron-style, as data: how each tensor of the table splits over the
// ranks of a TP group. Column-parallel weights (q, k, v, W_kr, W_uk, W_uv, gate, up, and the
// vocab-parallel embedding and lm_head) split their output rows; row-parallel weights (o_proj,
// down) split their input columns; norms and MLA's W_dkv are replicated, so every rank computes
// the same latent and holds the same latent cache. Rows split by heads keep whole heads; when
// n_kv_heads < tp (and divides it) each rank holds the one KV head its query heads read.
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
// How tensor `name` of the table splits for this rank (global shape in, slice out).
TensorSlice tensor_slice(const ModelConfig& c, const TpLayout& tp, const std::string& name, const Shape& shape);
// The table for one rank: names with this rank's local shapes.
std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c, const TpLayout& tp);
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
