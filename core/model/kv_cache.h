// The per-layer cache for generation, in the backend's memory. Keys are stored after RoPE so a
// decode step only rotates the new token.
//   llama: k[l], v[l]            [B, max_seq, Hkv, hd]   2*Hkv*hd elements per token per layer
//   MLA:   latent[l]             [B, max_seq, L]         one latent per token, shared by all heads
//          k_rope[l]             [B, max_seq, Hkv, R]    n_kv*(2r + d_kv) elements per token per layer
//                                [B, max_seq, 1, d_r]    one shared RoPE key: d_r + n_kv*d_kv
// For a TP rank: its KV heads only; the MLA latent (and a shared RoPE key) is replicated (every
// rank holds all of it).
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/model_tensors.h"

namespace latte {

struct KvCache {
  std::vector<Tensor> k, v;
  std::vector<Tensor> latent, k_rope;
  int64_t batch = 0, max_seq = 0, length = 0;  // length: positions filled (same for every row)

  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp, Backend& be);
  // In host memory (the CPU backend's).
  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp);
  static KvCache create(const ModelConfig& c, int64_t batch, int64_t max_seq);
  int64_t bytes() const;

  // Writes rows [B*T, ...] (row-major [B][T]) into positions pos .. pos+T-1 of every batch row of
  // one layer's cache tensor [B, max_seq, ...]. The one way anything enters a cache.
  static void write(Backend& be, Tensor& cache, const Tensor& rows, int64_t B, int64_t T, int64_t pos);
};

}  // namespace latte
