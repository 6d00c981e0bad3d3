#include "bench/naive_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace latte::bench {

namespace {
// Weights may be bf16; the baseline widens element by element, as a naive port would.
float wat(const Tensor& w, int64_t i) {
  return w.dtype() == DType::f32 ? w.f32()[i] : bf16_to_f32(w.u16()[i]);
}

// Storage offset (in elements) of the k-th element, row-major, of a possibly strided view.
int64_t element_offset(const Tensor& t, int64_t k) {
  int64_t off = 0;
  for (int d = t.ndim() - 1; d >= 0; --d) {
    off += (k % t.shape()[size_t(d)]) * t.strides()[size_t(d)];
    k /= t.shape()[size_t(d)];
  }
  return off;
}
}  // namespace

Tensor NaiveBackend::empty(const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); }

void NaiveBackend::fill(Tensor& t, float value) {
  for (int64_t k = 0; k < t.numel(); ++k) t.f32()[element_offset(t, k)] = value;
}

void NaiveBackend::copy(Tensor& dst, const Tensor& src) {
  dst.expect_shape(src.shape(), "copy: dst");
  dst.expect_dtype(src.dtype(), "copy: dst");
  const size_t e = dtype_size(dst.dtype());
  for (int64_t k = 0; k < dst.numel(); ++k)
    std::memcpy(static_cast<char*>(dst.raw()) + element_offset(dst, k) * int64_t(e),
                static_cast<const char*>(src.raw()) + element_offset(src, k) * int64_t(e), e);
}

void NaiveBackend::linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += x.f32()[m * K + k] * wat(w, n * K + k);
      y.f32()[m * N + n] = accumulate ? y.f32()[m * N + n] + s : s;
    }
}

void NaiveBackend::linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float g = dy.f32()[m * N + n];
      for (int64_t k = 0; k < K; ++k) {
        if (dx) dx->f32()[m * K + k] += g * wat(w, n * K + k);
        if (dw) dw->f32()[n * K + k] += g * x.f32()[m * K + k];
      }
    }
}

void NaiveBackend::embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) {
  const int64_t D = table.dim(1);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t d = 0; d < D; ++d) out.f32()[int64_t(t) * D + d] = wat(table, tokens[t] * D + d);
}

void NaiveBackend::embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) {
  const int64_t D = dtable.dim(1);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t d = 0; d < D; ++d) dtable.f32()[tokens[t] * D + d] += dout.f32()[int64_t(t) * D + d];
}

void NaiveBackend::embedding_slice_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table,
                                           int64_t vocab_begin) {
  const int64_t V = table.dim(0), D = table.dim(1);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int64_t id = tokens[t] - vocab_begin;
    for (int64_t d = 0; d < D; ++d)
      out.f32()[int64_t(t) * D + d] = id >= 0 && id < V ? wat(table, id * D + d) : 0.0f;
  }
}

void NaiveBackend::embedding_slice_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout,
                                            int64_t vocab_begin) {
  const int64_t V = dtable.dim(0), D = dtable.dim(1);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int64_t id = tokens[t] - vocab_begin;
    if (id < 0 || id >= V) continue;
    for (int64_t d = 0; d < D; ++d) dtable.f32()[id * D + d] += dout.f32()[int64_t(t) * D + d];
  }
}

void NaiveBackend::rmsnorm_forward(Tensor& y, Tensor* rstd, const Tensor& x, const Tensor& w, float eps) {
  const int64_t T = x.dim(0), D = x.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    float ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += x.f32()[t * D + d] * x.f32()[t * D + d];
    float r = 1.0f / std::sqrt(ss / float(D) + eps);
    if (rstd) rstd->f32()[t] = r;
    for (int64_t d = 0; d < D; ++d) y.f32()[t * D + d] = x.f32()[t * D + d] * r * wat(w, d);
  }
}

