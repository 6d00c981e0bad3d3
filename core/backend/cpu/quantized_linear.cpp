// Linear layers with a block-quantized weight (q8_0, q4_0, q4_1 as in GGML; layouts in dtype.h),
// read in place at 34/18/20 bytes per 32 weights instead of 128 (f32) or 64 (bf16):
//   forward:  y[M,N]  = x[M,K] . w[N,K]^T      ("=", or "+=" with accumulate)
//   backward: dx[M,K] += dy[M,N] . w[N,K]       (dw of a quantized weight is an error)
// Reference: reference::linear_* on the dequantized weights (Tensor::to(DType::f32)).
//
// M <= kQuantizedSmallM (decode): the integer path, as llama.cpp's CPU backend. Each row of x is
// quantized once per call to int8 blocks of 32 (d_x = amax / 127, q = round-half-even(x / d_x),
// and for q4_1 the block sum s_x = d_x * sum(q)). A weight block then contributes
//   q8_0: d_w d_x sum_j qw_j qx_j            q4_0: d_w d_x sum_j (nib_j - 8) qx_j
//   q4_1: d_w d_x sum_j nib_j qx_j + m_w s_x
// with the integer sums exact. Error against the f32 product of the dequantized weights: only
// the rounding of x, |x - d_x q| <= d_x / 2 = amax_b(x) / 254 per element, so
//   |y_n - y_ref_n| <= sum_b amax_b(x) / 254 * sum_{j in b} |w_nj|   (+ f32 rounding)
// (about 0.4% of the block's scale; this is what tests/unit/backend/quantized_linear_test.cpp
// checks). Blocks are accumulated in f32 in a fixed order and every y[m, n] is computed by one
// thread (OpenMP over n), so the result is bit-identical for any thread count.
//   AVX2 kernel (picked at run time: __builtin_cpu_supports avx2, fma; CPUID f16c): _mm256_maddubs_epi16
//   (unsigned x signed bytes; for signed weights |w| x sign(x, w)) then _mm256_madd_epi16 give 8
//   int32 partial sums per block, converted to f32 and accumulated with one fma per block into
//   8 lanes (two accumulators: even and odd blocks), folded by a fixed tree at the end; the q4_1
//   m_w s_x terms go into a separate scalar sum in block order.
//   Scalar kernel (any x86-64): the whole block's integer sum, then acc += (d_w d_x) * sum in
//   block order. Same integer sums, different f32 accumulation order, so it differs from the
//   AVX2 kernel in the last bits (within the bound above); each kernel is deterministic.
//
// M > kQuantizedSmallM (prefill, perplexity): as the bf16 path of linear.cpp. Output tiles with
// edges fixed by the shape (up to kTile x kTile) run in an OpenMP loop; each dequantizes its rows of
// w to f32 into a thread-local buffer (at most kTile x K floats) and runs one single-threaded
// sgemm, so the result is the f32 product of the dequantized weights and thread-count free.
// dx: (M, K) tiles, K cut at multiples of 32 (whole blocks); the reduction over N runs in
// 512-row chunks dequantized in turn and added in index order.
#include "core/backend/cpu/quantized_linear.h"

#include <cblas.h>
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/backend/cpu/cpu_common.h"
#include "core/backend/cpu/gemm_tiles.h"

namespace latte {
namespace {

constexpr int64_t QK = kQuantBlock;  // 32
constexpr int64_t kChunk = 512;      // rows of w dequantized at a time along the dx reduction

bool g_force_scalar = false;

bool cpu_has_avx2() {
  // F16C through CPUID leaf 1: clang (14) has no "f16c" feature string for __builtin_cpu_supports,
  // and the fuzz build (tests/fuzz) compiles this file with clang.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
  return ok;
}

// One quantized block of activations.
struct XBlock {
  float d;      // scale: x ~ d * q
  float s;      // d * sum(q) (the q4_1 m term)
  int8_t q[QK];
};

// x[M, K] -> M * K/32 blocks.
void quantize_activations(const float* x, int64_t M, int64_t K, XBlock* out) {
  const int64_t nb = K / QK;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* v = x + m * K + b * QK;
      XBlock& o = out[m * nb + b];
      float amax = 0;
      for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      int sum = 0;
      for (int j = 0; j < QK; ++j) {
        const int q = int(std::nearbyint(v[j] * id));  // |q| <= 127 (round half to even)
        o.q[j] = int8_t(q);
        sum += q;
      }
      o.d = d;
      o.s = d * float(sum);
    }
  }
}

