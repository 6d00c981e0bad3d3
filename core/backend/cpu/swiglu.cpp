// SwiGLU gate of the Llama MLP, elementwise on [T, F] (any equal shapes, f32, contiguous):
//   forward ("="):  h = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   backward ("="): dgate = dh * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dh * silu(g)
// No reductions. sigmoid(g) = 1 / (1 + exp(-g)) saturates cleanly at both ends in f32
// (exp overflows to inf and the quotient to 0); exp is cpu::exp8, vectorised 8 elements at a
// time. Reference: reference::swiglu_*.
//
// Parallelism: OpenMP over contiguous chunks of elements; each element is computed alone, so the
// split cannot change a bit.
#include <cmath>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

void check_same(const Tensor& t, const Tensor& like, const char* op, const char* name) {
  cpu::require_f32(t, like.shape(), op, name);
}

inline float sigmoid(float g) { return 1.0f / (1.0f + cpu::exp1(-g)); }
inline cpu::f32x8 sigmoid8(cpu::f32x8 g) { return 1.0f / (1.0f + cpu::exp8(-g)); }

// f(i0, values) over 8-element blocks of [0, n) in parallel, then the tail one by one; each
// element is computed alone with the same formula in both, so the split cannot change a bit.
template <typename Vec, typename One>
void elementwise(int64_t n, Vec&& vec, One&& one) {
  const int64_t n8 = n / 8;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelMinWork)
  for (int64_t b = 0; b < n8; ++b) vec(b * 8);
  for (int64_t i = n8 * 8; i < n; ++i) one(i);
}

void store8(float* p, cpu::f32x8 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace

void CpuBackend::swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  cpu::require_host(gate, op, "gate");
  cpu::require_dtype(gate, DType::f32, op, "gate");
  cpu::require_contiguous(gate, op, "gate");
  check_same(up, gate, op, "up");
  check_same(h, gate, op, "h");

  const int64_t n = gate.numel();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = h.f32();
  elementwise(
      n,
      [&](int64_t i) {
        const cpu::f32x8 gv = cpu::load8(g + i);
        store8(o + i, gv * sigmoid8(gv) * cpu::load8(u + i));
      },
      [&](int64_t i) { o[i] = g[i] * sigmoid(g[i]) * u[i]; });
}

void CpuBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  cpu::require_host(gate, op, "gate");
  cpu::require_dtype(gate, DType::f32, op, "gate");
  cpu::require_contiguous(gate, op, "gate");
  check_same(up, gate, op, "up");
  check_same(dh, gate, op, "dh");
  check_same(dgate, gate, op, "dgate");
  check_same(dup, gate, op, "dup");

  const int64_t n = gate.numel();
  const float* g = gate.f32();
  const float* u = up.f32();
  const float* gh = dh.f32();
  float* dg = dgate.f32();
  float* du = dup.f32();
  elementwise(
      n,
      [&](int64_t i) {
        const cpu::f32x8 gv = cpu::load8(g + i), uv = cpu::load8(u + i), hv = cpu::load8(gh + i);
        const cpu::f32x8 sv = sigmoid8(gv);
        store8(dg + i, hv * uv * sv * (1.0f + gv * (1.0f - sv)));
        store8(du + i, hv * gv * sv);
      },
      [&](int64_t i) {
        const float s = sigmoid(g[i]);
        dg[i] = gh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] = gh[i] * g[i] * s;
      });
}

}  // namespace latte
