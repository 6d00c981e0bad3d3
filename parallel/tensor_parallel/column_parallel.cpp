#include "parallel/tensor_parallel/column_parallel.h"

namespace latte::tensor_parallel {

void column_parallel_forward(const TpGroup& g, Tensor& y, const Tensor& x, const Tensor& w) {
  g.be.linear_forward(y, x, w, false);
}

void column_parallel_forward_group(const TpGroup& g, std::span<Tensor* const> ys, const Tensor& x,
                                   std::span<const Tensor* const> ws) {
  g.be.linear_forward_group(ys, x, ws);
}

void column_parallel_backward(const TpGroup& g, Tensor* dx_partial, Tensor* dw, const Tensor& dy, const Tensor& x,
                              const Tensor& w) {
  g.be.linear_backward(dx_partial, dw, dy, x, w);
}

void reduce_input_grad(const TpGroup& g, Tensor& dx) { g.all_reduce(dx); }

Tensor gather_output(const TpGroup& g, const Tensor& y_local) {
  if (!g.split()) return y_local;
  const int64_t size = g.comm.size(), M = y_local.dim(0), Nl = y_local.dim(1);
  // all_gather concatenates along rows: blocks[r*M + m] is rank r's row m; each rank's block
  // becomes a column slice of the output.
  Tensor blocks = g.be.empty({size * M, Nl});
  g.comm.all_gather(blocks, y_local);
  Tensor full = g.be.empty({M, size * Nl});
  for (int64_t r = 0; r < size; ++r) {
    Tensor dst = full.narrow(1, r * Nl, (r + 1) * Nl);
    g.be.copy(dst, blocks.slice(r * M, (r + 1) * M));
  }
  return full;
}

}  // namespace latte::tensor_parallel
