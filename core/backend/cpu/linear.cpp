// Linear layer in nn.Linear layout, forward and backward:
//   forward:  y[M,N]  = x[M,K] . w[N,K]^T      ("=", or "+=" with accumulate)
//   backward: dx[M,K] += dy[M,N] . w[N,K]       (when dx)
//             dw[N,K] += dy[M,N]^T . x[M,K]     (when dw)
// x, y, dy, dx, dw are f32 and contiguous; w is f32 or bf16. All accumulation is f32.
// Reference: reference::linear_*.
//
// Threads and determinism. OpenBLAS's own threading is not thread-count independent: its
// threaded sgemm driver cuts the reduction into different chunks than the single-threaded one
// (for lengths in (Q, 2Q), e.g. 999), and its sgemv hands its 4-row and tail kernels different
// rows depending on the split; both were seen changing bits between 1 and 2 threads. So the
// backend owns the threads: OpenBLAS is kept at one thread, and an OpenMP loop hands out output
// tiles whose edges are a function of the shape only (up to 1024 x 1024, see gemm_tiles.h). Every
// tile is one single-threaded sgemm over the whole reduction, so a result never depends on the
// thread count. On one core (M=512 K=576 N=1536) 512-tiles ran within noise of one whole-matrix
// sgemm; 256-tiles were ~15% slower (packing per call).
//
// bf16 w (M > 1): the tile's rows of w are widened to f32 into a thread-local buffer before its
// sgemm (at most kTile x K floats). For dx the reduction runs over N, so w is widened in
// kChunk-row chunks and the chunks are added in index order: fixed, but not bit-equal to the
// f32-weight result.
//
// M == 1 (decode) skips BLAS: y[n] is one dot per output (OpenMP over n; bf16 is widened inside
// the dot, so w is read once at 2 bytes a weight), dx a column-blocked sum over n in index order,
// dw a rank-1 update. f32 runs at cblas_sgemv's speed (both bound by reading w).
// 2 <= M <= cpu::kSkinnyMaxRows (batched decode) skips BLAS too: skinny_gemm.h reads w in place
// where sgemm would copy (pack) all of it every call.
// linear_forward_group runs several products that read one x (q/k/v, gate/up) as one OpenMP loop:
// at M == 1 over all their rows, above it over all their tiles (each weight cut as alone).
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"
#include "core/backend/cpu/gemm_tiles.h"
#include "core/backend/cpu/quantized_linear.h"
#include "core/backend/cpu/skinny_gemm.h"

namespace latte {
namespace {

constexpr int64_t kChunk = 512;     // rows of a bf16 w widened at a time along the dx reduction

struct LinearDims {
  int64_t M, K, N;  // x[M,K], w[N,K], y[M,N]
};

// Checks x and w against each other and returns the dims; the caller checks the outputs.
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
  LATTE_REQUIRE(w.dim(1) == d.K, ErrorCode::shape_mismatch, op, ": w: expected shape [N, ", d.K, "] to match x ",
                shape_str(x.shape()), ", got ", shape_str(w.shape()));
  for (int64_t v : {d.M, d.K, d.N})
    LATTE_REQUIRE(v <= INT_MAX, ErrorCode::unsupported, op, ": dimension ", v, " of x ", shape_str(x.shape()), " or w ",
                  shape_str(w.shape()), " exceeds the 32-bit BLAS interface");
  return d;
}

// ---- M > 1: single-threaded sgemm per fixed output tile ----

// y[m0:, n0:] (tile) op= x[m0:, :] . w[n0:, :]^T
void forward_tile(float* y, const float* x, const Tensor& w, const LinearDims& d, float beta, int64_t m0, int64_t mb,
                  int64_t n0, int64_t nb) {
  const float* wt;
  if (w.dtype() == DType::bf16) {
    float* buf = cpu::widen_buffer(nb * d.K);
    cpu::widen_bf16(w.u16() + n0 * d.K, buf, nb * d.K);
    wt = buf;
  } else {
    wt = w.f32() + n0 * d.K;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(mb), int(nb), int(d.K), 1.0f, x + m0 * d.K, int(d.K), wt,
              int(d.K), beta, y + m0 * d.N + n0, int(d.N));
}

void forward_tiles(float* y, const float* x, const Tensor& w, const LinearDims& d, float beta) {
  cpu::for_each_tile(d.M, d.N, d.K, [&](int64_t m0, int64_t mb, int64_t n0, int64_t nb) {
    forward_tile(y, x, w, d, beta, m0, mb, n0, nb);
  });
}

// dx[m0:, k0:] (tile) += dy[m0:, :] . w[:, k0:]
void backward_dx_tiles(float* dx, const float* dy, const Tensor& w, const LinearDims& d) {
  const bool bf16 = w.dtype() == DType::bf16;
  cpu::for_each_tile(d.M, d.K, d.N, [&](int64_t m0, int64_t mb, int64_t k0, int64_t kb) {
    if (!bf16) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(mb), int(kb), int(d.N), 1.0f, dy + m0 * d.N, int(d.N),
                  w.f32() + k0, int(d.K), 1.0f, dx + m0 * d.K + k0, int(d.K));
      return;
    }
    float* buf = cpu::widen_buffer(kChunk * kb);
    for (int64_t n0 = 0; n0 < d.N; n0 += kChunk) {
      const int64_t nb = std::min(kChunk, d.N - n0);
      for (int64_t r = 0; r < nb; ++r) cpu::widen_bf16(w.u16() + (n0 + r) * d.K + k0, buf + r * kb, kb);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(mb), int(kb), int(nb), 1.0f, dy + m0 * d.N + n0,
                  int(d.N), buf, int(kb), 1.0f, dx + m0 * d.K + k0, int(d.K));
    }
  });
}

