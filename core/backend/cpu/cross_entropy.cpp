// Softmax cross-entropy over the vocabulary, per token:
//   forward ("="):  losses[t] = logsumexp(logits[t, :]) - logits[t, targets[t]]
//   backward ("="): dlogits[t, :] = scale * (softmax(logits[t, :]) - onehot(targets[t]))
// logits[T, V], dlogits[T, V], losses[T] are f32. A negative target means "ignore": loss 0 and a
// zero gradient row. A target >= V throws invalid_argument naming it and its position, before
// anything is written. logsumexp = m + log(sum exp(x - m)) with m the row max, so exp() stays in
// (0, 1]; the sum accumulates in f32 in the fixed cpu::sum order (V = 49152 terms, each <= 1).
// The backward recomputes the row max and sum (the interface saves nothing). Reference:
// reference::cross_entropy_*.
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
  for (int64_t i = 0; i < V; ++i) e[i] = std::exp(row[i] - m);
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

}  // namespace latte
