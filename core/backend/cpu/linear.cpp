// Linear layer in nn.Linear layout, forward and backward:
//   forward:  y[M,N]  = x[M,K] . w[N,K]^T      ("=", or "+=" with accumulate)
//   backward: dx[M,K] += dy[M,N] . w[N,K]       (when dx)
//             dw[N,K] += dy[M,N]^T . x[M,K]     (when dw)
// x, y, dy, dx, dw are f32 and contiguous; w is f32 or bf16. Reference: reference::linear_*.
//
// Numerics: every product is an OpenBLAS sgemm (sgemv when M == 1, which skips sgemm's packing
// of w and is what decode runs), accumulating in f32. A bf16 w is widened to f32 a block of
// kBlockRows rows at a time into a thread-local buffer (about 512 KiB, so the widened block is
// still in L2 when sgemm reads it, and a 50k-row LM head never needs a full f32 copy). For dx
// those row blocks split the reduction over N; the blocks are added in index order, so the
// result is fixed, just not bit-equal to the f32-weight path.
//
// Parallelism: OpenBLAS's own threads, which partition the output matrix and keep each
// element's K loop whole, so results do not depend on the thread count (the determinism test
// checks 1 vs 2 threads bit for bit); the bf16 widening is an OpenMP loop over rows.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

constexpr int64_t kBlockElems = int64_t(1) << 17;  // f32 elements per widened block of w

int blas_int(int64_t v, const char* op, const char* what) {
  LATTE_REQUIRE(v <= INT_MAX, ErrorCode::unsupported, op, ": ", what, " = ", v,
                " exceeds the 32-bit BLAS interface");
  return int(v);
}

struct LinearDims {
  int64_t M, K, N;  // x[M,K], w[N,K], y[M,N]
};

// Checks w and x against each other and returns the dims; the outputs are checked by the caller.
LinearDims check_linear(const Tensor& x, const Tensor& w, const char* op) {
  cpu::require_host(x, op, "x");
  cpu::require_dtype(x, DType::f32, op, "x");
  cpu::require_rank(x, 2, "[M, K]", op, "x");
  cpu::require_contiguous(x, op, "x");
  cpu::require_host(w, op, "w");
  cpu::require_weight_dtype(w, op, "w");
  cpu::require_rank(w, 2, "[N, K]", op, "w");
  cpu::require_contiguous(w, op, "w");
  LinearDims d{x.dim(0), x.dim(1), w.dim(0)};
  cpu::require_shape(w, {d.N, d.K}, op, "w");
  blas_int(d.M, op, "M");
  blas_int(d.K, op, "K");
  blas_int(d.N, op, "N");
  return d;
}

// Rows [n0, n0 + rows) of a bf16 w[N,K] widened into buf[rows, K].
void widen_rows(const uint16_t* w, int64_t n0, int64_t rows, int64_t K, float* buf) {
#pragma omp parallel for schedule(static) if (rows * K >= cpu::kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) cpu::widen_bf16(w + (n0 + r) * K, buf + r * K, K);
}

float* widen_buffer(int64_t elems) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < elems) buf.resize(size_t(elems));
  return buf.data();
}

int64_t block_rows(int64_t K) { return std::max<int64_t>(1, kBlockElems / K); }

// y[M, nb] (row stride ldy) op= x[M,K] . wb[nb,K]^T with f32 wb.
void gemm_xwt(const LinearDims& d, int64_t nb, const float* x, const float* wb, float* y, int64_t ldy,
              float beta) {
  if (d.M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(nb), int(d.K), 1.0f, wb, int(d.K), x, 1, beta, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(d.M), int(nb), int(d.K), 1.0f, x, int(d.K), wb,
                int(d.K), beta, y, int(ldy));
  }
}

// dx[M,K] += dyb[M, nb] (row stride ldy) . wb[nb,K] with f32 wb.
void gemm_dyw(const LinearDims& d, int64_t nb, const float* dyb, int64_t ldy, const float* wb, float* dx) {
  if (d.M == 1) {
    cblas_sgemv(CblasRowMajor, CblasTrans, int(nb), int(d.K), 1.0f, wb, int(d.K), dyb, 1, 1.0f, dx, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(d.M), int(d.K), int(nb), 1.0f, dyb, int(ldy), wb,
                int(d.K), 1.0f, dx, int(d.K));
  }
}

}  // namespace

void CpuBackend::linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  const char* op = "linear_forward";
  LinearDims d = check_linear(x, w, op);
  cpu::require_f32(y, {d.M, d.N}, op, "y");
  if (d.M == 0 || d.N == 0) return;
  float* yp = y.f32();
  // sgemv's beta = 0 has scaled (not overwritten) y in some OpenBLAS releases, so a NaN left in
  // y would survive; write the zeros ourselves and always accumulate.
  if (!accumulate && (d.M == 1 || d.K == 0)) std::fill(yp, yp + d.M * d.N, 0.0f);
  if (d.K == 0) return;
  float beta = (accumulate || d.M == 1) ? 1.0f : 0.0f;
  if (w.dtype() == DType::f32) {
    gemm_xwt(d, d.N, x.f32(), w.f32(), yp, d.N, beta);
    return;
  }
  int64_t rows = block_rows(d.K);
  float* buf = widen_buffer(std::min(rows, d.N) * d.K);
  for (int64_t n0 = 0; n0 < d.N; n0 += rows) {
    int64_t nb = std::min(rows, d.N - n0);
    widen_rows(w.u16(), n0, nb, d.K, buf);
    gemm_xwt(d, nb, x.f32(), buf, yp + n0, d.N, beta);
  }
}

void CpuBackend::linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const char* op = "linear_backward";
  LinearDims d = check_linear(x, w, op);
  cpu::require_f32(dy, {d.M, d.N}, op, "dy");
  if (dx) cpu::require_f32(*dx, {d.M, d.K}, op, "dx");
  if (dw) cpu::require_f32(*dw, {d.N, d.K}, op, "dw");
  if (d.M == 0 || d.N == 0 || d.K == 0) return;  // every product is empty: "+=" leaves dx, dw as they are

  if (dw) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(d.N), int(d.K), int(d.M), 1.0f, dy.f32(), int(d.N),
                x.f32(), int(d.K), 1.0f, dw->f32(), int(d.K));
  }
  if (!dx) return;
  if (w.dtype() == DType::f32) {
    gemm_dyw(d, d.N, dy.f32(), d.N, w.f32(), dx->f32());
    return;
  }
  int64_t rows = block_rows(d.K);
  float* buf = widen_buffer(std::min(rows, d.N) * d.K);
  for (int64_t n0 = 0; n0 < d.N; n0 += rows) {
    int64_t nb = std::min(rows, d.N - n0);
    widen_rows(w.u16(), n0, nb, d.K, buf);
    gemm_dyw(d, nb, dy.f32() + n0, d.N, buf, dx->f32());
  }
}

}  // namespace latte