void NaiveBackend::rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                    const Tensor& rstd) {
  const int64_t T = x.dim(0), D = x.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    float r = rstd.f32()[t], dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += dy.f32()[t * D + d] * wat(w, d) * x.f32()[t * D + d];
    for (int64_t d = 0; d < D; ++d) {
      float xv = x.f32()[t * D + d];
      dx.f32()[t * D + d] += r * dy.f32()[t * D + d] * wat(w, d) - r * r * r * xv * dot / float(D);
      dw.f32()[d] += dy.f32()[t * D + d] * xv * r;
    }
  }
}

namespace {
void rope_rotate(Tensor& x, std::span<const int32_t> positions, const RopeParams& p, float sign) {
  const int64_t T = x.dim(0), H = x.dim(1), hd = p.head_dim, half = hd / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < half; ++j) {
        int64_t f = p.pair_freqs.empty() ? j : p.pair_freqs[size_t(h * half + j)];
        if (f < 0) continue;
        double fdim = double(p.freq_dim > 0 ? p.freq_dim : hd);
        double angle = double(positions[size_t(t)]) * std::pow(double(p.theta), -2.0 * double(f) / fdim);
        float c = float(std::cos(angle)), s = sign * float(std::sin(angle));
        int64_t a = p.layout == RopeLayout::interleaved ? 2 * j : j;
        int64_t b = p.layout == RopeLayout::interleaved ? 2 * j + 1 : j + half;
        float* row = x.f32() + (t * H + h) * hd;
        float x0 = row[a], x1 = row[b];
        row[a] = x0 * c - x1 * s;
        row[b] = x0 * s + x1 * c;
      }
}
}  // namespace

void NaiveBackend::rope_forward(Tensor& x, std::span<const int32_t> positions, const RopeParams& p) {
  rope_rotate(x, positions, p, 1.0f);
}
void NaiveBackend::rope_backward(Tensor& dx, std::span<const int32_t> positions, const RopeParams& p) {
  rope_rotate(dx, positions, p, -1.0f);
}

void NaiveBackend::attention_forward(Tensor& out, Tensor* lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                     float scale) {
  const int64_t B = q.dim(0), T = q.dim(1), Hq = q.dim(2), Dk = q.dim(3), S = k.dim(1), Hkv = k.dim(2),
                Dv = v.dim(3), group = Hq / Hkv;
  std::vector<float> p(static_cast<size_t>(S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* qr = q.f32() + ((b * T + t) * Hq + h) * Dk;
        int64_t last = S - T + t;
        float mx = -INFINITY;
        for (int64_t s = 0; s <= last; ++s) {
          const float* kr = k.f32() + b * k.strides()[0] + (s * Hkv + h / group) * Dk;
          float dot = 0;
          for (int64_t d = 0; d < Dk; ++d) dot += qr[d] * kr[d];
          p[size_t(s)] = dot * scale;
          mx = std::max(mx, p[size_t(s)]);
        }
        float sum = 0;
        for (int64_t s = 0; s <= last; ++s) sum += (p[size_t(s)] = std::exp(p[size_t(s)] - mx));
        if (lse) lse->f32()[(b * Hq + h) * T + t] = mx + std::log(sum);
        float* o = out.f32() + ((b * T + t) * Hq + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) o[d] = 0;
        for (int64_t s = 0; s <= last; ++s) {
          const float* vr = v.f32() + b * v.strides()[0] + (s * Hkv + h / group) * Dv;
          for (int64_t d = 0; d < Dv; ++d) o[d] += p[size_t(s)] / sum * vr[d];
        }
      }
}

void NaiveBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                                      const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                      float scale) {
  const int64_t B = q.dim(0), T = q.dim(1), Hq = q.dim(2), Dk = q.dim(3), S = k.dim(1), Hkv = k.dim(2),
                Dv = v.dim(3), group = Hq / Hkv;
  dq.fill(0);
  dk.fill(0);
  dv.fill(0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* qr = q.f32() + ((b * T + t) * Hq + h) * Dk;
        const float* go = dout.f32() + ((b * T + t) * Hq + h) * Dv;
        const float* o = out.f32() + ((b * T + t) * Hq + h) * Dv;
        float l = lse.f32()[(b * Hq + h) * T + t], delta = 0;
        for (int64_t d = 0; d < Dv; ++d) delta += go[d] * o[d];
        for (int64_t s = 0; s <= S - T + t; ++s) {
          const float* kr = k.f32() + b * k.strides()[0] + (s * Hkv + h / group) * Dk;
          const float* vr = v.f32() + b * v.strides()[0] + (s * Hkv + h / group) * Dv;
          float dot = 0;
          for (int64_t d = 0; d < Dk; ++d) dot += qr[d] * kr[d];
          float pr = std::exp(dot * scale - l), dp = 0;
          for (int64_t d = 0; d < Dv; ++d) dp += go[d] * vr[d];
          float ds = pr * (dp - delta) * scale;
          float* dqr = dq.f32() + ((b * T + t) * Hq + h) * Dk;
          float* dkr = dk.f32() + ((b * S + s) * Hkv + h / group) * Dk;
          float* dvr = dv.f32() + ((b * S + s) * Hkv + h / group) * Dv;
          for (int64_t d = 0; d < Dk; ++d) {
            dqr[d] += ds * kr[d];
            dkr[d] += ds * qr[d];
          }
          for (int64_t d = 0; d < Dv; ++d) dvr[d] += pr * go[d];
        }
      }
}

