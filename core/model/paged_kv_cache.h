// The serving engine's KV cache: one pool of fixed-size blocks per layer, handed out to sequences
// by the scheduler (inference/engine/scheduler.h), addressed by slot = block * block_size + offset.
// The same layout serves both attention kinds:
//   llama: k[l], v[l]     [num_blocks, block_size, Hkv, hd]   this rank's KV heads, after RoPE
//   MLA:   latent[l]      [num_blocks, block_size, L]          replicated on every TP rank
//          k_rope[l]      [num_blocks, block_size, Hkv, R]     this rank's KV heads, after RoPE
//                         [num_blocks, block_size, 1, d_r]     one shared RoPE key: replicated
//          latent_scale[l], k_rope_scale[l] [num_blocks, block_size] f32   only for i8
// Element type: f32 or bf16 for everything, or i8 for MLA (the latent and the RoPE keys each with
// one symmetric scale per token: 8 bytes per token and layer beside the int8 elements). f32 is
// exact: paged attention over it gives the contiguous cache's results.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/model_tensors.h"

namespace latte {

struct PagedKvCache {
  std::vector<Tensor> k, v;                           // llama
  std::vector<Tensor> latent, k_rope, latent_scale, k_rope_scale;  // MLA (the scales: i8 only)
  int64_t num_blocks = 0, block_size = 0;
  DType dtype = DType::f32;

  // Bytes one block takes over all layers: what a cache byte budget is divided by.
  static int64_t bytes_per_block(const ModelConfig& c, int64_t block_size, DType dtype, const TpLayout& tp);
  // Throws invalid_argument for a dtype the architecture cannot hold (i8 needs MLA) or sizes < 1.
  static PagedKvCache create(const ModelConfig& c, int64_t num_blocks, int64_t block_size, DType dtype,
                             const TpLayout& tp, Backend& be);
  // The same for the whole model on one rank.
  static PagedKvCache create(const ModelConfig& c, int64_t num_blocks, int64_t block_size, DType dtype, Backend& be) {
    return create(c, num_blocks, block_size, dtype, tp_layout(c, 0, 1), be);
  }
  int64_t bytes() const;
};

// One forward step of the serving engine over a ragged batch (Transformer::forward_paged): the
// scheduled tokens of every sequence, concatenated.
struct PagedStep {
  std::span<const int32_t> tokens;      // [N]
  std::span<const int32_t> positions;   // [N] absolute positions
  std::span<const int32_t> slots;       // [N] where each token's K/V goes: block * block_size + offset
  PagedBatch batch;                     // which rows belong to which sequence, and its blocks
  std::span<const int32_t> logit_rows;  // rows whose logits are returned, in this order
};

}  // namespace latte