// The calling thread's scratch buffers, grown on demand and kept for the next call.
XBlock* xblock_buffer(int64_t n) {
  thread_local std::vector<XBlock> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// ---- scalar kernels ----

// sum over the nb blocks of row w (dtype T) times the x blocks.
template <DType T>
float dot_row_scalar(const uint8_t* w, const XBlock* xb, int64_t nb) {
  constexpr size_t bb = T == DType::q8_0 ? 34 : T == DType::q4_0 ? 18 : 20;
  float acc = 0, acc_m = 0;
  for (int64_t b = 0; b < nb; ++b, w += bb) {
    const XBlock& x = xb[b];
    const float dw = f16_to_f32(load_u16(w));
    int32_t isum = 0;
    if constexpr (T == DType::q8_0) {
      const auto* q = reinterpret_cast<const int8_t*>(w + 2);
      for (int j = 0; j < QK; ++j) isum += int32_t(q[j]) * x.q[j];
    } else {
      const uint8_t* q = w + (T == DType::q4_0 ? 2 : 4);
      const int off = T == DType::q4_0 ? 8 : 0;
      for (int j = 0; j < QK / 2; ++j) {
        isum += (int32_t(q[j] & 0x0f) - off) * x.q[j];
        isum += (int32_t(q[j] >> 4) - off) * x.q[j + QK / 2];
      }
    }
    acc += (dw * x.d) * float(isum);
    if constexpr (T == DType::q4_1) acc_m += f16_to_f32(load_u16(w + 2)) * x.s;
  }
  return acc + acc_m;
}

// ---- AVX2 kernels ----

// The 32 weights of a block as bytes (signed for q8_0/q4_0, unsigned nibbles for q4_1), element
// j in byte j.
template <DType T>
__attribute__((target("avx2,fma,f16c"))) inline __m256i load_weights(const uint8_t* w) {
  if constexpr (T == DType::q8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2));
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (T == DType::q4_0 ? 2 : 4)));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    if constexpr (T == DType::q4_0) return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
    return v;
  }
}

// 8 int32 partial sums of w_j * x_j over the block, as f32.
template <DType T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 block_dot(const uint8_t* w, const XBlock& x) {
  const __m256i wv = load_weights<T>(w);
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q));
  __m256i p16;
  if constexpr (T == DType::q4_1) {
    p16 = _mm256_maddubs_epi16(wv, xv);  // nibbles are unsigned already
  } else {
    p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));  // |w| * (x sign(w))
  }
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2,fma,f16c"))) inline float half_to_float(const uint8_t* p) {
  return _cvtsh_ss(load_u16(p));
}

template <DType T>
__attribute__((target("avx2,fma,f16c"))) float dot_row_avx2(const uint8_t* w, const XBlock* xb, int64_t nb) {
  constexpr size_t bb = T == DType::q8_0 ? 34 : T == DType::q4_0 ? 18 : 20;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float acc_m = 0;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2, w += 2 * bb) {
    _mm_prefetch(reinterpret_cast<const char*>(w) + cpu::kWeightPrefetchBytes, _MM_HINT_T0);  // 40-68 bytes a step
    const __m256 p0 = block_dot<T>(w, xb[b]);
    const __m256 p1 = block_dot<T>(w + bb, xb[b + 1]);
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w) * xb[b].d), p0, acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w + bb) * xb[b + 1].d), p1, acc1);
    if constexpr (T == DType::q4_1) {
      acc_m += half_to_float(w + 2) * xb[b].s;
      acc_m += half_to_float(w + bb + 2) * xb[b + 1].s;
    }
  }
  if (b < nb) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w) * xb[b].d), block_dot<T>(w, xb[b]), acc0);
    if constexpr (T == DType::q4_1) acc_m += half_to_float(w + 2) * xb[b].s;
  }
  // Fixed fold: (acc0 + acc1), then lanes l + 4, l + 2, l + 1.
  const __m256 a = _mm256_add_ps(acc0, acc1);
  __m128 v = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_movehdup_ps(v));
  return _mm_cvtss_f32(v) + acc_m;
}

// ---- the integer path ----

template <DType T>
void small_m_forward(float* y, const XBlock* xb, const uint8_t* w, int64_t M, int64_t K, int64_t N,
                     bool accumulate) {
  const int64_t nb = K / QK;
  const size_t row_bytes = dtype_bytes(T, K);
  const bool avx2 = cpu_has_avx2() && !g_force_scalar;
#pragma omp parallel for schedule(static) if (N * K * M >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* wr = w + size_t(n) * row_bytes;
    for (int64_t m = 0; m < M; ++m) {
      const float v = avx2 ? dot_row_avx2<T>(wr, xb + m * nb, nb) : dot_row_scalar<T>(wr, xb + m * nb, nb);
      float& out = y[m * N + n];
      out = accumulate ? out + v : v;
    }
  }
}

// ---- the dequantize + sgemm paths ----

void check_sizes(int64_t M, int64_t K, int64_t N, const char* op) {
  for (int64_t v : {M, K, N})
    LATTE_REQUIRE(v <= INT_MAX, ErrorCode::unsupported, op, ": dimension ", v, " exceeds the 32-bit BLAS interface");
}

}  // namespace

bool quantized_linear_force_scalar(bool on) {
  const bool prev = g_force_scalar;
  g_force_scalar = on;
  return prev;
}

