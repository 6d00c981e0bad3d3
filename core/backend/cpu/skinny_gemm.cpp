#include "core/backend/cpu/skinny_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/backend/cpu/cpu_common.h"
#include "core/backend/cpu/gemm_tiles.h"

namespace latte::cpu {
namespace {

// y[m, n] (= or +=) x[m, :] . w[n, :] for MR rows of x (stride K) and NR rows of w (stride K).
// Every output has its own accumulator and the same summation order whatever MR and NR are.
template <int MR, int NR>
void micro_tile(const float* __restrict x, const float* __restrict w, int64_t K, float* y, int64_t ldy,
                bool accumulate) {
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  const int64_t K8 = K & ~int64_t(7);
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 wv[NR];
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      wv[n] = _mm256_loadu_ps(w + n * K + k);
      // Keeps the panel vector in a register: folded into the FMAs as a memory operand (what
      // GCC does otherwise) it is loaded once per row of x, 12 loads per 10 FMAs instead of 7.
      asm("" : "+x"(wv[n]));
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * K + k);
#pragma GCC unroll 8
      for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_fmadd_ps(xv, wv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      f32x8 lanes;
      std::memcpy(&lanes, &acc[m][n], sizeof lanes);
      float s = hsum8(lanes);
      for (int64_t k = K8; k < K; ++k) s += x[m * K + k] * w[n * K + k];
      float& out = y[m * ldy + n];
      out = accumulate ? out + s : s;
    }
}

// One panel of nr (<= kPanelRows) rows of w against all M rows of x, two rows of x at a time.
template <int NR>
void panel(const float* x, int64_t M, const float* w, int64_t K, float* y, int64_t ldy, bool accumulate) {
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) micro_tile<2, NR>(x + m * K, w, K, y + m * ldy, ldy, accumulate);
  if (m < M) micro_tile<1, NR>(x + m * K, w, K, y + m * ldy, ldy, accumulate);
}

void run_panel(const float* x, int64_t M, const float* w, int64_t nr, int64_t K, float* y, int64_t ldy,
               bool accumulate) {
  static_assert(kPanelRows == 5, "run_panel dispatches panels of 1..5 rows");
  switch (nr) {
    case 5: panel<5>(x, M, w, K, y, ldy, accumulate); break;
    case 4: panel<4>(x, M, w, K, y, ldy, accumulate); break;
    case 3: panel<3>(x, M, w, K, y, ldy, accumulate); break;
    case 2: panel<2>(x, M, w, K, y, ldy, accumulate); break;
    default: panel<1>(x, M, w, K, y, ldy, accumulate); break;
  }
}

}  // namespace

void skinny_gemm(std::span<const SkinnyJob> jobs, const float* x, int64_t M, int64_t K) {
  // Panels of every job, numbered through: job i owns panels [first[i], first[i + 1]).
  std::vector<int64_t> first(jobs.size() + 1, 0);
  int64_t rows = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    first[i + 1] = first[i] + (jobs[i].N + kPanelRows - 1) / kPanelRows;
    rows += jobs[i].N;
  }
  const int64_t panels = first.back();
#pragma omp parallel for schedule(static) if (M * rows * K >= kParallelMinWork)
  for (int64_t p = 0; p < panels; ++p) {
    const size_t i = size_t(std::upper_bound(first.begin(), first.end(), p) - first.begin()) - 1;
    const SkinnyJob& j = jobs[i];
    const int64_t n0 = (p - first[i]) * kPanelRows, nr = std::min(kPanelRows, j.N - n0);
    const float* w;
    if (j.w->dtype() == DType::bf16) {
      float* buf = widen_buffer(kPanelRows * K);
      widen_bf16(j.w->u16() + n0 * K, buf, nr * K);
      w = buf;
    } else {
      w = j.w->f32() + n0 * K;
    }
    run_panel(x, M, w, nr, K, j.y + n0, j.N, j.accumulate);
  }
}

}  // namespace latte::cpu
