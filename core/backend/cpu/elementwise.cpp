// Elementwise ops on f32 tensors of equal shape, contiguous:
//   add_inplace: y += x   (the residual stream; "+=" by definition)
// No reductions. Reference: reference::add.
//
// Parallelism: OpenMP over contiguous chunks once the tensor is large enough to pay for a region;
// each element is computed alone, so the split cannot change a bit.
#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {

void CpuBackend::add_inplace(Tensor& y, const Tensor& x) {
  const char* op = "add_inplace";
  cpu::require_host(y, op, "y");
  cpu::require_dtype(y, DType::f32, op, "y");
  cpu::require_contiguous(y, op, "y");
  cpu::require_f32(x, y.shape(), op, "x");

  const int64_t n = y.numel();
  float* yp = y.f32();
  const float* xp = x.f32();
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) yp[i] += xp[i];
}

}  // namespace latte
