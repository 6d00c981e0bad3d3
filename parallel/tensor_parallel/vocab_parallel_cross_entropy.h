// Vocabulary-parallel cross-entropy (Megatron's vocab_parallel_cross_entropy): the logits are the
// column-parallel lm_head's output, rank r holding columns [vocab_begin, vocab_begin + V/size).
// loss_t = logsumexp over all ranks' logits - the target's logit, from three all-reduces of [N]
// vectors (row max, sum of exponentials, target logit): no rank ever holds the full [N, V].
// The backend ops are Backend::cross_entropy_slice_*; on one rank the plain cross-entropy runs.
#pragma once
#include <cstdint>
#include <span>

#include "parallel/tensor_parallel/tp_group.h"

namespace latte::tensor_parallel {

// losses[N] (0 where targets < 0); lse[N] receives the log-sum-exp over the whole vocabulary
// when split (backward needs it), and is left untouched on one rank. Targets >= vocab_size throw
// invalid_argument naming the target and its position.
void vocab_parallel_cross_entropy_forward(const TpGroup& g, Tensor& losses, Tensor& lse, const Tensor& logits_local,
                                          std::span<const int32_t> targets, int64_t vocab_begin, int64_t vocab_size);
// dlogits_local[N, V/size] = scale * (softmax - onehot) over this rank's columns.
void vocab_parallel_cross_entropy_backward(const TpGroup& g, Tensor& dlogits_local, const Tensor& logits_local,
                                           const Tensor& lse, std::span<const int32_t> targets, int64_t vocab_begin,
                                           float scale);

}  // namespace latte::tensor_parallel
