// Linear layers whose weight w[N, K] is in a block dtype (q8_0, q4_0, q4_1; see dtype.h), read
// in place (e.g. a view of a GGUF file): y[M,N] = x[M,K] . w[N,K]^T, dx[M,K] += dy[M,N] . w[N,K].
// Private to the CPU backend (CpuBackend::linear_* dispatch here when is_block_dtype(w.dtype())).
#pragma once
#include <cstdint>

#include "core/tensor/tensor.h"

namespace latte {

// Rows of x up to this many take the integer path (x quantized to int8 blocks, see the .cpp);
// more take dequantized-tile sgemm (exact f32 products of the dequantized weights).
constexpr int64_t kQuantizedSmallM = 16;

// y[M,N] (= or += with accumulate) x[M,K] . w[N,K]^T; w is a contiguous host block tensor of
// shape [N, K]; x, y contiguous f32. No checks: the Tensor overload below checks.
void quantized_linear_forward(float* y, const float* x, const Tensor& w, int64_t M, int64_t K, int64_t N,
                              bool accumulate);

// dx[M,K] += dy[M,N] . w[N,K] (w dequantized in tiles, summed in a fixed order).
void quantized_linear_backward_dx(float* dx, const float* dy, const Tensor& w, int64_t M, int64_t K, int64_t N);

// The CpuBackend entry points: the same contract and checks as CpuBackend::linear_forward /
// linear_backward (messages name the op and argument), for a block-dtype w. dw of a block
// weight is an error (train on an f32 copy: Tensor::to(DType::f32) / weights_to_f32).
void quantized_linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate);
void quantized_linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w);

// Tests only: true forces the portable scalar integer kernels even where AVX2 is available
// (returns the previous setting). Not thread-safe; set it outside parallel regions.
bool quantized_linear_force_scalar(bool on);

}  // namespace latte