// dw[n0:, k0:] (tile) += dy[:, n0:]^T . x[:, k0:]
void backward_dw_tiles(float* dw, const float* dy, const float* x, const LinearDims& d) {
  cpu::for_each_tile(d.N, d.K, d.M, [&](int64_t n0, int64_t nb, int64_t k0, int64_t kb) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(nb), int(kb), int(d.M), 1.0f, dy + n0, int(d.N), x + k0,
                int(d.K), 1.0f, dw + n0 * d.K + k0, int(d.K));
  });
}

// ---- M == 1: fixed-order loops ----

constexpr int64_t kColumnBlock = 256;  // dx columns per task; acc[] lives on the stack

// bf16 rows for M == 1. Unpacking 16 bf16 weights against zero (vpunpck{l,h}wd puts each one in
// the high half of a 32-bit lane, which is its f32 value) is one instruction per 8 weights where
// a zero-extend and a shift are two, and decode is bound by how fast w streams through; but the
// unpacks yield the weights in the order [0-3, 8-11] and [4-7, 12-15] of each 16 (within 128-bit
// lanes), so x is permuted that way once per call. One row's sum order depends only on K.
constexpr int64_t kUnpackGroup = 16;

void permute_for_unpack(const float* x, float* xp, int64_t K) {
  int64_t k = 0;
  for (; k + kUnpackGroup <= K; k += kUnpackGroup)
    for (int j = 0; j < 4; ++j) {
      xp[k + j] = x[k + j], xp[k + 4 + j] = x[k + 8 + j];
      xp[k + 8 + j] = x[k + 4 + j], xp[k + 12 + j] = x[k + 12 + j];
    }
  for (; k < K; ++k) xp[k] = x[k];
}

inline __m256 bf16_low_f32(__m256i v) {
  return _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), v));
}
inline __m256 bf16_high_f32(__m256i v) {
  return _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), v));
}

// x . w for a permuted x (permute_for_unpack) and a bf16 row w. Four accumulators over 32
// weights a step, 16 more into the first two, the last K % 16 in index order, cpu::hsum8's tree.
float dot_bf16_unpacked(const float* __restrict xp, const uint16_t* __restrict w, int64_t K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k) + cpu::kWeightPrefetchBytes, _MM_HINT_T0);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k + 16));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k), bf16_low_f32(v), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 8), bf16_high_f32(v), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 16), bf16_low_f32(u), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 24), bf16_high_f32(u), a3);
  }
  if (k + 16 <= K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k), bf16_low_f32(v), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 8), bf16_high_f32(v), a1);
    k += 16;
  }
  cpu::f32x8 sum;
  const __m256 folded = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
  std::memcpy(&sum, &folded, sizeof sum);
  float s = cpu::hsum8(sum);
  for (; k < K; ++k) s += xp[k] * bf16_to_f32(w[k]);
  return s;
}