void NaiveBackend::swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) {
  for (int64_t i = 0; i < h.numel(); ++i) {
    float g = gate.f32()[i];
    h.f32()[i] = g / (1.0f + std::exp(-g)) * up.f32()[i];
  }
}

void NaiveBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) {
  for (int64_t i = 0; i < dh.numel(); ++i) {
    float g = gate.f32()[i], sig = 1.0f / (1.0f + std::exp(-g));
    dup.f32()[i] = dh.f32()[i] * g * sig;
    dgate.f32()[i] = dh.f32()[i] * up.f32()[i] * sig * (1.0f + g * (1.0f - sig));
  }
}

void NaiveBackend::cross_entropy_forward(Tensor& losses, const Tensor& logits, std::span<const int32_t> targets) {
  const int64_t T = logits.dim(0), V = logits.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.f32() + t * V;
    float mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    losses.f32()[t] = targets[size_t(t)] < 0 ? 0.0f : mx + std::log(sum) - l[targets[size_t(t)]];
  }
}

void NaiveBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits, std::span<const int32_t> targets,
                                          float scale) {
  const int64_t T = logits.dim(0), V = logits.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.f32() + t * V;
    float* d = dlogits.f32() + t * V;
    float mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    for (int64_t v = 0; v < V; ++v)
      d[v] = targets[size_t(t)] < 0 ? 0.0f : scale * (std::exp(l[v] - mx) / sum - (v == targets[size_t(t)] ? 1.0f : 0.0f));
  }
}

void NaiveBackend::cross_entropy_slice_max(Tensor& row_max, const Tensor& logits) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  for (int64_t n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, logits.f32()[n * V + v]);
    row_max.f32()[n] = m;
  }
}

void NaiveBackend::cross_entropy_slice_sums(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits,
                                            const Tensor& row_max, std::span<const int32_t> targets,
                                            int64_t vocab_begin) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(logits.f32()[n * V + v] - row_max.f32()[n]));
    sum_exp.f32()[n] = float(s);
    const int64_t t = targets[size_t(n)];
    target_logit.f32()[n] = t >= vocab_begin && t < vocab_begin + V ? logits.f32()[n * V + t - vocab_begin] : 0.0f;
  }
}

void NaiveBackend::cross_entropy_slice_losses(Tensor& losses, Tensor& lse, const Tensor& row_max,
                                              const Tensor& sum_exp, const Tensor& target_logit,
                                              std::span<const int32_t> targets) {
  for (int64_t n = 0; n < row_max.numel(); ++n) {
    lse.f32()[n] = row_max.f32()[n] + std::log(sum_exp.f32()[n]);
    losses.f32()[n] = targets[size_t(n)] < 0 ? 0.0f : lse.f32()[n] - target_logit.f32()[n];
  }
}

