// RMSNorm over the last dim, forward and backward:
//   forward:  rstd[t] = 1 / sqrt(mean_i x[t,i]^2 + eps);  y[t,i] = x[t,i] * rstd[t] * w[i]   ("=")
//   backward: with g = dy * w and c[t] = sum_i g[t,i] x[t,i],
//             dx[t,i] += rstd[t] * g[t,i] - rstd[t]^3 * c[t] / D * x[t,i]                 ("+=")
//             dw[i]   += sum_t dy[t,i] * x[t,i] * rstd[t]                                 ("+=")
// x, y, dy, dx, rstd, dw are f32; w is f32 or bf16 (widened once per call). Sums of squares and
// c[t] accumulate in f32 (cpu::dot order); the backward takes rstd as saved by the forward.
// Reference: reference::rmsnorm_*.
//
// Parallelism: rows are independent in the forward and in dx (OpenMP over t). dw reduces over
// t, so its loop is split over column blocks instead and each walks t in order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

constexpr int64_t kColumnBlock = 64;  // floats per column block of the dw reduction

struct NormDims {
  int64_t T, D;
};

NormDims check_norm_inputs(const Tensor& x, const Tensor& w, const char* op) {
  cpu::require_host(x, op, "x");
  cpu::require_dtype(x, DType::f32, op, "x");
  cpu::require_rank(x, 2, "[T, D]", op, "x");
  cpu::require_contiguous(x, op, "x");
  NormDims d{x.dim(0), x.dim(1)};
  LATTE_REQUIRE(d.D > 0, ErrorCode::shape_mismatch, op, ": x: the normalised dim D must be > 0, got shape ",
                shape_str(x.shape()));
  cpu::require_host(w, op, "w");
  cpu::require_weight_dtype(w, op, "w");
  cpu::require_shape(w, {d.D}, op, "w");
  cpu::require_contiguous(w, op, "w");
  return d;
}

// w as f32: the tensor's own data, or a widened copy kept alive by `store`.
const float* weights_f32(const Tensor& w, std::vector<float>& store) {
  if (w.dtype() == DType::f32) return w.f32();
  store.resize(size_t(w.numel()));
  cpu::widen_bf16(w.u16(), store.data(), w.numel());
  return store.data();
}

}  // namespace

void CpuBackend::rmsnorm_forward(Tensor& y, Tensor* rstd, const Tensor& x, const Tensor& w, float eps) {
  const char* op = "rmsnorm_forward";
  NormDims d = check_norm_inputs(x, w, op);
  cpu::require_f32(y, {d.T, d.D}, op, "y");
  if (rstd) cpu::require_f32(*rstd, {d.T}, op, "rstd");
  LATTE_REQUIRE(eps >= 0.0f, ErrorCode::invalid_argument, op, ": eps must be >= 0, got ", eps);

  std::vector<float> w_store;
  const float* wf = weights_f32(w, w_store);
  const float* xp = x.f32();
  float* yp = y.f32();
  float* rp = rstd ? rstd->f32() : nullptr;
  const int64_t T = d.T, D = d.D;
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = xp + t * D;
    float* yr = yp + t * D;
    const float r = 1.0f / std::sqrt(cpu::dot(xr, xr, D) / float(D) + eps);
    for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * r * wf[i];
    if (rp) rp[t] = r;
  }
}

void CpuBackend::rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                  const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  NormDims d = check_norm_inputs(x, w, op);
  cpu::require_f32(dy, {d.T, d.D}, op, "dy");
  cpu::require_f32(rstd, {d.T}, op, "rstd");
  cpu::require_f32(dx, {d.T, d.D}, op, "dx");
  cpu::require_f32(dw, {d.D}, op, "dw");

  std::vector<float> w_store;
  const float* wf = weights_f32(w, w_store);
  const float* xp = x.f32();
  const float* gp = dy.f32();
  const float* rp = rstd.f32();
  float* dxp = dx.f32();
  float* dwp = dw.f32();
  const int64_t T = d.T, D = d.D;
  const bool parallel = T * D >= cpu::kParallelMinWork;

#pragma omp parallel if (parallel)
  {
    std::vector<float> g(static_cast<size_t>(D));  // dy * w for one row, per thread
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = xp + t * D;
      const float* dyr = gp + t * D;
      float* dxr = dxp + t * D;
      for (int64_t i = 0; i < D; ++i) g[size_t(i)] = dyr[i] * wf[i];
      const float r = rp[t];
      const float k = r * r * r * cpu::dot(g.data(), xr, D) / float(D);
      for (int64_t i = 0; i < D; ++i) dxr[i] += r * g[size_t(i)] - k * xr[i];
    }
  }

  const int64_t n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(D, c0 + kColumnBlock);
    for (int64_t t = 0; t < T; ++t) {
      const float r = rp[t];
      const float* xr = xp + t * D;
      const float* dyr = gp + t * D;
      for (int64_t c = c0; c < c1; ++c) dwp[c] += dyr[c] * xr[c] * r;
    }
  }
}

}  // namespace latte
