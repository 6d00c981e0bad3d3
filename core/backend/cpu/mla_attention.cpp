// MLA attention in absorbed form (forward only: training and prefill use the expanded form).
//   q_rope[B,T,Hq,R], q_lat[B,T,Hq,L]; k_rope[B,S,Hkv,R], latent[B,S,L] (cache views)
//   s_j = scale * (q_rope . k_rope[j, h/(Hq/Hkv)] + q_lat . latent[j]),  p = softmax(s)
//   out[B,T,Hq,L] = sum_j p_j latent[j]                                   ("=")
// Query t sits at position S-T+t and sees keys 0..S-T+t, as in attention_forward. Every query
// head of every group reads the one shared latent: that is the cache saving of MLA (the latent is
// n_kv*d_kv wide instead of 2*n_kv*head_dim). Reference: reference::mla_absorbed_attention.
//
// Parallelism: OpenMP over (b, t, h) query rows; each row reads the cache once and owns its
// output, so there is no cross-thread reduction and results do not depend on the thread count.
// Dots use the fixed cpu::dot order; the weighted sum runs over keys in index order.
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

// [B, S, H, D] (or [B, S, D] when rank 3) with contiguous inner dims; dim 0 may be strided.
void require_cache_view(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  cpu::require_host(t, op, name);
  cpu::require_dtype(t, DType::f32, op, name);
  cpu::require_shape(t, shape, op, name);
  const Shape& st = t.strides();
  int64_t expect = 1;
  for (int d = t.ndim() - 1; d >= 1; --d) {
    LATTE_REQUIRE(st[size_t(d)] == expect || shape[size_t(d)] == 1, ErrorCode::invalid_argument, op, ": ", name,
                  ": its inner dims must be contiguous (shape ", shape_str(shape), ", strides ", shape_str(st), ")");
    expect *= shape[size_t(d)];
  }
}

}  // namespace

void CpuBackend::mla_absorbed_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat, const Tensor& k_rope,
                                        const Tensor& latent, float scale) {
  const char* op = "mla_absorbed_attention";
  cpu::require_rank(q_lat, 4, "[B, T, Hq, L]", op, "q_lat");
  cpu::require_rank(q_rope, 4, "[B, T, Hq, R]", op, "q_rope");
  cpu::require_rank(k_rope, 4, "[B, S, Hkv, R]", op, "k_rope");
  cpu::require_rank(latent, 3, "[B, S, L]", op, "latent");
  const int64_t B = q_lat.dim(0), T = q_lat.dim(1), Hq = q_lat.dim(2), L = q_lat.dim(3);
  const int64_t R = q_rope.dim(3), S = latent.dim(1), Hkv = k_rope.dim(2);
  cpu::require_f32(q_lat, {B, T, Hq, L}, op, "q_lat");
  cpu::require_contiguous(q_lat, op, "q_lat");
  cpu::require_f32(q_rope, {B, T, Hq, R}, op, "q_rope");
  cpu::require_contiguous(q_rope, op, "q_rope");
  require_cache_view(k_rope, {B, S, Hkv, R}, op, "k_rope");
  require_cache_view(latent, {B, S, L}, op, "latent");
  cpu::require_f32(out, {B, T, Hq, L}, op, "out");
  cpu::require_contiguous(out, op, "out");
  LATTE_REQUIRE(Hkv > 0 && Hq % Hkv == 0, ErrorCode::shape_mismatch, op, ": Hq = ", Hq,
                " is not a multiple of Hkv = ", Hkv);
  LATTE_REQUIRE(T <= S, ErrorCode::shape_mismatch, op, ": T = ", T, " queries but only S = ", S, " keys");

  const int64_t group = Hq / Hkv, kr_b = k_rope.strides()[0], lat_b = latent.strides()[0];
  const float* qr = q_rope.f32();
  const float* ql = q_lat.f32();
  const float* kr = k_rope.f32();
  const float* lat = latent.f32();
  float* o = out.f32();
  const int64_t rows = B * T * Hq;
#pragma omp parallel if (rows * S * (L + R) >= cpu::kParallelMinWork)
  {
    std::vector<float> p(static_cast<size_t>(S));
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t b = row / (T * Hq), t = (row / Hq) % T, h = row % Hq, j = h / group;
      const int64_t visible = S - T + t + 1;
      const float* qr_row = qr + row * R;
      const float* ql_row = ql + row * L;
      float m = -INFINITY;
      for (int64_t s = 0; s < visible; ++s) {
        const float* lat_s = lat + b * lat_b + s * L;
        const float* kr_s = kr + b * kr_b + (s * Hkv + j) * R;
        float score = cpu::dot(ql_row, lat_s, L) + (R > 0 ? cpu::dot(qr_row, kr_s, R) : 0.0f);
        p[size_t(s)] = score * scale;
        m = std::max(m, p[size_t(s)]);
      }
      float l = 0;
      for (int64_t s = 0; s < visible; ++s) l += (p[size_t(s)] = std::exp(p[size_t(s)] - m));
      const float inv = 1.0f / l;
      float* o_row = o + row * L;
      for (int64_t e = 0; e < L; ++e) o_row[e] = 0.0f;
      for (int64_t s = 0; s < visible; ++s) cpu::axpy(p[size_t(s)] * inv, lat + b * lat_b + s * L, o_row, L);
    }
  }
}

}  // namespace latte
