// Softmax cross-entropy over the vocabulary, per token:
//   forward ("="):  losses[t] = logsumexp(logits[t, :]) - logits[t, targets[t]]
//   backward ("="): dlogits[t, :] = scale * (softmax(logits[t, :]) - onehot(targets[t]))
// logits[T, V], dlogits[T, V], losses[T] are f32. A negative target means "ignore": loss 0 and a
// zero gradient row. A target >= V throws invalid_argument naming it and its position, before
// anything is written. logsumexp = m + log(sum exp(x - m)) with m the row max, so exp() stays in
// (0, 1] (cpu::exp8, vectorised); the sum accumulates in f32 in the fixed cpu::sum order
// (V = 49152 terms, each <= 1).
// The backward recomputes the row max and sum (the interface saves nothing). Reference:
// reference::cross_entropy_*.
//
// The vocabulary-parallel variants (cross_entropy_slice_*) see logits[N, V] for columns
// [b, b + V) of the whole vocabulary (b = vocab_begin) and run in steps between which the caller
// all-reduces over the ranks (see backend.h):
//   max:     row_max[n] = max_v logits[n, v]                    (float, exact in any order)
//   sums:    sum_exp[n] = float(sum_v exp(double(logits[n, v] - row_max[n]))), summed in double
//            in index order; target_logit[n] = logits[n, targets[n] - b] when the target is in
//            the slice, else 0 (ignored targets included)
//   losses:  lse[n] = row_max[n] + log(sum_exp[n]) (float); losses[n] = lse[n] - target_logit[n],
//            0 where targets[n] < 0
//   backward ("="): dlogits[n, v] = scale * (exp(logits[n, v] - lse[n]) - [targets[n] == b + v])
//            in float, zero rows where targets[n] < 0
// This is, operation for operation, the arithmetic the tensor-parallel model used before these
// ops existed, so perplexities printed under --tp keep their digits. Targets past the slice are
// not errors (another rank owns them; the caller checks them against the whole vocabulary).
// Reference: reference::cross_entropy_slice_*.
//
// Parallelism: OpenMP over rows (tokens); a row's reductions stay on one thread.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

struct CeDims {
  int64_t T, V;
};

CeDims check_ce(const Tensor& logits, std::span<const int32_t> targets, const char* op) {
  cpu::require_host(logits, op, "logits");
  cpu::require_dtype(logits, DType::f32, op, "logits");
  cpu::require_rank(logits, 2, "[T, V]", op, "logits");
  cpu::require_contiguous(logits, op, "logits");
  CeDims d{logits.dim(0), logits.dim(1)};
  LATTE_REQUIRE(int64_t(targets.size()) == d.T, ErrorCode::shape_mismatch, op, ": targets has ", targets.size(),
                " entries for logits of shape ", shape_str(logits.shape()), " (expected ", d.T, ")");
  LATTE_REQUIRE(d.V > 0 || d.T == 0, ErrorCode::shape_mismatch, op, ": logits has an empty vocabulary, shape ",
                shape_str(logits.shape()));
  for (size_t t = 0; t < targets.size(); ++t)
    LATTE_REQUIRE(targets[t] < d.V, ErrorCode::invalid_argument, op, ": target ", targets[t], " at position ", t,
                  " is outside the vocabulary [0, ", d.V, ")");
  return d;
}

// exp(row - m) into e[V]; returns m, and the sum through *sum.
float shifted_exp(const float* row, int64_t V, float* e, float* sum) {
  const float m = cpu::max_of(row, V);
  cpu::exp_shifted(row, e, m, V);
  *sum = cpu::sum(e, V);
  return m;
}

}  // namespace

void CpuBackend::cross_entropy_forward(Tensor& losses, const Tensor& logits, std::span<const int32_t> targets) {
  const char* op = "cross_entropy_forward";
  const CeDims d = check_ce(logits, targets, op);
  cpu::require_f32(losses, {d.T}, op, "losses");

  const float* x = logits.f32();
  float* loss = losses.f32();
#pragma omp parallel if (d.T * d.V >= cpu::kParallelMinWork)
  {
    std::vector<float> e(size_t(d.V));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < d.T; ++t) {
      const int32_t target = targets[size_t(t)];
      if (target < 0) {
        loss[t] = 0.0f;
        continue;
      }
      const float* row = x + t * d.V;
      float s = 0.0f;
      const float m = shifted_exp(row, d.V, e.data(), &s);
      loss[t] = m + std::log(s) - row[target];
    }
  }
}

void CpuBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits, std::span<const int32_t> targets,
                                        float scale) {
  const char* op = "cross_entropy_backward";
  const CeDims d = check_ce(logits, targets, op);
  cpu::require_f32(dlogits, {d.T, d.V}, op, "dlogits");

  const float* x = logits.f32();
  float* g = dlogits.f32();
#pragma omp parallel for schedule(static) if (d.T * d.V >= cpu::kParallelMinWork)
  for (int64_t t = 0; t < d.T; ++t) {
    const int32_t target = targets[size_t(t)];
    float* grow = g + t * d.V;
    if (target < 0) {
      std::fill(grow, grow + d.V, 0.0f);
      continue;
    }
    float s = 0.0f;
    shifted_exp(x + t * d.V, d.V, grow, &s);  // grow holds exp(x - m) until it is scaled
    const float k = scale / s;
    for (int64_t i = 0; i < d.V; ++i) grow[i] *= k;
    grow[target] -= scale;
  }
}

