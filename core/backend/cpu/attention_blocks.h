// Private to the CPU kernel files: the GEMM form of causal attention for one block of queries,
// shared by attention_forward's blocked path (attention.cpp) and paged_attention's chunked-prefill
// path (paged_attention.cpp), so that both compute the same bits from the same keys.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/backend/cpu/cpu_common.h"

namespace latte::cpu {

constexpr int64_t kQueryBlock = 64;        // queries per block (times the G heads of a KV head)
constexpr int64_t kMinBlockedQueries = 8;  // below this the per-row form is as fast

// The calling thread's scratch, grown on demand.
inline float* scratch(std::vector<float>& buf, int64_t n) {
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

// Qm [M, Dk] holds the block's query rows r = g * nq + i (head g of the group, query i); query i
// sees keys [0, seen0 + i + 1) of K [n_keys, Dk] and V [n_keys, Dv] (row strides ldk, ldv). With
// single-threaded OpenBLAS: S [M, n_keys] = scale Qm K^T, each row's softmax numerator exp(s - max)
// over its visible keys (zero past them), O [M, Dv] = S V, not yet divided by row_sum[r].
inline void attend_query_block(const float* Qm, int64_t M, int64_t nq, int64_t seen0, const float* K, int64_t ldk,
                               const float* V, int64_t ldv, int64_t n_keys, int64_t Dk, int64_t Dv, float scale,
                               float* S, float* O, float* row_max, float* row_sum) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(n_keys), int(Dk), scale, Qm, int(Dk), K, int(ldk),
              0.0f, S, int(n_keys));
  for (int64_t r = 0; r < M; ++r) {
    float* row = S + r * n_keys;
    const int64_t n = seen0 + r % nq + 1;
    const float m = max_of(row, n);
    exp_shifted_inplace(row, m, n);
    std::fill(row + n, row + n_keys, 0.0f);
    row_max[r] = m;
    row_sum[r] = sum(row, n);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(Dv), int(n_keys), 1.0f, S, int(n_keys), V,
              int(ldv), 0.0f, O, int(Dv));
}

}  // namespace latte::cpu
