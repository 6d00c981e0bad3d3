#include "parallel/tensor_parallel/replicated_linear.h"

namespace latte::tensor_parallel {

void replicated_linear_forward(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w) {
  g.be.linear_forward(y, x, w, false);
}

void replicated_linear_backward(const TpGroup& g, Tensor& dx_partial, Tensor& dw, const Tensor& dy_partial,
                                const Tensor& x, const Tensor& w) {
  if (!g.split()) {
    g.be.linear_backward(&dx_partial, &dw, dy_partial, x, w);
    return;
  }
  Tensor dw_rank = g.be.zeros(dw.shape());
  g.be.linear_backward(&dx_partial, &dw_rank, dy_partial, x, w);
  g.comm.all_reduce(dw_rank, ReduceOp::sum);
  g.be.add_inplace(dw, dw_rank);
}

}  // namespace latte::tensor_parallel
