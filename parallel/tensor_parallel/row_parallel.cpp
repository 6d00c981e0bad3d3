#include "parallel/tensor_parallel/row_parallel.h"

namespace latte::tensor_parallel {

void row_parallel_forward_accumulate(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w) {
  if (!g.split()) {
    g.be.linear_forward(y, x, w, true);
    return;
  }
  Tensor partial = g.be.empty(y.shape());
  g.be.linear_forward(partial, x, w, false);
  g.comm.all_reduce(partial, ReduceOp::sum);
  g.be.add_inplace(y, partial);
}

void row_parallel_backward(const TpGroup& g, Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w) {
  g.be.linear_backward(dx, dw, dy, x, w);
}

}  // namespace latte::tensor_parallel
