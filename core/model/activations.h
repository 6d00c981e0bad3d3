// What a forward pass keeps: the activations backward needs (training), and the two switches of
// an inference forward (which logits, which MLA form).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor/tensor.h"

namespace latte {

enum class LogitsFor { all_positions, last_position };

// How MLA attention runs during inference: expanded (up-project the latents, ordinary attention;
// the training and prefill form) or absorbed (W_uk folded into the query and W_uv applied after
// attention over [latent | RoPE keys]; the decode form). automatic: absorbed for one new token per row.
enum class MlaForm { automatic, expanded, absorbed };

// Activations kept by Transformer::forward_train for backward (this rank's heads and slices).
struct Activations {
  struct Layer {
    Tensor x_in, rstd_attn, xn_attn;
    Tensor q, k, v;                  // [B,T,Hq,hd], [B,T,Hkv,hd] x2, after RoPE (MLA: k = [k_rope | k_nope])
    Tensor latent;                   // MLA: [B*T, L]
    Tensor attn_out, lse;            // [B,T,Hq,hd], [B,Hq,T]
    Tensor x_mid, rstd_ffn, xn_ffn, gate, up, h;
  };
  std::vector<Layer> layers;
  Tensor x_final, rstd_final, xn_final, logits, losses;
  Tensor logsumexp;  // [B*T] over the whole vocabulary (vocab-parallel cross-entropy, TP > 1)
  std::vector<int32_t> tokens, targets, positions;
  int64_t batch = 0, seq = 0, n_targets = 0;
  bool recomputed = false;  // layers hold only x_in; backward recomputes the rest
  // backward's [B*T, V] logit gradient, kept for the next step: a fresh buffer of that size is a
  // fresh mmap whose pages fault in again every step (0.5 s of a 8.4 s SmolLM2 step at 4 x 256;
  // bench/train_step --profile). forward_train likewise reuses `logits` when nothing else holds it.
  mutable Tensor dlogits_workspace;

  // After backward: frees what only that backward needed, keeping the two [B*T, V] buffers for
  // the next step (a trainer holding Activations across steps should not hold a step's worth of
  // layer activations as well).
  void drop_saved() {
    layers.clear();
    x_final = rstd_final = xn_final = losses = logsumexp = Tensor();
  }
};

}  // namespace latte
