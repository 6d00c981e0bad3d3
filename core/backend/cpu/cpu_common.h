// Private to the CPU kernel files (cpu/*.cpp); nothing outside core/backend/cpu includes it.
//
// Two things every kernel file needs:
//  - boundary checks whose messages name the op, the argument and expected vs actual values,
//    e.g. "linear_forward: w: expected shape [1536, 576], got [576, 1536]";
//  - the f32 reductions (dot, sum, max) in ONE fixed summation order: 32 partial sums folded by
//    a fixed tree, then the tail in index order. The order depends only on n, never on the thread
//    count or the caller, which is what makes every kernel bit-reproducible; the partial sums are
//    what lets the loop vectorise without -ffast-math (a plain sum may not be reordered).
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
  LATTE_REQUIRE(t.dtype() == dtype, ErrorCode::shape_mismatch, op, ": ", name, ": expected dtype ", dtype_name(dtype),
                ", got ", dtype_name(t.dtype()));
}

// Weights (linear w, embedding table, rmsnorm w) may be stored as f32 or bf16.
inline void require_weight_dtype(const Tensor& t, const char* op, const char* name) {
  LATTE_REQUIRE(t.dtype() == DType::f32 || t.dtype() == DType::bf16, ErrorCode::shape_mismatch, op, ": ", name,
                ": expected dtype f32 or bf16, got ", dtype_name(t.dtype()));
}

inline void require_shape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  LATTE_REQUIRE(t.shape() == shape, ErrorCode::shape_mismatch, op, ": ", name, ": expected shape ", shape_str(shape),
                ", got ", shape_str(t.shape()));
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
//
// A reduction keeps 32 partial sums in four 8-float vectors s0..s3 (lane l of s_k sums elements
// i = 32m + 8k + l), then 8 more partial sums for a remaining 8-element block (added to s0),
// folds them by a fixed tree ((s0 + s2) + (s1 + s3), then lanes l + 4, l + 2, l + 1), and adds the
// last n % 8 elements in index order. GCC/Clang vector extensions make the vector width explicit,
// so the tree is what the compiler emits, not a guess about its vectoriser.

typedef float f32x8 __attribute__((vector_size(32)));

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}

inline f32x8 load8_bf16(const uint16_t* p) {
  f32x8 v;
  for (int l = 0; l < 8; ++l) v[l] = bf16_to_f32(p[l]);
  return v;
}

// (lane l + lane l+4), then (+2), then (+1).
inline float hsum8(f32x8 v) {
  const float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
  return (a0 + a2) + (a1 + a3);
}

// sum_i a[i] * load(b, i), with Load(b, i) returning 8 floats from element i of b.
template <typename B, typename Load, typename Scalar>
inline float dot_impl(const float* __restrict a, const B* __restrict b, int64_t n, Load load, Scalar scalar) {
  f32x8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 += load8(a + i) * load(b + i);
    s1 += load8(a + i + 8) * load(b + i + 8);
    s2 += load8(a + i + 16) * load(b + i + 16);
    s3 += load8(a + i + 24) * load(b + i + 24);
  }
  for (; i + 8 <= n; i += 8) s0 += load8(a + i) * load(b + i);
  float s = hsum8((s0 + s2) + (s1 + s3));
  for (; i < n; ++i) s += a[i] * scalar(b[i]);
  return s;
}

// sum_i a[i] * b[i]
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  return dot_impl(a, b, n, load8, [](float v) { return v; });
}

// sum_i a[i] * float(b[i]) for bf16 bits b: dot() with the widening fused into the loads.
inline float dot_bf16(const float* __restrict a, const uint16_t* __restrict b, int64_t n) {
  return dot_impl(a, b, n, load8_bf16, bf16_to_f32);
}

// sum_i a[i], same tree as dot.
inline float sum(const float* __restrict a, int64_t n) {
  f32x8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 += load8(a + i);
    s1 += load8(a + i + 8);
    s2 += load8(a + i + 16);
    s3 += load8(a + i + 24);
  }
  for (; i + 8 <= n; i += 8) s0 += load8(a + i);
  float s = hsum8((s0 + s2) + (s1 + s3));
  for (; i < n; ++i) s += a[i];
  return s;
}

// max_i a[i] for n >= 1 (exact, so the order does not matter). A NaN may be skipped here, but it
// still reaches the result through exp(x - max) and the sum, which is all softmax needs.
inline float max_of(const float* __restrict a, int64_t n) {
  float m = a[0];
  int64_t i = 0;
  if (n >= 8) {
    f32x8 mv = load8(a);
    for (i = 8; i + 8 <= n; i += 8) {
      const f32x8 v = load8(a + i);
      mv = v > mv ? v : mv;
    }
    for (int l = 0; l < 8; ++l) m = mv[l] > m ? mv[l] : m;
  }
  for (; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// y[i] += alpha * x[i] (no reduction: any order gives the same bits)
inline void axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// y[i] += alpha * float(x[i]) for bf16 bits x.
inline void axpy_bf16(float alpha, const uint16_t* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * bf16_to_f32(x[i]);
}

// dst[i] = float(src[i]) for bf16 bits: a shift, exact.
inline void widen_bf16(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = uint32_t(src[i]) << 16;
    std::memcpy(&dst[i], &bits, 4);
  }
}

}  // namespace latte::cpu
