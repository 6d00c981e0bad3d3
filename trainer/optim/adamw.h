// AdamW (Loshchilov & Hutter; decoupled weight decay) with fp32 master weights and moments, data-
// parallel gradient reduction, global gradient-norm clipping across TP and DP, and an optional
// ZeRO-1 sharding of the optimizer state over DP.
//
// The parameters are laid out in one flat f32 vector (for_each_weight order). Each step:
//  1. DP reduction of the accumulated gradients to their mean: an all-reduce of each gradient in
//     place, or with ZeRO-1 a reduce-scatter of one flat buffer so that each DP rank receives only
//     the 1/DP chunk it updates;
//  2. the global norm: squared gradients summed over what this rank holds, counting tensors that
//     are replicated across TP (norms, MLA's W_dkv) on TP rank 0 only, then summed over DP (ZeRO-1:
//     disjoint chunks) and over TP; gradients are scaled by min(1, max_norm / norm);
//  3. the AdamW update of the rank's parameters (ZeRO-1: its chunk, then an all-gather over DP
//     rebuilds the full parameters on every rank).
// Both modes compute the same update; they differ only in the order of floating-point sums.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/comm/communicator.h"
#include "core/tensor/tensor_store.h"

namespace latte {

struct AdamWSettings {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  bool zero1 = false;          // shard moments over DP
};

struct OptimParam {
  std::string name;
  Tensor* param;        // f32, contiguous
  Tensor* grad;         // f32, same shape
  bool tp_replicated;   // identical on every TP rank (count once in the norm)
  bool trainable;       // frozen parameters keep their values (e.g. --train attention)
  bool decay;           // weight decay applies (matrices; not norms)
};

class AdamW {
 public:
  AdamW(std::vector<OptimParam> params, const AdamWSettings& s, Communicator& dp, Communicator& tp);

  // Steps 1 and 2 above, with the gradients also multiplied by grad_scale (1/accumulation steps);
  // returns the global gradient norm before clipping. Throws numerics when it is not finite (the
  // caller stops without saving).
  double reduce_and_clip(double grad_scale = 1.0);
  // Step 3 at learning rate lr.
  void step(double lr);
  int64_t steps_taken() const { return t_; }

  // Optimizer state of this rank for checkpoints: the moments of its range as tensors, and the
  // integers (step count, range) that must match on resume.
  struct Meta {
    int64_t steps = 0, owned_begin = 0, owned_count = 0, total = 0;
  };
  TensorStore state() const;
  Meta meta() const { return {t_, own0_, own_n_, total_}; }
  void load_state(const TensorStore& s, const Meta& meta);  // throws bad_file on a layout mismatch
  int64_t param_count() const { return total_; }
  int64_t owned_begin() const { return own0_; }
  int64_t owned_count() const { return own_n_; }
  void zero_grad();

 private:
  void gather_grads(Tensor& flat) const;
  float* reduced_grad(size_t i, int64_t begin);
  std::vector<OptimParam> params_;
  std::vector<int64_t> offsets_;
  AdamWSettings s_;
  Communicator& dp_;
  Communicator& tp_;
  int64_t total_ = 0, padded_ = 0, own0_ = 0, own_n_ = 0, t_ = 0;
  Tensor m_, v_;          // [own_n_] moments
  Tensor reduced_;        // ZeRO-1: [own_n_] reduced (mean, clipped) gradients of the owned chunk
};

}  // namespace latte
