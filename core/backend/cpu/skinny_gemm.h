// Private to the CPU kernel files: y[M, N] = x[M, K] . w[N, K]^T for few rows (2 <= M <= 32:
// the serving engine's batched decode), reading w in place, once per call.
//
// Why not sgemm: at M = 32 a step of SmolLM2-135M spends as long in OpenBLAS packing w (a copy
// of all 540 MB of f32 weights, every step) as the arithmetic needs; w is read once either way,
// and with so few rows of x the packed panel is not reused enough to pay for the copy.
//
// The kernel walks w in panels of kPanelRows rows (contiguous in memory, streamed once) and
// multiplies each panel with all M rows of x (which stay in L2), two rows at a time: 10 vector
// accumulators, 5 panel vectors and one x vector fill the 16 AVX2 registers, 10 FMAs per 7 loads.
// Each output y[m, n] is one 8-lane accumulator over k in steps of 8, folded by cpu::hsum8's tree,
// plus the last K % 8 products in index order: its bits depend on K alone, not on M, on which
// other rows share its pass, or on the thread count (threads split the panels).
//
// bf16 w is widened one panel at a time into a thread-local buffer (kPanelRows x K floats, in L1),
// so the result equals the f32 result for the widened weights bit for bit.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor/tensor.h"

namespace latte::cpu {

// M up to which this beats the tiled sgemm path (bench/linear, 2 threads, SmolLM2's shapes: one
// decode step's products 3.9x faster at M = 2, 2.8x at 8, equal at 32, 0.8x at 64).
constexpr int64_t kSkinnyMaxRows = 32;
constexpr int64_t kPanelRows = 5;

// One product of a group: y[M, N] (= or +=) x . w^T, w f32 or bf16 [N, K] contiguous.
struct SkinnyJob {
  float* y;
  const Tensor* w;
  int64_t N;
  bool accumulate;
};

// Every panel of every job in one OpenMP loop (x is shared: q/k/v or gate/up of one input).
void skinny_gemm(std::span<const SkinnyJob> jobs, const float* x, int64_t M, int64_t K);

}  // namespace latte::cpu