void NaiveBackend::cross_entropy_slice_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                                std::span<const int32_t> targets, int64_t vocab_begin, float scale) {
  const int64_t N = logits.dim(0), V = logits.dim(1);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = targets[size_t(n)];
    for (int64_t v = 0; v < V; ++v)
      dlogits.f32()[n * V + v] =
          t < 0 ? 0.0f
                : scale * (std::exp(logits.f32()[n * V + v] - lse.f32()[n]) - (t == vocab_begin + v ? 1.0f : 0.0f));
  }
}

void NaiveBackend::add_inplace(Tensor& y, const Tensor& x) {
  for (int64_t i = 0; i < y.numel(); ++i) y.f32()[i] += x.f32()[i];
}

}  // namespace latte::bench

namespace latte::bench {

void NaiveBackend::mla_absorbed_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat, const Tensor& k_rope,
                                          const Tensor& latent, float scale) {
  const int64_t B = q_lat.dim(0), T = q_lat.dim(1), Hq = q_lat.dim(2), L = q_lat.dim(3), R = q_rope.dim(3),
                S = latent.dim(1), Hkv = k_rope.dim(2), group = Hq / Hkv;
  std::vector<float> p(static_cast<size_t>(S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const float* qr = q_rope.f32() + ((b * T + t) * Hq + h) * R;
        const float* ql = q_lat.f32() + ((b * T + t) * Hq + h) * L;
        int64_t last = S - T + t;
        float mx = -INFINITY;
        for (int64_t s = 0; s <= last; ++s) {
          const float* lat = latent.f32() + b * latent.strides()[0] + s * L;
          const float* kr = k_rope.f32() + b * k_rope.strides()[0] + (s * Hkv + h / group) * R;
          float dot = 0;
          for (int64_t d = 0; d < L; ++d) dot += ql[d] * lat[d];
          for (int64_t d = 0; d < R; ++d) dot += qr[d] * kr[d];
          p[size_t(s)] = dot * scale;
          mx = std::max(mx, p[size_t(s)]);
        }
        float sum = 0;
        for (int64_t s = 0; s <= last; ++s) sum += (p[size_t(s)] = std::exp(p[size_t(s)] - mx));
        float* o = out.f32() + ((b * T + t) * Hq + h) * L;
        for (int64_t d = 0; d < L; ++d) o[d] = 0;
        for (int64_t s = 0; s <= last; ++s) {
          const float* lat = latent.f32() + b * latent.strides()[0] + s * L;
          for (int64_t d = 0; d < L; ++d) o[d] += p[size_t(s)] / sum * lat[d];
        }
      }
}

}  // namespace latte::bench

