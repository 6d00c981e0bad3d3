// Token embedding, forward and backward:
//   forward:  out[T,D] = table[tokens[t], :]          ("="; table f32 or bf16, widened exactly)
//   backward: dtable[V,D] += dout[t, :] for each t     ("+=", dtable f32)
// Every token id is checked against [0, V) before anything is written, so a bad id leaves the
// output untouched. Reference: reference::embedding_*.
//
// Parallelism: forward rows are independent (OpenMP over t). Backward is a scatter-add in which
// a repeated token adds several rows into one; the threads split the D columns instead and each
// walks t in order, so every element sums its contributions in token order whatever the thread
// count (no atomics, no per-thread copies of the table).
#include <algorithm>
#include <cstring>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

constexpr int64_t kColumnBlock = 64;  // floats per column block in the backward scatter

void check_tokens(std::span<const int32_t> tokens, int64_t V, const char* op) {
  for (size_t t = 0; t < tokens.size(); ++t) {
    LATTE_REQUIRE(tokens[t] >= 0 && tokens[t] < V, ErrorCode::invalid_argument, op, ": token id ", tokens[t],
                  " at position ", t, " is outside the vocabulary [0, ", V, ")");
  }
}

}  // namespace

void CpuBackend::embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) {
  const char* op = "embedding_forward";
  cpu::require_host(table, op, "table");
  cpu::require_weight_dtype(table, op, "table");
  cpu::require_rank(table, 2, "[V, D]", op, "table");
  cpu::require_contiguous(table, op, "table");
  const int64_t V = table.dim(0), D = table.dim(1), T = int64_t(tokens.size());
  cpu::require_f32(out, {T, D}, op, "out");
  check_tokens(tokens, V, op);

  float* o = out.f32();
  if (table.dtype() == DType::f32) {
    const float* tab = table.f32();
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
    for (int64_t t = 0; t < T; ++t) std::memcpy(o + t * D, tab + int64_t(tokens[size_t(t)]) * D, size_t(D) * 4);
  } else {
    const uint16_t* tab = table.u16();
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
    for (int64_t t = 0; t < T; ++t) cpu::widen_bf16(tab + int64_t(tokens[size_t(t)]) * D, o + t * D, D);
  }
}

void CpuBackend::embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) {
  const char* op = "embedding_backward";
  cpu::require_host(dtable, op, "dtable");
  cpu::require_dtype(dtable, DType::f32, op, "dtable");
  cpu::require_rank(dtable, 2, "[V, D]", op, "dtable");
  cpu::require_contiguous(dtable, op, "dtable");
  const int64_t V = dtable.dim(0), D = dtable.dim(1), T = int64_t(tokens.size());
  cpu::require_f32(dout, {T, D}, op, "dout");
  check_tokens(tokens, V, op);

  float* dt = dtable.f32();
  const float* g = dout.f32();
  const int64_t n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(D, c0 + kColumnBlock);
    for (int64_t t = 0; t < T; ++t) {
      float* row = dt + int64_t(tokens[size_t(t)]) * D;
      const float* src = g + t * D;
      for (int64_t c = c0; c < c1; ++c) row[c] += src[c];
    }
  }
}

}  // namespace latte
