// Column-parallel linear (Megatron's ColumnParallelLinear): W [N, K] is split by output rows, so
// each rank computes its own slice of y = x . W^T from the replicated input x, with no
// communication. Used for q/k/v, MLA's W_kr, W_uk, W_uv (split by heads), the MLP's gate and up
// (split by the inner dimension) and the lm_head (split by vocabulary).
//
// Backward: each rank's rows give only a part of dL/dx. Several column-parallel weights usually
// read the same input (q, k and v read one normed x), so the caller accumulates all their parts
// into one dx and reduces once with reduce_input_grad (Megatron's "f": identity forward,
// all-reduce backward).
#pragma once
#include "parallel/tensor_parallel/tp_group.h"

namespace latte::tensor_parallel {

// y[M, N_local] = x[M, K] . w_local[N_local, K]^T
void column_parallel_forward(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w);
// ys[i] = x . ws[i]^T for column-parallel weights that read the same x (q/k/v, gate/up): one
// backend call, so a decode step runs them as one parallel loop.
void column_parallel_forward_group(const TpGroup& g, std::span<Tensor* const> ys, const Tensor& x,
                                   std::span<const Tensor* const> ws);
// dx_partial[M, K] += dy . w_local (this rank's part of dL/dx), dw_local += dy^T . x; either may be null.
void column_parallel_backward(const TpGroup& g, Tensor* dx_partial, Tensor* dw, const Tensor& dy, const Tensor& x,
                              const Tensor& w);
// dx = sum over the group of the ranks' parts: once per replicated input, after every
// column-parallel (and replicated_linear) consumer of it has added its part.
void reduce_input_grad(const TpGroup& g, Tensor& dx);
// The full output [M, N] from every rank's y_local [M, N/size] (rank order along columns): for
// the logits a sampler needs whole. Returns y_local itself on one rank.
Tensor gather_output(const TpGroup& g, const Tensor& y_local);

}  // namespace latte::tensor_parallel
