// Log-likelihoods of several continuations of one context, the context run once: the model reads
// context[:-1] in a one-row KV cache, that cache is copied into one row per choice, and a single
// batched forward reads [context.back(), continuation[:-1]] in every row (shorter rows padded at
// the end, which causal attention keeps out of the real positions). Logits are needed only where a
// continuation token is predicted, so the LM head runs on those rows alone.
//
// Under tensor parallelism every rank calls this with the same tokens (the forward's collectives
// pair up) and gets the same result: Transformer::forward gathers the whole vocabulary's logits.
#pragma once
#include <cstdint>
#include <vector>

#include "core/model/transformer.h"

namespace latte {

struct ContinuationScores {
  std::vector<double> log_likelihood;  // per continuation: sum over its tokens of log p(token | prefix), nats
  int64_t tokens = 0;                  // tokens the forward passes read (context once + the batch)
};

// context: at least one token; every continuation at least one; context + continuation - 1 must
// fit the model's context (max_seq_len). Each log-softmax is taken in double.
ContinuationScores score_continuations(Transformer& model, const std::vector<int32_t>& context,
                                       const std::vector<std::vector<int32_t>>& continuations);

}  // namespace latte
