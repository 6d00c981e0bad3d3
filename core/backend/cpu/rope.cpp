// Rotary position embedding, in place on x[T, H, head_dim] (f32, contiguous):
//   forward:  pair j of every head at position p = positions[t] rotates by angle p * theta^(-2j/hd):
//             (a, b) -> (a cos - b sin, a sin + b cos)
//   backward: the transpose, rotation by -angle: (a, b) -> (a cos + b sin, -a sin + b cos)
// Pair j is (x[2j], x[2j+1]) for RopeLayout::interleaved and (x[j], x[j + hd/2]) for rotate_half
// (backend.h, shared/notes/mha2mla-spec.md section 1.3). Both directions overwrite x in place.
// Partial RoPE (RopeParams::pair_freqs): slot pair s of head h uses frequency pair_freqs[h][s]
// of a head of width freq_dim, or stays unrotated for -1 (the MLA [rope | nope] head layout).
// Reference: reference::rope_*.
//
// Numerics: the angle is formed in double from (p, j) alone and rounded to f32 only after cos and
// sin, so a token gets bit-identical factors whether it arrives in a prefill batch or alone in
// decode, and long contexts keep their precision (an f32 product p * freq is off by up to
// p * 6e-8 radians, 6e-3 at p = 10^5).
//
// Parallelism: OpenMP over tokens; each thread builds the cos/sin table of its token once and
// applies it to all H heads (the table costs head_dim/2 double sin+cos, the heads only FMAs).
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

// sign = +1 for the forward rotation, -1 for its transpose.
void rope_apply(Tensor& x, std::span<const int32_t> positions, const RopeParams& p, float sign, const char* op) {
  cpu::require_host(x, op, "x");
  cpu::require_dtype(x, DType::f32, op, "x");
  cpu::require_rank(x, 3, "[T, H, head_dim]", op, "x");
  cpu::require_contiguous(x, op, "x");
  LATTE_REQUIRE(p.head_dim > 0 && p.head_dim % 2 == 0, ErrorCode::invalid_argument, op,
                ": head_dim must be even and > 0, got ", p.head_dim);
  LATTE_REQUIRE(p.theta > 0.0f, ErrorCode::invalid_argument, op, ": theta must be > 0, got ", p.theta);
  const int64_t T = x.dim(0), H = x.dim(1), hd = p.head_dim, half = hd / 2;
  cpu::require_shape(x, {T, H, hd}, op, "x");
  LATTE_REQUIRE(int64_t(positions.size()) == T, ErrorCode::shape_mismatch, op, ": positions has ", positions.size(),
                " entries for x of shape ", shape_str(x.shape()), " (expected ", T, ")");
  for (size_t t = 0; t < positions.size(); ++t)
    LATTE_REQUIRE(positions[t] >= 0, ErrorCode::invalid_argument, op, ": position ", positions[t], " at index ", t,
                  " is negative");
  const int64_t fdim = p.freq_dim > 0 ? p.freq_dim : hd, fhalf = fdim / 2;
  const bool table = !p.pair_freqs.empty();
  if (table) {
    LATTE_REQUIRE(int64_t(p.pair_freqs.size()) == H * half, ErrorCode::shape_mismatch, op, ": pair_freqs has ",
                  p.pair_freqs.size(), " entries, expected H * head_dim/2 = ", H * half);
    for (int32_t f : p.pair_freqs)
      LATTE_REQUIRE(f >= -1 && f < fhalf, ErrorCode::invalid_argument, op, ": frequency index ", f,
                    " outside [-1, ", fhalf, ")");
  } else {
    LATTE_REQUIRE(fdim == hd, ErrorCode::invalid_argument, op, ": freq_dim ", fdim,
                  " differs from head_dim ", hd, " without a pair_freqs table");
  }

  // freq[i] = theta^(-2i/freq_dim), identical for every token.
  std::vector<double> freq(static_cast<size_t>(fhalf));
  for (int64_t j = 0; j < fhalf; ++j) freq[size_t(j)] = std::pow(double(p.theta), -2.0 * double(j) / double(fdim));

  float* xp = x.f32();
  const bool interleaved = p.layout == RopeLayout::interleaved;
#pragma omp parallel if (T * H * hd >= cpu::kParallelMinWork)
  {
    std::vector<float> cs(static_cast<size_t>(2 * fhalf));  // cos at [0, fhalf), sign * sin after
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const double pos = double(positions[size_t(t)]);
      for (int64_t j = 0; j < fhalf; ++j) {
        const double angle = pos * freq[size_t(j)];
        cs[size_t(j)] = float(std::cos(angle));
        cs[size_t(fhalf + j)] = sign * float(std::sin(angle));
      }
      const float* c = cs.data();
      const float* s = cs.data() + fhalf;
      for (int64_t h = 0; h < H; ++h) {
        float* head = xp + (t * H + h) * hd;
        if (table) {
          const int32_t* f = p.pair_freqs.data() + h * half;
          for (int64_t j = 0; j < half; ++j) {
            if (f[j] < 0) continue;
            float* a_ptr = interleaved ? head + 2 * j : head + j;
            float* b_ptr = interleaved ? head + 2 * j + 1 : head + j + half;
            const float a = *a_ptr, b = *b_ptr;
            *a_ptr = a * c[f[j]] - b * s[f[j]];
            *b_ptr = a * s[f[j]] + b * c[f[j]];
          }
        } else if (interleaved) {
          for (int64_t j = 0; j < half; ++j) {
            const float a = head[2 * j], b = head[2 * j + 1];
            head[2 * j] = a * c[j] - b * s[j];
            head[2 * j + 1] = a * s[j] + b * c[j];
          }
        } else {
          float* lo = head;
          float* hi = head + half;
          for (int64_t j = 0; j < half; ++j) {
            const float a = lo[j], b = hi[j];
            lo[j] = a * c[j] - b * s[j];
            hi[j] = a * s[j] + b * c[j];
          }
        }
      }
    }
  }
}

}  // namespace

void CpuBackend::rope_forward(Tensor& x, std::span<const int32_t> positions, const RopeParams& p) {
  rope_apply(x, positions, p, 1.0f, "rope_forward");
}

void CpuBackend::rope_backward(Tensor& dx, std::span<const int32_t> positions, const RopeParams& p) {
  rope_apply(dx, positions, p, -1.0f, "rope_backward");
}

}  // namespace latte
