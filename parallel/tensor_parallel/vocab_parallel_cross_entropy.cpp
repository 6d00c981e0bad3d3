#include "parallel/tensor_parallel/vocab_parallel_cross_entropy.h"

namespace latte::tensor_parallel {

void vocab_parallel_cross_entropy_forward(const TpGroup& g, Tensor& losses, Tensor& lse, const Tensor& logits_local,
                                          std::span<const int32_t> targets, int64_t vocab_begin, int64_t vocab_size) {
  if (!g.split()) {
    g.be.cross_entropy_forward(losses, logits_local, targets);
    return;
  }
  for (size_t n = 0; n < targets.size(); ++n)
    LATTE_REQUIRE(targets[n] < vocab_size, ErrorCode::invalid_argument, "target ", targets[n], " at position ", n,
                  " is outside the vocabulary of ", vocab_size);
  const int64_t N = logits_local.dim(0);
  Tensor row_max = g.be.empty({N}), sum_exp = g.be.empty({N}), target_logit = g.be.empty({N});
  g.be.cross_entropy_slice_max(row_max, logits_local);
  g.comm.all_reduce(row_max, ReduceOp::max);
  g.be.cross_entropy_slice_sums(sum_exp, target_logit, logits_local, row_max, targets, vocab_begin);
  g.comm.all_reduce(sum_exp, ReduceOp::sum);
  g.comm.all_reduce(target_logit, ReduceOp::sum);
  lse = g.be.empty({N});
  g.be.cross_entropy_slice_losses(losses, lse, row_max, sum_exp, target_logit, targets);
}

void vocab_parallel_cross_entropy_backward(const TpGroup& g, Tensor& dlogits_local, const Tensor& logits_local,
                                           const Tensor& lse, std::span<const int32_t> targets, int64_t vocab_begin,
                                           float scale) {
  if (!g.split()) {
    g.be.cross_entropy_backward(dlogits_local, logits_local, targets, scale);
    return;
  }
  g.be.cross_entropy_slice_backward(dlogits_local, logits_local, lse, targets, vocab_begin, scale);
}

}  // namespace latte::tensor_parallel
