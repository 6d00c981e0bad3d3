// Private to the CPU kernel files (cpu/*.cpp); nothing outside core/backend/cpu includes it.
//
// Two things every kernel file needs:
//  - boundary checks whose messages name the op, the argument and expected vs actual values,
//    e.g. "linear_forward: w: expected shape [1536, 576], got [576, 1536]";
//  - the f32 reductions (dot, sum, max) in ONE fixed summation order: kLanes partial sums folded
//    by a fixed tree, then the tail in index order. The order depends only on n, never on the
//    thread count or the caller, which is what makes every kernel bit-reproducible; the lanes are
//    what lets GCC vectorise the loop without -ffast-math (it may not reorder a plain sum).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/tensor/tensor.h"

namespace latte::cpu {

// Below this many elements of work an OpenMP region costs more than it saves (used in if()).
constexpr int64_t kParallelMinWork = int64_t(1) << 15;

// ---- boundary checks --------------------------------------------------------------------------

inline void require_host(const Tensor& t, const char* op, const char* name) {
  LATTE_REQUIRE(t.defined(), ErrorCode::invalid_argument, op, ": ", name, " is an undefined tensor");
  LATTE_REQUIRE(t.device().kind == DeviceKind::cpu, ErrorCode::invalid_argument, op, ": ", name, " is on ",
                device_name(t.device()), ", the CPU backend needs host tensors");
}

inline void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  LATTE_REQUIRE(t.dtype() == dtype, ErrorCode::shape_mismatch, op, ": ", name, ": expected dtype ",
                dtype_name(dtype), ", got ", dtype_name(t.dtype()));
}

// Weights (linear w, embedding table, rmsnorm w) may be stored as f32 or bf16.
inline void require_weight_dtype(const Tensor& t, const char* op, const char* name) {
  LATTE_REQUIRE(t.dtype() == DType::f32 || t.dtype() == DType::bf16, ErrorCode::shape_mismatch, op, ": ", name,
                ": expected dtype f32 or bf16, got ", dtype_name(t.dtype()));
}

inline void require_shape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  LATTE_REQUIRE(t.shape() == shape, ErrorCode::shape_mismatch, op, ": ", name, ": expected shape ",
                shape_str(shape), ", got ", shape_str(t.shape()));
}

// `layout` spells the expected dims, e.g. "[M, K]".
inline void require_rank(const Tensor& t, int rank, const char* layout, const char* op, const char* name) {
  LATTE_REQUIRE(t.ndim() == rank, ErrorCode::shape_mismatch, op, ": ", name, ": expected a ", rank, "-D tensor ",
                layout, ", got shape ", shape_str(t.shape()));
}

inline void require_contiguous(const Tensor& t, const char* op, const char* name) {
  LATTE_REQUIRE(t.is_contiguous(), ErrorCode::invalid_argument, op, ": ", name, " must be contiguous (shape ",
                shape_str(t.shape()), ", strides ", shape_str(t.strides()), ")");
}

// The common case: a host f32 activation or gradient of an exact shape, contiguous.
inline void require_f32(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  require_host(t, op, name);
  require_dtype(t, DType::f32, op, name);
  require_shape(t, shape, op, name);
  require_contiguous(t, op, name);
}

// ---- f32 primitives with a fixed summation order ------------------------------------------------

constexpr int kLanes = 32;  // 4 AVX2 registers of independent partial sums

// Folds the kLanes partial sums pairwise: lane j += lane j + w for w = 16, 8, 4, 2, 1.
inline float fold_lanes(float* acc) {
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// sum_i a[i] * b[i]
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  float s = fold_lanes(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// sum_i a[i]
inline float sum(const float* __restrict a, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j];
  float s = fold_lanes(acc);
  for (; i < n; ++i) s += a[i];
  return s;
}

// max_i a[i] for n >= 1; NaN-propagating is not needed: a NaN logit poisons the sum anyway.
inline float max_of(const float* __restrict a, int64_t n) {
  float m = a[0];
  for (int64_t i = 1; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// y[i] += alpha * x[i] (no reduction: any order gives the same bits)
inline void axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// dst[i] = float(src[i]) for bf16 bits: a shift, exact.
inline void widen_bf16(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = uint32_t(src[i]) << 16;
    std::memcpy(&dst[i], &bits, 4);
  }
}

// Row `row` of a [rows, n] f32 or bf16 weight as f32: a pointer into w when it is f32, otherwise
// widened into tmp[n].
inline const float* weight_row_f32(const Tensor& w, int64_t row, int64_t n, float* tmp) {
  if (w.dtype() == DType::f32) return w.f32() + row * n;
  widen_bf16(w.u16() + row * n, tmp, n);
  return tmp;
}

}  // namespace latte::cpu