// One M == 1 product of a group: y (= or +=) x . w^T, N rows.
struct GemvJob {
  float* y;
  const Tensor* w;
  int64_t N;
  bool accumulate;
};

// Every row of every job in one OpenMP loop: decode reads ~all weights once per token, and a
// fork/join per small matrix (192 x 576 is ~10 us of streaming) costs a noticeable share of it.
// Row n of a job is computed the same way whatever else is in the loop and whatever the thread
// count, so a group gives exactly what separate calls give.
void gemv_forward(std::span<const GemvJob> jobs, const float* x, int64_t K) {
  bool any_bf16 = false;
  int64_t rows = 0;
  for (const GemvJob& j : jobs) any_bf16 |= j.w->dtype() == DType::bf16, rows += j.N;
  float* xp = nullptr;
  if (any_bf16) {
    xp = cpu::widen_buffer(K);
    permute_for_unpack(x, xp, K);
  }
  std::vector<int64_t> first_row(jobs.size() + 1, 0);  // prefix sums: job i owns [first_row[i], first_row[i+1])
  for (size_t i = 0; i < jobs.size(); ++i) first_row[i + 1] = first_row[i] + jobs[i].N;
#pragma omp parallel for schedule(static) if (rows * K >= cpu::kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const size_t i = size_t(std::upper_bound(first_row.begin(), first_row.end(), r) - first_row.begin()) - 1;
    const GemvJob& j = jobs[i];
    const int64_t n = r - first_row[i];
    const float v = j.w->dtype() == DType::bf16 ? dot_bf16_unpacked(xp, j.w->u16() + n * K, K)
                                                : cpu::dot(x, j.w->f32() + n * K, K);
    j.y[n] = j.accumulate ? j.y[n] + v : v;
  }
}

// dx[k] += sum_n dy[n] w[n, k], n in index order within each column block.
void gemv_backward_dx(float* dx, const float* dy, const Tensor& w, const LinearDims& d) {
  const bool bf16 = w.dtype() == DType::bf16;
  const int64_t n_blocks = (d.K + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (d.N * d.K >= cpu::kParallelMinWork)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t k0 = b * kColumnBlock, kb = std::min(kColumnBlock, d.K - k0);
    float acc[kColumnBlock] = {};
    for (int64_t n = 0; n < d.N; ++n) {
      if (bf16)
        cpu::axpy_bf16(dy[n], w.u16() + n * d.K + k0, acc, kb);
      else
        cpu::axpy(dy[n], w.f32() + n * d.K + k0, acc, kb);
    }
    for (int64_t k = 0; k < kb; ++k) dx[k0 + k] += acc[k];
  }
}

// dw[n, :] += dy[n] x
void gemv_backward_dw(float* dw, const float* dy, const float* x, const LinearDims& d) {
#pragma omp parallel for schedule(static) if (d.N * d.K >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < d.N; ++n) cpu::axpy(dy[n], x, dw + n * d.K, d.K);
}

}  // namespace

void CpuBackend::linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  if (is_block_dtype(w.dtype())) {  // q8_0 / q4_0 / q4_1 weights (GGUF), read in place
    quantized_linear_forward(y, x, w, accumulate);
    return;
  }
  const char* op = "linear_forward";
  const LinearDims d = check_linear(x, w, op);
  cpu::require_f32(y, {d.M, d.N}, op, "y");
  if (d.M == 0 || d.N == 0) return;
  float* yp = y.f32();
  if (d.K == 0) {  // an empty sum
    if (!accumulate) std::fill(yp, yp + d.M * d.N, 0.0f);
    return;
  }
  if (d.M == 1) {
    const GemvJob job{yp, &w, d.N, accumulate};
    gemv_forward(std::span(&job, 1), x.f32(), d.K);
    return;
  }
  if (d.M <= cpu::kSkinnyMaxRows) {
    const cpu::SkinnyJob job{yp, &w, d.N, accumulate};
    cpu::skinny_gemm(std::span(&job, 1), x.f32(), d.M, d.K);
    return;
  }
  cpu::blas_single_threaded();
  forward_tiles(yp, x.f32(), w, d, accumulate ? 1.0f : 0.0f);  // beta = 0: y is written, never read
}