namespace {

int64_t check_ce_slice_logits(const Tensor& logits, const char* op) {
  cpu::require_host(logits, op, "logits");
  cpu::require_dtype(logits, DType::f32, op, "logits");
  cpu::require_rank(logits, 2, "[N, V]", op, "logits");
  cpu::require_contiguous(logits, op, "logits");
  return logits.dim(0);
}

void check_ce_slice_targets(std::span<const int32_t> targets, int64_t N, int64_t vocab_begin, const char* op) {
  LATTE_REQUIRE(int64_t(targets.size()) == N, ErrorCode::shape_mismatch, op, ": targets has ", targets.size(),
                " entries, expected ", N);
  LATTE_REQUIRE(vocab_begin >= 0, ErrorCode::invalid_argument, op, ": vocab_begin is ", vocab_begin,
                ", expected >= 0");
}

}  // namespace

void CpuBackend::cross_entropy_slice_max(Tensor& row_max, const Tensor& logits) {
  const char* op = "cross_entropy_slice_max";
  const int64_t N = check_ce_slice_logits(logits, op), V = logits.dim(1);
  cpu::require_f32(row_max, {N}, op, "row_max");

  const float* l = logits.f32();
  float* mx = row_max.f32();
#pragma omp parallel for schedule(static) if (N * V >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, l[n * V + v]);
    mx[n] = m;
  }
}

void CpuBackend::cross_entropy_slice_sums(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits,
                                          const Tensor& row_max, std::span<const int32_t> targets,
                                          int64_t vocab_begin) {
  const char* op = "cross_entropy_slice_sums";
  const int64_t N = check_ce_slice_logits(logits, op), V = logits.dim(1);
  cpu::require_f32(row_max, {N}, op, "row_max");
  cpu::require_f32(sum_exp, {N}, op, "sum_exp");
  cpu::require_f32(target_logit, {N}, op, "target_logit");
  check_ce_slice_targets(targets, N, vocab_begin, op);

  const float* l = logits.f32();
  const float* mx = row_max.f32();
  float* se = sum_exp.f32();
  float* tl = target_logit.f32();
#pragma omp parallel for schedule(static) if (N * V >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(l[n * V + v] - mx[n]));
    se[n] = float(s);
    const int64_t t = targets[size_t(n)];
    tl[n] = t >= vocab_begin && t < vocab_begin + V ? l[n * V + (t - vocab_begin)] : 0.0f;
  }
}

void CpuBackend::cross_entropy_slice_losses(Tensor& losses, Tensor& lse, const Tensor& row_max, const Tensor& sum_exp,
                                            const Tensor& target_logit, std::span<const int32_t> targets) {
  const char* op = "cross_entropy_slice_losses";
  cpu::require_host(row_max, op, "row_max");
  cpu::require_rank(row_max, 1, "[N]", op, "row_max");
  const int64_t N = row_max.dim(0);
  cpu::require_f32(row_max, {N}, op, "row_max");
  cpu::require_f32(sum_exp, {N}, op, "sum_exp");
  cpu::require_f32(target_logit, {N}, op, "target_logit");
  cpu::require_f32(losses, {N}, op, "losses");
  cpu::require_f32(lse, {N}, op, "lse");
  LATTE_REQUIRE(int64_t(targets.size()) == N, ErrorCode::shape_mismatch, op, ": targets has ", targets.size(),
                " entries, expected ", N);

  // N scalars: not worth a parallel region.
  const float* mx = row_max.f32();
  const float* se = sum_exp.f32();
  const float* tl = target_logit.f32();
  float* out = losses.f32();
  float* ls = lse.f32();
  for (int64_t n = 0; n < N; ++n) {
    ls[n] = mx[n] + std::log(se[n]);
    out[n] = targets[size_t(n)] < 0 ? 0.0f : ls[n] - tl[n];
  }
}

void CpuBackend::cross_entropy_slice_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                              std::span<const int32_t> targets, int64_t vocab_begin, float scale) {
  const char* op = "cross_entropy_slice_backward";
  const int64_t N = check_ce_slice_logits(logits, op), V = logits.dim(1);
  cpu::require_f32(lse, {N}, op, "lse");
  cpu::require_f32(dlogits, {N, V}, op, "dlogits");
  check_ce_slice_targets(targets, N, vocab_begin, op);

  const float* l = logits.f32();
  const float* ls = lse.f32();
  float* d = dlogits.f32();
#pragma omp parallel for schedule(static) if (N * V >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = targets[size_t(n)];
    float* row = d + n * V;
    if (t < 0) {
      std::fill(row, row + V, 0.0f);
      continue;
    }
    for (int64_t v = 0; v < V; ++v)
      row[v] = scale * (std::exp(l[n * V + v] - ls[n]) - (t == vocab_begin + v ? 1.0f : 0.0f));
  }
}

}  // namespace latte