void quantized_linear_forward(float* y, const float* x, const Tensor& w, int64_t M, int64_t K, int64_t N,
                              bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) std::fill(y, y + M * N, 0.0f);
    return;
  }
  const DType t = w.dtype();
  const auto* wp = static_cast<const uint8_t*>(w.raw());
  if (M <= kQuantizedSmallM) {
    XBlock* xb = xblock_buffer(M * (K / QK));
    quantize_activations(x, M, K, xb);
    switch (t) {
      case DType::q8_0: small_m_forward<DType::q8_0>(y, xb, wp, M, K, N, accumulate); return;
      case DType::q4_0: small_m_forward<DType::q4_0>(y, xb, wp, M, K, N, accumulate); return;
      case DType::q4_1: small_m_forward<DType::q4_1>(y, xb, wp, M, K, N, accumulate); return;
      default: fail(ErrorCode::internal, "quantized_linear_forward: w is ", dtype_name(t));
    }
  }
  check_sizes(M, K, N, "linear_forward");
  cpu::blas_single_threaded();
  const size_t row_bytes = dtype_bytes(t, K);
  const float beta = accumulate ? 1.0f : 0.0f;  // beta = 0: y is written, never read
  cpu::for_each_tile(M, N, K, [&](int64_t m0, int64_t mb, int64_t n0, int64_t nb) {
    float* buf = cpu::widen_buffer(nb * K);
    dequantize_blocks(t, wp + size_t(n0) * row_bytes, buf, nb * K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(mb), int(nb), int(K), 1.0f, x + m0 * K, int(K), buf,
                int(K), beta, y + m0 * N + n0, int(N));
  });
}

void quantized_linear_backward_dx(float* dx, const float* dy, const Tensor& w, int64_t M, int64_t K, int64_t N) {
  if (M == 0 || N == 0 || K == 0) return;
  check_sizes(M, K, N, "linear_backward");
  cpu::blas_single_threaded();
  const DType t = w.dtype();
  const auto* wp = static_cast<const uint8_t*>(w.raw());
  const size_t row_bytes = dtype_bytes(t, K);
  cpu::for_each_tile(M, K, N, [&](int64_t m0, int64_t mb, int64_t k0, int64_t kb) {
    float* buf = cpu::widen_buffer(kChunk * kb);
    for (int64_t n0 = 0; n0 < N; n0 += kChunk) {
      const int64_t nb = std::min(kChunk, N - n0);
      for (int64_t r = 0; r < nb; ++r)
        dequantize_blocks(t, wp + size_t(n0 + r) * row_bytes + dtype_bytes(t, k0), buf + r * kb, kb);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(mb), int(kb), int(nb), 1.0f, dy + m0 * N + n0, int(N),
                  buf, int(kb), 1.0f, dx + m0 * K + k0, int(K));
    }
  }, QK);  // column tiles hold whole blocks
}

namespace {

struct Dims {
  int64_t M, K, N;
};

Dims check_quantized_linear(const Tensor& x, const Tensor& w, const char* op) {
  cpu::require_host(x, op, "x");
  cpu::require_dtype(x, DType::f32, op, "x");
  cpu::require_rank(x, 2, "[M, K]", op, "x");
  cpu::require_contiguous(x, op, "x");
  cpu::require_host(w, op, "w");
  LATTE_REQUIRE(is_block_dtype(w.dtype()), ErrorCode::shape_mismatch, op, ": w: expected a block dtype (q8_0, q4_0, q4_1), got ",
                dtype_name(w.dtype()));
  cpu::require_rank(w, 2, "[N, K]", op, "w");
  cpu::require_contiguous(w, op, "w");
  const Dims d{x.dim(0), x.dim(1), w.dim(0)};
  LATTE_REQUIRE(w.dim(1) == d.K, ErrorCode::shape_mismatch, op, ": w: expected shape [N, ", d.K, "] to match x ",
                shape_str(x.shape()), ", got ", shape_str(w.shape()));
  return d;
}

}  // namespace

void quantized_linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  const char* op = "linear_forward";
  const Dims d = check_quantized_linear(x, w, op);
  cpu::require_f32(y, {d.M, d.N}, op, "y");
  quantized_linear_forward(y.f32(), x.f32(), w, d.M, d.K, d.N, accumulate);
}

void quantized_linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const char* op = "linear_backward";
  const Dims d = check_quantized_linear(x, w, op);
  cpu::require_f32(dy, {d.M, d.N}, op, "dy");
  LATTE_REQUIRE(dw == nullptr, ErrorCode::unsupported, op, ": dw of a ", dtype_name(w.dtype()),
                " weight: quantized weights are read-only (train on an f32 copy, Tensor::to(DType::f32))");
  if (dx) {
    cpu::require_f32(*dx, {d.M, d.K}, op, "dx");
    quantized_linear_backward_dx(dx->f32(), dy.f32(), w, d.M, d.K, d.N);
  }
}

}  // namespace latte
