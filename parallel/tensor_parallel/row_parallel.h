// Row-parallel linear (Megatron's RowParallelLinear): W [N, K] is split by input columns, so its
// input is the rank's slice of a column-parallel output (the heads' attention output before
// o_proj, the MLP's inner activation before down_proj). Each rank's product is a partial sum of
// y; one all-reduce completes it (Megatron's "g": all-reduce forward, identity backward).
//
// Backward needs no communication: dy is replicated, and dx and dW are the rank's own slices.
#pragma once
#include "parallel/tensor_parallel/tp_group.h"

namespace latte::tensor_parallel {

// y[M, N] += sum over ranks of x_local[M, K_local] . w_local[N, K_local]^T. On one rank this
// accumulates straight into y (no temporary), as the single-device model does.
void row_parallel_forward_accumulate(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w);
// dx_local[M, K_local] += dy . w_local, dw_local += dy^T . x_local; either may be null.
void row_parallel_backward(const TpGroup& g, Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w);

}  // namespace latte::tensor_parallel
