// The RoPE parameters of each layer for this rank's heads. Llama: standard RoPE over whole heads.
// MLA (partial RoPE, config.h head layout [rope | nope]): slot pair s < r of a query head in KV
// group j rotates with frequency rope_freqs[l][j][s], the no-RoPE slots stay unrotated; the
// cached RoPE keys are compact [Hkv, R] heads rotating with their KV head's kept frequencies.
// With one shared RoPE key (config.h shared_rope_dim): query heads are [d_r | head_dim] wide, slot
// pair s < d_r/2 of every query head and of the cached [1, d_r] key rotating with
// shared_rope_freqs[l][s].
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/model_tensors.h"

namespace latte {

class RopeTables {
 public:
  RopeTables(const ModelConfig& c, const TpLayout& tp);
  // For this rank's query heads [T, Hq, qk_head_dim] of layer l.
  RopeParams q(int64_t layer) const;
  // For the keys layer l caches: MLA's compact [T, Hkv, R] (shared: [T, 1, d_r]) RoPE keys; llama's
  // full key heads.
  RopeParams k(int64_t layer) const;

 private:
  RopeLayout layout_;
  float theta_;
  int64_t head_dim_, qk_head_dim_, rope_dim_;
  bool mla_;
  // Per layer: q [Hq * hd/2], k [Hkv * r] (backend.h RopeParams::pair_freqs).
  std::vector<std::vector<int32_t>> q_pair_freqs_, k_pair_freqs_;
};

}  // namespace latte