namespace latte::bench {

namespace {
// Element i of slot `slot` of a paged cache whose slots hold slot_elems elements, as f32 (bf16
// widened, i8 times its slot's scale).
float cache_at(const Tensor& c, const Tensor* scales, int64_t slot, int64_t slot_elems, int64_t i) {
  const int64_t k = slot * slot_elems + i;
  if (c.dtype() == DType::f32) return c.f32()[k];
  if (c.dtype() == DType::bf16) return bf16_to_f32(c.u16()[k]);
  return float(c.i8()[k]) * (scales ? scales->f32()[slot] : 1.0f);  // only an i8 MLA cache gets here
}

// The slot of key position p of sequence s.
int64_t paged_slot(const PagedBatch& b, int64_t s, int64_t p) {
  return int64_t(b.block_table[size_t(s * b.max_blocks + p / b.block_size)]) * b.block_size + p % b.block_size;
}
}  // namespace

void NaiveBackend::paged_cache_write(Tensor& cache, Tensor* scales, const Tensor& rows,
                                     std::span<const int32_t> slots) {
  const int64_t N = rows.dim(0), W = N > 0 ? rows.numel() / N : 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t slot = slots[size_t(n)];
    const float* x = rows.f32() + n * W;
    if (cache.dtype() == DType::f32) {
      for (int64_t i = 0; i < W; ++i) cache.f32()[slot * W + i] = x[i];
    } else if (cache.dtype() == DType::bf16) {
      for (int64_t i = 0; i < W; ++i) cache.u16()[slot * W + i] = f32_to_bf16(x[i]);
    } else {
      float amax = 0;
      for (int64_t i = 0; i < W; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float scale = amax / 127.0f;
      scales->f32()[slot] = scale;
      for (int64_t i = 0; i < W; ++i)
        cache.i8()[slot * W + i] = int8_t(scale > 0 ? std::clamp(std::nearbyint(x[i] / scale), -127.0f, 127.0f) : 0);
    }
  }
}

void NaiveBackend::paged_attention(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                   const PagedBatch& b, float scale) {
  const int64_t Hq = q.dim(1), Dk = q.dim(2), Hkv = k_cache.dim(2), Dv = v_cache.dim(3), group = Hq / Hkv;
  for (size_t s = 0; s < b.context_len.size(); ++s) {
    const int64_t q0 = b.query_start[s], n = b.query_start[s + 1] - q0, ctx = b.context_len[s];
    std::vector<float> p(static_cast<size_t>(ctx));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        const float* qr = q.f32() + ((q0 + i) * Hq + h) * Dk;
        const int64_t last = ctx - n + i, hk = h / group;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= last; ++j) {
          const int64_t slot = paged_slot(b, int64_t(s), j);
          float dot = 0;
          for (int64_t e = 0; e < Dk; ++e) dot += qr[e] * cache_at(k_cache, nullptr, slot, Hkv * Dk, hk * Dk + e);
          p[size_t(j)] = dot * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        float sum = 0;
        for (int64_t j = 0; j <= last; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        float* o = out.f32() + ((q0 + i) * Hq + h) * Dv;
        for (int64_t e = 0; e < Dv; ++e) o[e] = 0;
        for (int64_t j = 0; j <= last; ++j) {
          const int64_t slot = paged_slot(b, int64_t(s), j);
          for (int64_t e = 0; e < Dv; ++e)
            o[e] += p[size_t(j)] / sum * cache_at(v_cache, nullptr, slot, Hkv * Dv, hk * Dv + e);
        }
      }
  }
}

void NaiveBackend::paged_mla_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat,
                                       const Tensor& k_rope_cache, const Tensor* k_rope_scales,
                                       const Tensor& latent_cache, const Tensor* latent_scales, const PagedBatch& b, float scale) {
  const int64_t Hq = q_lat.dim(1), L = q_lat.dim(2), R = q_rope.dim(2), Hkv = k_rope_cache.dim(2),
                group = Hq / Hkv;
  for (size_t s = 0; s < b.context_len.size(); ++s) {
    const int64_t q0 = b.query_start[s], n = b.query_start[s + 1] - q0, ctx = b.context_len[s];
    std::vector<float> p(static_cast<size_t>(ctx));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        const float* qr = q_rope.f32() + ((q0 + i) * Hq + h) * R;
        const float* ql = q_lat.f32() + ((q0 + i) * Hq + h) * L;
        const int64_t last = ctx - n + i, hk = h / group;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= last; ++j) {
          const int64_t slot = paged_slot(b, int64_t(s), j);
          float dot = 0;
          for (int64_t e = 0; e < L; ++e) dot += ql[e] * cache_at(latent_cache, latent_scales, slot, L, e);
          for (int64_t e = 0; e < R; ++e) dot += qr[e] * cache_at(k_rope_cache, k_rope_scales, slot, Hkv * R, hk * R + e);
          p[size_t(j)] = dot * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        float sum = 0;
        for (int64_t j = 0; j <= last; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        float* o = out.f32() + ((q0 + i) * Hq + h) * L;
        for (int64_t e = 0; e < L; ++e) o[e] = 0;
        for (int64_t j = 0; j <= last; ++j) {
          const int64_t slot = paged_slot(b, int64_t(s), j);
          for (int64_t e = 0; e < L; ++e)
            o[e] += p[size_t(j)] / sum * cache_at(latent_cache, latent_scales, slot, L, e);
        }
      }
  }
}

}  // namespace latte::bench