void CpuBackend::linear_forward_group(std::span<Tensor* const> ys, const Tensor& x, std::span<const Tensor* const> ws) {
  const char* op = "linear_forward_group";
  LATTE_REQUIRE(ys.size() == ws.size(), ErrorCode::invalid_argument, op, ": ", ys.size(), " outputs for ", ws.size(),
                " weights");
  bool plain = true;
  for (const Tensor* w : ws) plain = plain && !is_block_dtype(w->dtype());
  if (!plain) {  // q8_0 / q4_0 / q4_1 weights have their own kernels
    for (size_t i = 0; i < ws.size(); ++i) linear_forward(*ys[i], x, *ws[i], false);
    return;
  }
  std::vector<LinearDims> dims;
  for (size_t i = 0; i < ws.size(); ++i) {
    dims.push_back(check_linear(x, *ws[i], op));
    cpu::require_f32(*ys[i], {dims.back().M, dims.back().N}, op, "y");
  }
  if (ws.empty() || dims[0].M == 0) return;
  const int64_t M = dims[0].M, K = dims[0].K;
  if (K == 0) {
    for (Tensor* y : ys) std::fill(y->f32(), y->f32() + y->numel(), 0.0f);
    return;
  }
  if (M == 1) {
    std::vector<GemvJob> jobs;
    for (size_t i = 0; i < ws.size(); ++i)
      if (dims[i].N > 0) jobs.push_back({ys[i]->f32(), ws[i], dims[i].N, false});
    gemv_forward(jobs, x.f32(), K);
    return;
  }
  if (M <= cpu::kSkinnyMaxRows) {
    std::vector<cpu::SkinnyJob> jobs;
    for (size_t i = 0; i < ws.size(); ++i)
      if (dims[i].N > 0) jobs.push_back({ys[i]->f32(), ws[i], dims[i].N, false});
    cpu::skinny_gemm(jobs, x.f32(), M, K);
    return;
  }
  // Every weight's tiles (the very tiles a separate call would cut) in one dynamic loop: the
  // small k/v products no longer end in a barrier where one thread waits for the other.
  std::vector<cpu::TileGrid> grids;
  std::vector<int64_t> first_tile{0};
  for (const LinearDims& d : dims) {
    grids.push_back(cpu::tile_grid(d.M, d.N, d.K));
    first_tile.push_back(first_tile.back() + (d.N > 0 ? grids.back().count() : 0));
  }
  cpu::blas_single_threaded();
  const float* xp = x.f32();
#pragma omp parallel for schedule(dynamic, 1) if (first_tile.back() > 1)
  for (int64_t t = 0; t < first_tile.back(); ++t) {
    const size_t i = size_t(std::upper_bound(first_tile.begin(), first_tile.end(), t) - first_tile.begin()) - 1;
    grids[i].run(t - first_tile[i], [&](int64_t m0, int64_t mb, int64_t n0, int64_t nb) {
      forward_tile(ys[i]->f32(), xp, *ws[i], dims[i], 0.0f, m0, mb, n0, nb);
    });
  }
}

void CpuBackend::linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  if (is_block_dtype(w.dtype())) {
    quantized_linear_backward(dx, dw, dy, x, w);
    return;
  }
  const char* op = "linear_backward";
  const LinearDims d = check_linear(x, w, op);
  cpu::require_f32(dy, {d.M, d.N}, op, "dy");
  if (dx) cpu::require_f32(*dx, {d.M, d.K}, op, "dx");
  if (dw) cpu::require_f32(*dw, {d.N, d.K}, op, "dw");
  if (d.M == 0 || d.N == 0 || d.K == 0) return;  // every product is empty: "+=" leaves dx, dw as they are

  if (d.M == 1) {
    if (dw) gemv_backward_dw(dw->f32(), dy.f32(), x.f32(), d);
    if (dx) gemv_backward_dx(dx->f32(), dy.f32(), w, d);
    return;
  }
  cpu::blas_single_threaded();
  if (dw) backward_dw_tiles(dw->f32(), dy.f32(), x.f32(), d);
  if (dx) backward_dx_tiles(dx->f32(), dy.f32(), w, d);
}

}  // namespace latte
