// A linear whose weight every rank of the group holds whole, feeding consumers that are split
// across the ranks: MLA's latent down-projection W_dkv (DeepSeek's wkv_a, vLLM's
// ReplicatedLinear). Every rank computes the same latent and keeps the same latent cache, while
// the up-projections that read the latent (W_uk, W_uv) are column-parallel by heads.
//
// Backward: the gradient arriving at the output holds only this rank's heads' share, so the
// weight gradient is summed over the group here, and the input gradient stays partial: the
// caller folds it into the column-parallel input gradient of the same input (reduce_input_grad).
#pragma once
#include "parallel/tensor_parallel/tp_group.h"

namespace latte::tensor_parallel {

// y[M, N] = x[M, K] . w[N, K]^T, the same on every rank.
void replicated_linear_forward(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w);
// dx_partial += dy_partial . w; dw += sum over ranks of dy_partial^T . x.
void replicated_linear_backward(const TpGroup& g, Tensor& dx_partial, Tensor& dw, const Tensor& dy_partial,
                                const Tensor& x, const Tensor& w);

}  // namespace latte::tensor_parallel
