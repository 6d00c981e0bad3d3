// Token embedding, forward and backward:
//   forward:  out[T,D] = table[tokens[t], :]          ("="; table f32, bf16 or q8_0/q4_0/q4_1, widened exactly)
//   backward: dtable[V,D] += dout[t, :] for each t     ("+=", dtable f32)
// Every token id is checked against [0, V) before anything is written, so a bad id leaves the
// output untouched. Reference: reference::embedding_*.
//
// The vocabulary-parallel variants (embedding_slice_*): the table holds rows [b, b + V) of the
// whole vocabulary (b = vocab_begin), and
//   forward:  out[t, :] = table[tokens[t] - b, :] when b <= tokens[t] < b + V, else 0 ("=")
//   backward: dtable[tokens[t] - b, :] += dout[t, :] for the tokens in the slice only ("+=")
// Only negative ids are errors (checked before anything is written); ids past the slice belong
// to another rank. Reference: reference::embedding_slice_*.
//
// Parallelism: forward rows are independent (OpenMP over t). Backward is a scatter-add in which
// a repeated token adds several rows into one; the threads split the D columns instead and each
// walks t in order, so every element sums its contributions in token order whatever the thread
// count (no atomics, no per-thread copies of the table).
#include <algorithm>
#include <cstring>
#include <utility>

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

// Slice variants: only negative ids are invalid (an id past this rank's rows is another rank's).
void check_slice_tokens(std::span<const int32_t> tokens, int64_t vocab_begin, const char* op) {
  LATTE_REQUIRE(vocab_begin >= 0, ErrorCode::invalid_argument, op, ": vocab_begin is ", vocab_begin,
                ", expected >= 0");
  for (size_t t = 0; t < tokens.size(); ++t) {
    LATTE_REQUIRE(tokens[t] >= 0, ErrorCode::invalid_argument, op, ": token id ", tokens[t], " at position ", t,
                  " is negative");
  }
}


// Checks table-like (table or dtable) and the [T, D] other side; returns {V, D}.
std::pair<int64_t, int64_t> check_rows(const Tensor& table, bool f32_only, const Tensor& rows, int64_t T,
                                       const char* op, const char* table_name, const char* rows_name) {
  cpu::require_host(table, op, table_name);
  if (f32_only) {
    cpu::require_dtype(table, DType::f32, op, table_name);
  } else if (!is_block_dtype(table.dtype())) {  // q8_0/q4_0/q4_1 tables (GGUF) are read row by row
    cpu::require_weight_dtype(table, op, table_name);
  }
  cpu::require_rank(table, 2, "[V, D]", op, table_name);
  cpu::require_contiguous(table, op, table_name);
  cpu::require_f32(rows, {T, table.dim(1)}, op, rows_name);
  return {table.dim(0), table.dim(1)};
}

// out[t] = table[tokens[t] - vocab_begin], a zero row when that falls outside [0, V).
void gather_rows(float* o, const Tensor& table, std::span<const int32_t> tokens, int64_t vocab_begin, int64_t V,
                 int64_t D) {
  const int64_t T = int64_t(tokens.size());
  const DType dt = table.dtype();
  const bool f32 = dt == DType::f32, block = is_block_dtype(dt);
  const float* tab32 = f32 ? table.f32() : nullptr;
  const uint16_t* tab16 = f32 || block ? nullptr : table.u16();
  const char* tabq = block ? static_cast<const char*>(table.raw()) : nullptr;
  const size_t row_bytes = dtype_bytes(dt, D);
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = int64_t(tokens[size_t(t)]) - vocab_begin;
    float* row = o + t * D;
    if (id < 0 || id >= V) {
      std::fill(row, row + D, 0.0f);
    } else if (f32) {
      std::memcpy(row, tab32 + id * D, size_t(D) * 4);
    } else if (block) {
      dequantize_blocks(dt, tabq + size_t(id) * row_bytes, row, D);  // exact
    } else {
      cpu::widen_bf16(tab16 + id * D, row, D);
    }
  }
}

// dtable[tokens[t] - vocab_begin] += dout[t] for the ids inside [0, V). Each thread owns whole
// column blocks and walks the tokens in order.
void scatter_add_rows(float* dt, const float* g, std::span<const int32_t> tokens, int64_t vocab_begin, int64_t V,
                      int64_t D) {
  const int64_t T = int64_t(tokens.size());
  const int64_t n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (T * D >= cpu::kParallelMinWork)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(D, c0 + kColumnBlock);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t id = int64_t(tokens[size_t(t)]) - vocab_begin;
      if (id < 0 || id >= V) continue;
      float* row = dt + id * D;
      const float* src = g + t * D;
      for (int64_t c = c0; c < c1; ++c) row[c] += src[c];
    }
  }
}

}  // namespace

void CpuBackend::embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) {
  const char* op = "embedding_forward";
  const auto [V, D] = check_rows(table, false, out, int64_t(tokens.size()), op, "table", "out");
  check_tokens(tokens, V, op);
  gather_rows(out.f32(), table, tokens, 0, V, D);
}

void CpuBackend::embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) {
  const char* op = "embedding_backward";
  const auto [V, D] = check_rows(dtable, true, dout, int64_t(tokens.size()), op, "dtable", "dout");
  check_tokens(tokens, V, op);
  scatter_add_rows(dtable.f32(), dout.f32(), tokens, 0, V, D);
}

void CpuBackend::embedding_slice_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table,
                                         int64_t vocab_begin) {
  const char* op = "embedding_slice_forward";
  const auto [V, D] = check_rows(table, false, out, int64_t(tokens.size()), op, "table", "out");
  check_slice_tokens(tokens, vocab_begin, op);
  gather_rows(out.f32(), table, tokens, vocab_begin, V, D);
}

void CpuBackend::embedding_slice_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout,
                                          int64_t vocab_begin) {
  const char* op = "embedding_slice_backward";
  const auto [V, D] = check_rows(dtable, true, dout, int64_t(tokens.size()), op, "dtable", "dout");
  check_slice_tokens(tokens, vocab_begin, op);
  scatter_add_rows(dtable.f32(), dout.f32(), tokens, vocab_begin, V, D);
}

}  // namespace latte
