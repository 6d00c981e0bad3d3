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
#include <cblas.h>

#include <cstdint>
#include <cstring>

#include "core/tensor/tensor.h"

namespace latte::cpu {

// Below this many elements of work an OpenMP region costs more than it saves (used in if()).
constexpr int64_t kParallelMinWork = int64_t(1) << 15;

// How far ahead of the weight row being read a decode (M == 1) dot product prefetches. Decode is
// bound by streaming the weights from memory, and the hardware prefetchers alone left it at 18 GB/s
// of the 29 GB/s a 2-thread read reaches on the development Xeon (they restart at every 4 KiB
// page); a software prefetch 2 KiB ahead, one per 64-byte line read, took a bf16 row sweep to 28.6
// GB/s (1 KiB: 21; 4 KiB: 28.6). Rows of one weight are contiguous, so the prefetch runs on into
// the next rows; past the end of the weight it is a harmless hint.
constexpr int64_t kWeightPrefetchBytes = 2048;

// OpenBLAS's own threading is not thread-count independent (linear.cpp explains), so every
// kernel that calls BLAS does so from its own OpenMP tasks with OpenBLAS held at one thread.
// Re-checked on every call because any other code in the process may have raised it.
inline void blas_single_threaded() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

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

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

// 8 bf16 values widened to f32: zero-extend and shift into the high half (exact; one vpmovzxwd
// and one vpslld instead of 8 scalar conversions).
inline f32x8 load8_bf16(const uint16_t* p) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  const u32x8 bits = __builtin_convertvector(h, u32x8) << 16;
  f32x8 v;
  std::memcpy(&v, &bits, sizeof v);
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
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 v = load8(y + i) + alpha * load8_bf16(x + i);
    std::memcpy(y + i, &v, sizeof v);
  }
  for (; i < n; ++i) y[i] += alpha * bf16_to_f32(x[i]);
}

// ---- exp ----------------------------------------------------------------------------------------
//
// exp(x) for f32 by range reduction x = n ln2 + r, |r| <= ln2/2, and a degree-6 polynomial
// (Cephes expf's coefficients): within 2 ulp of exp over [-87, 88], about 10x faster than
// std::exp in a loop because it vectorises. Below -87.3 it returns 0 (softmax weights that small
// cannot matter next to the max's weight of 1); above 88.7, +inf; NaN stays NaN. exp8 and exp1
// run the same operations, so a value does not depend on whether it sat in the vector body or the
// tail.

typedef int32_t i32x8 __attribute__((vector_size(32)));

inline f32x8 exp8(f32x8 x) {
  const f32x8 hi = x > 88.7228f ? f32x8{} + 1.0f : f32x8{};   // lanes that overflow
  const f32x8 lo = x < -87.3365f ? f32x8{} + 1.0f : f32x8{};  // lanes that underflow
  const f32x8 nan = x != x ? f32x8{} + 1.0f : f32x8{};
  f32x8 xc = x > 88.7228f ? f32x8{} + 88.7228f : x;
  xc = xc < -87.3365f ? f32x8{} - 87.3365f : xc;
  xc = nan != 0.0f ? f32x8{} : xc;
  // n = floor(x / ln2 + 1/2)
  const f32x8 t = xc * 1.44269504088896341f + 0.5f;
  const i32x8 ti = __builtin_convertvector(t, i32x8);  // truncation toward zero
  f32x8 fn = __builtin_convertvector(ti, f32x8);
  fn = fn > t ? fn - 1.0f : fn;
  const f32x8 r = (xc - fn * 0.693359375f) - fn * -2.12194440e-4f;
  f32x8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n by building the exponent bits; n is in [-126, 128] after the clamps, and 2^128 is not a
  // float, so n = 128 is built as 2^127 * 2.
  const i32x8 ni = __builtin_convertvector(fn, i32x8);
  const i32x8 top = ni > 127;  // -1 where n = 128
  const i32x8 bits = (ni + top + 127) << 23;
  f32x8 two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  f32x8 y = p * two_n;
  y = top != 0 ? y * 2.0f : y;
  y = hi != 0.0f ? f32x8{} + __builtin_inff() : y;
  y = lo != 0.0f ? f32x8{} : y;
  y = nan != 0.0f ? x : y;
  return y;
}

inline float exp1(float x) {
  f32x8 v = {};
  v[0] = x;
  return exp8(v)[0];
}

// dst[i] = exp(src[i] - shift); dst may be src.
inline void exp_shifted(const float* src, float* dst, float shift, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 v = exp8(load8(src + i) - shift);
    std::memcpy(dst + i, &v, sizeof v);
  }
  for (; i < n; ++i) dst[i] = exp1(src[i] - shift);
}
inline void exp_shifted_inplace(float* a, float shift, int64_t n) { exp_shifted(a, a, shift, n); }

// dst[i] = float(src[i]) for bf16 bits: a shift, exact.
inline void widen_bf16(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 v = load8_bf16(src + i);
    std::memcpy(dst + i, &v, sizeof v);
  }
  for (; i < n; ++i) {
    uint32_t bits = uint32_t(src[i]) << 16;
    std::memcpy(&dst[i], &bits, 4);
  }
}

}  // namespace latte::cpu
