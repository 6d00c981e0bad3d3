// The float64 oracle (see reference_ops.h). Loops are written in the order of the formula, not
// for speed; backward passes recompute what they need from the inputs rather than trusting
// saved forward values, so a wrong saved value in a backend cannot hide here.
#include "core/backend/reference/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/base/error.h"

namespace latte::reference {
namespace {

void expect_size(const Vec& v, int64_t n, const char* fn, const char* name) {
  LATTE_REQUIRE(int64_t(v.size()) == n, ErrorCode::invalid_argument, "reference::", fn, ": ", name, " has ", v.size(),
                " values, expected ", n);
}

double sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }

// The score row of one query: s[j] = scale * q . k_j for the keys it sees, and their logsumexp.
struct ScoreRow {
  std::vector<double> s;
  double lse;
};

ScoreRow attention_scores(const Vec& q, const Vec& k, const AttentionShape& sh, double scale, int64_t b, int64_t t,
                          int64_t h) {
  const int64_t hk = h / (sh.Hq / sh.Hkv);
  const int64_t n_keys = sh.S - sh.T + t + 1;
  ScoreRow r;
  r.s.resize(size_t(n_keys));
  for (int64_t j = 0; j < n_keys; ++j) {
    double dot = 0;
    for (int64_t i = 0; i < sh.Dk; ++i)
      dot +=
          q[size_t(((b * sh.T + t) * sh.Hq + h) * sh.Dk + i)] * k[size_t(((b * sh.S + j) * sh.Hkv + hk) * sh.Dk + i)];
    r.s[size_t(j)] = scale * dot;
  }
  const double m = *std::max_element(r.s.begin(), r.s.end());
  double l = 0;
  for (double s : r.s) l += std::exp(s - m);
  r.lse = m + std::log(l);
  return r;
}

void check_attention(const Vec& q, const Vec& k, const Vec& v, const AttentionShape& s, const char* fn) {
  expect_size(q, s.B * s.T * s.Hq * s.Dk, fn, "q");
  expect_size(k, s.B * s.S * s.Hkv * s.Dk, fn, "k");
  expect_size(v, s.B * s.S * s.Hkv * s.Dv, fn, "v");
  LATTE_REQUIRE(s.T <= s.S && s.Hkv > 0 && s.Hq % s.Hkv == 0, ErrorCode::invalid_argument, "reference::", fn,
                ": bad shape T=", s.T, " S=", s.S, " Hq=", s.Hq, " Hkv=", s.Hkv);
}

// Storage index of each element of a strided view, in row-major order of its shape.
std::vector<int64_t> view_indices(const StridedView& v, int64_t storage_size, const char* fn) {
  LATTE_REQUIRE(v.shape.size() == v.strides.size(), ErrorCode::invalid_argument, "reference::", fn, ": ",
                v.shape.size(), " dims but ", v.strides.size(), " strides");
  int64_t n = 1;
  for (int64_t d : v.shape) n *= d;
  std::vector<int64_t> out;
  out.reserve(size_t(n));
  std::vector<int64_t> idx(v.shape.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t at = v.offset;
    for (size_t d = 0; d < idx.size(); ++d) at += idx[d] * v.strides[d];
    LATTE_REQUIRE(at >= 0 && at < storage_size, ErrorCode::invalid_argument, "reference::", fn, ": element ", k,
                  " at storage index ", at, " outside [0, ", storage_size, ")");
    out.push_back(at);
    for (size_t d = idx.size(); d-- > 0;) {  // odometer, last dim fastest
      if (++idx[d] < v.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace

// ---- memory ----

Vec gather_strided(const Vec& storage, const StridedView& v) {
  Vec out;
  for (int64_t at : view_indices(v, int64_t(storage.size()), "gather_strided")) out.push_back(storage[size_t(at)]);
  return out;
}

Vec scatter_strided(const Vec& storage, const StridedView& v, const Vec& values) {
  const std::vector<int64_t> at = view_indices(v, int64_t(storage.size()), "scatter_strided");
  expect_size(values, int64_t(at.size()), "scatter_strided", "values");
  Vec out = storage;
  for (size_t k = 0; k < at.size(); ++k) out[size_t(at[k])] = values[k];
  return out;
}

Vec fill_strided(const Vec& storage, const StridedView& v, double value) {
  Vec out = storage;
  for (int64_t at : view_indices(v, int64_t(storage.size()), "fill_strided")) out[size_t(at)] = value;
  return out;
}

// ---- linear ----

Vec linear_forward(const Vec& x, const Vec& w, int64_t M, int64_t K, int64_t N) {
  expect_size(x, M * K, "linear_forward", "x");
  expect_size(w, N * K, "linear_forward", "w");
  Vec y(size_t(M * N), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += x[size_t(m * K + k)] * w[size_t(n * K + k)];
      y[size_t(m * N + n)] = acc;
    }
  return y;
}

LinearGrads linear_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t M, int64_t K, int64_t N) {
  expect_size(dy, M * N, "linear_backward", "dy");
  expect_size(x, M * K, "linear_backward", "x");
  expect_size(w, N * K, "linear_backward", "w");
  LinearGrads g{Vec(size_t(M * K), 0.0), Vec(size_t(N * K), 0.0)};
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const double d = dy[size_t(m * N + n)];
      for (int64_t k = 0; k < K; ++k) {
        g.dx[size_t(m * K + k)] += d * w[size_t(n * K + k)];
        g.dw[size_t(n * K + k)] += d * x[size_t(m * K + k)];
      }
    }
  return g;
}

// ---- embedding ----

Vec embedding_forward(const Ids& tokens, const Vec& table, int64_t V, int64_t D) {
  expect_size(table, V * D, "embedding_forward", "table");
  const int64_t T = int64_t(tokens.size());
  Vec out(size_t(T * D));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = tokens[size_t(t)];
    LATTE_REQUIRE(id >= 0 && id < V, ErrorCode::invalid_argument, "reference::embedding_forward: id ", id);
    for (int64_t i = 0; i < D; ++i) out[size_t(t * D + i)] = table[size_t(id * D + i)];
  }
  return out;
}

Vec embedding_backward(const Ids& tokens, const Vec& dout, int64_t V, int64_t D) {
  const int64_t T = int64_t(tokens.size());
  expect_size(dout, T * D, "embedding_backward", "dout");
  Vec dtable(size_t(V * D), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = tokens[size_t(t)];
    LATTE_REQUIRE(id >= 0 && id < V, ErrorCode::invalid_argument, "reference::embedding_backward: id ", id);
    for (int64_t i = 0; i < D; ++i) dtable[size_t(id * D + i)] += dout[size_t(t * D + i)];
  }
  return dtable;
}

// ---- rmsnorm ----

RmsnormOut rmsnorm_forward(const Vec& x, const Vec& w, int64_t T, int64_t D, double eps) {
  expect_size(x, T * D, "rmsnorm_forward", "x");
  expect_size(w, D, "rmsnorm_forward", "w");
  RmsnormOut r{Vec(size_t(T * D)), Vec(size_t(T))};
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += x[size_t(t * D + i)] * x[size_t(t * D + i)];
    const double rstd = 1.0 / std::sqrt(ss / double(D) + eps);
    r.rstd[size_t(t)] = rstd;
    for (int64_t i = 0; i < D; ++i) r.y[size_t(t * D + i)] = x[size_t(t * D + i)] * rstd * w[size_t(i)];
  }
  return r;
}

// y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2) and dr/dx_i = -r^3 x_i / D, so
// dx_i = r w_i dy_i - (r^3 / D) x_i sum_j dy_j w_j x_j, and dw_i = sum_t dy_ti x_ti r_t.
RmsnormGrads rmsnorm_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t T, int64_t D, double eps) {
  expect_size(dy, T * D, "rmsnorm_backward", "dy");
  const Vec rstd = rmsnorm_forward(x, w, T, D, eps).rstd;
  RmsnormGrads g{Vec(size_t(T * D)), Vec(size_t(D), 0.0)};
  for (int64_t t = 0; t < T; ++t) {
    const double r = rstd[size_t(t)];
    double c = 0;
    for (int64_t i = 0; i < D; ++i) c += dy[size_t(t * D + i)] * w[size_t(i)] * x[size_t(t * D + i)];
    for (int64_t i = 0; i < D; ++i) {
      const size_t ti = size_t(t * D + i);
      g.dx[ti] = r * w[size_t(i)] * dy[ti] - r * r * r / double(D) * x[ti] * c;
      g.dw[size_t(i)] += dy[ti] * x[ti] * r;
    }
  }
  return g;
}

// ---- rope ----

namespace {
Vec rope_rotate(const Vec& x, const Ids& positions, const RopeShape& s, double sign, const char* fn) {
  expect_size(x, s.T * s.H * s.head_dim, fn, "x");
  LATTE_REQUIRE(int64_t(positions.size()) == s.T && s.head_dim % 2 == 0, ErrorCode::invalid_argument, "reference::", fn,
                ": bad positions or head_dim");
  const int64_t half = s.head_dim / 2;
  Vec y = x;
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t f = s.pair_freqs.empty() ? j : s.pair_freqs[size_t(h * half + j)];
        if (f < 0) continue;
        const double fdim = double(s.freq_dim > 0 ? s.freq_dim : s.head_dim);
        const double angle = double(positions[size_t(t)]) * std::pow(s.theta, -2.0 * double(f) / fdim);
        const double c = std::cos(angle), sn = sign * std::sin(angle);
        const int64_t base = (t * s.H + h) * s.head_dim;
        const int64_t ia = base + (s.layout == RopeLayout::interleaved ? 2 * j : j);
        const int64_t ib = base + (s.layout == RopeLayout::interleaved ? 2 * j + 1 : j + half);
        const double a = x[size_t(ia)], b = x[size_t(ib)];
        y[size_t(ia)] = a * c - b * sn;
        y[size_t(ib)] = a * sn + b * c;
      }
  return y;
}
}  // namespace

Vec rope_forward(const Vec& x, const Ids& positions, const RopeShape& s) {
  return rope_rotate(x, positions, s, 1.0, "rope_forward");
}

Vec rope_backward(const Vec& dy, const Ids& positions, const RopeShape& s) {
  return rope_rotate(dy, positions, s, -1.0, "rope_backward");
}

// ---- attention ----

AttentionOut attention_forward(const Vec& q, const Vec& k, const Vec& v, const AttentionShape& s, double scale) {
  check_attention(q, k, v, s, "attention_forward");
  const int64_t group = s.Hq / s.Hkv;
  AttentionOut r{Vec(size_t(s.B * s.T * s.Hq * s.Dv), 0.0), Vec(size_t(s.B * s.Hq * s.T))};
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t h = 0; h < s.Hq; ++h) {
        const ScoreRow row = attention_scores(q, k, s, scale, b, t, h);
        r.lse[size_t((b * s.Hq + h) * s.T + t)] = row.lse;
        for (int64_t j = 0; j < int64_t(row.s.size()); ++j) {
          const double p = std::exp(row.s[size_t(j)] - row.lse);
          for (int64_t i = 0; i < s.Dv; ++i)
            r.out[size_t(((b * s.T + t) * s.Hq + h) * s.Dv + i)] +=
                p * v[size_t(((b * s.S + j) * s.Hkv + h / group) * s.Dv + i)];
        }
      }
  return r;
}

// With P = softmax(S) per query row and O = P V:
//   dV_j += P_tj dO_t;  dP_tj = dO_t . V_j;  dS_tj = P_tj (dP_tj - sum_j' P_tj' dP_tj');
//   dQ_t += scale dS_tj K_j;  dK_j += scale dS_tj Q_t.
AttentionGrads attention_backward(const Vec& dout, const Vec& q, const Vec& k, const Vec& v, const AttentionShape& s,
                                  double scale) {
  check_attention(q, k, v, s, "attention_backward");
  expect_size(dout, s.B * s.T * s.Hq * s.Dv, "attention_backward", "dout");
  const int64_t group = s.Hq / s.Hkv;
  AttentionGrads g{Vec(q.size(), 0.0), Vec(k.size(), 0.0), Vec(v.size(), 0.0)};
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t h = 0; h < s.Hq; ++h) {
        const int64_t hk = h / group;
        const ScoreRow row = attention_scores(q, k, s, scale, b, t, h);
        const int64_t n_keys = int64_t(row.s.size());
        const size_t qo = size_t(((b * s.T + t) * s.Hq + h) * s.Dk);
        const size_t oo = size_t(((b * s.T + t) * s.Hq + h) * s.Dv);
        std::vector<double> p(static_cast<size_t>(n_keys)), dp(static_cast<size_t>(n_keys));
        double p_dot_dp = 0;
        for (int64_t j = 0; j < n_keys; ++j) {
          p[size_t(j)] = std::exp(row.s[size_t(j)] - row.lse);
          double d = 0;
          for (int64_t i = 0; i < s.Dv; ++i)
            d += dout[oo + size_t(i)] * v[size_t(((b * s.S + j) * s.Hkv + hk) * s.Dv + i)];
          dp[size_t(j)] = d;
          p_dot_dp += p[size_t(j)] * d;
        }
        for (int64_t j = 0; j < n_keys; ++j) {
          const double ds = p[size_t(j)] * (dp[size_t(j)] - p_dot_dp);
          const size_t ko = size_t(((b * s.S + j) * s.Hkv + hk) * s.Dk);
          const size_t vo = size_t(((b * s.S + j) * s.Hkv + hk) * s.Dv);
          for (int64_t i = 0; i < s.Dk; ++i) {
            g.dq[qo + size_t(i)] += scale * ds * k[ko + size_t(i)];
            g.dk[ko + size_t(i)] += scale * ds * q[qo + size_t(i)];
          }
          for (int64_t i = 0; i < s.Dv; ++i) g.dv[vo + size_t(i)] += p[size_t(j)] * dout[oo + size_t(i)];
        }
      }
  return g;
}

// ---- paged KV cache ----

namespace {

// The slot of key position pos of sequence s.
int64_t paged_slot(const PagedLayout& p, int64_t s, int64_t pos) {
  return int64_t(p.block_table[size_t(s * p.max_blocks + pos / p.block_size)]) * p.block_size + pos % p.block_size;
}

void check_paged(const PagedLayout& p, int64_t N, const char* fn) {
  LATTE_REQUIRE(p.query_start.size() == p.context_len.size() + 1 && p.query_start.back() == N &&
                    int64_t(p.block_table.size()) == int64_t(p.context_len.size()) * p.max_blocks,
                ErrorCode::invalid_argument, "reference::", fn, ": batch layout does not match ", N, " query rows");
}

// The softmax weights of one query row over the keys it sees, from its scores.
std::vector<double> softmax(const std::vector<double>& s) {
  const double m = *std::max_element(s.begin(), s.end());
  double l = 0;
  for (double x : s) l += std::exp(x - m);
  std::vector<double> p(s.size());
  for (size_t j = 0; j < s.size(); ++j) p[j] = std::exp(s[j] - m) / l;
  return p;
}

}  // namespace

Vec paged_cache_write(const Vec& cache, const Vec& rows, const Ids& slots, int64_t W) {
  expect_size(rows, int64_t(slots.size()) * W, "paged_cache_write", "rows");
  Vec out = cache;
  for (size_t n = 0; n < slots.size(); ++n)
    for (int64_t i = 0; i < W; ++i) out[size_t(slots[n] * W + i)] = rows[n * size_t(W) + size_t(i)];
  return out;
}

I8Rows quantize_i8_rows(const Vec& rows, int64_t N, int64_t W) {
  expect_size(rows, N * W, "quantize_i8_rows", "rows");
  I8Rows r{Vec(rows.size(), 0.0), Vec(size_t(N), 0.0)};
  for (int64_t n = 0; n < N; ++n) {
    double amax = 0;
    for (int64_t i = 0; i < W; ++i) amax = std::max(amax, std::fabs(rows[size_t(n * W + i)]));
    const double scale = amax / 127;
    r.scale[size_t(n)] = scale;
    if (scale == 0) continue;
    for (int64_t i = 0; i < W; ++i)
      r.q[size_t(n * W + i)] = std::clamp(std::nearbyint(rows[size_t(n * W + i)] / scale), -127.0, 127.0);
  }
  return r;
}

Vec paged_attention(const Vec& q, const Vec& k_cache, const Vec& v_cache, const PagedLayout& p,
                    const PagedAttentionShape& s, double scale) {
  const int64_t N = s.N;
  expect_size(q, N * s.Hq * s.Dk, "paged_attention", "q");
  check_paged(p, N, "paged_attention");
  const int64_t group = s.Hq / s.Hkv;
  Vec out(size_t(N * s.Hq * s.Dv), 0.0);
  for (size_t sq = 0; sq < p.context_len.size(); ++sq) {
    const int64_t q0 = p.query_start[sq], n = p.query_start[sq + 1] - q0, ctx = p.context_len[sq];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < s.Hq; ++h) {
        const int64_t row = q0 + i, hk = h / group, n_keys = ctx - n + i + 1;
        std::vector<double> sc(static_cast<size_t>(n_keys));
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t slot = paged_slot(p, int64_t(sq), j);
          double dot = 0;
          for (int64_t e = 0; e < s.Dk; ++e)
            dot += q[size_t((row * s.Hq + h) * s.Dk + e)] * k_cache[size_t((slot * s.Hkv + hk) * s.Dk + e)];
          sc[size_t(j)] = scale * dot;
        }
        const std::vector<double> w = softmax(sc);
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t slot = paged_slot(p, int64_t(sq), j);
          for (int64_t e = 0; e < s.Dv; ++e)
            out[size_t((row * s.Hq + h) * s.Dv + e)] += w[size_t(j)] * v_cache[size_t((slot * s.Hkv + hk) * s.Dv + e)];
        }
      }
  }
  return out;
}

Vec paged_mla_attention(const Vec& q_rope, const Vec& q_lat, const Vec& k_rope_cache, const Vec& k_rope_scales,
                        const Vec& latent_cache, const Vec& latent_scales, const PagedLayout& p,
                        const PagedMlaShape& s, double scale) {
  const int64_t N = s.N;
  expect_size(q_lat, N * s.Hq * s.L, "paged_mla_attention", "q_lat");
  expect_size(q_rope, N * s.Hq * s.R, "paged_mla_attention", "q_rope");
  check_paged(p, N, "paged_mla_attention");
  const int64_t group = s.Hq / s.Hkv;
  auto latent = [&](int64_t slot, int64_t e) {
    const double x = latent_cache[size_t(slot * s.L + e)];
    return latent_scales.empty() ? x : x * latent_scales[size_t(slot)];
  };
  auto k_rope = [&](int64_t slot, int64_t hk, int64_t e) {
    const double x = k_rope_cache[size_t((slot * s.Hkv + hk) * s.R + e)];
    return k_rope_scales.empty() ? x : x * k_rope_scales[size_t(slot)];
  };
  Vec out(size_t(N * s.Hq * s.L), 0.0);
  for (size_t sq = 0; sq < p.context_len.size(); ++sq) {
    const int64_t q0 = p.query_start[sq], n = p.query_start[sq + 1] - q0, ctx = p.context_len[sq];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < s.Hq; ++h) {
        const int64_t row = q0 + i, hk = h / group, n_keys = ctx - n + i + 1;
        std::vector<double> sc(static_cast<size_t>(n_keys));
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t slot = paged_slot(p, int64_t(sq), j);
          double dot = 0;
          for (int64_t e = 0; e < s.R; ++e)
            dot += q_rope[size_t((row * s.Hq + h) * s.R + e)] * k_rope(slot, hk, e);
          for (int64_t e = 0; e < s.L; ++e) dot += q_lat[size_t((row * s.Hq + h) * s.L + e)] * latent(slot, e);
          sc[size_t(j)] = scale * dot;
        }
        const std::vector<double> w = softmax(sc);
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t slot = paged_slot(p, int64_t(sq), j);
          for (int64_t e = 0; e < s.L; ++e) out[size_t((row * s.Hq + h) * s.L + e)] += w[size_t(j)] * latent(slot, e);
        }
      }
  }
  return out;
}

// ---- swiglu ----

Vec swiglu_forward(const Vec& gate, const Vec& up) {
  expect_size(up, int64_t(gate.size()), "swiglu_forward", "up");
  Vec h(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return h;
}

// d silu(g)/dg = sigmoid(g) + g sigmoid(g) (1 - sigmoid(g)).
SwigluGrads swiglu_backward(const Vec& dh, const Vec& gate, const Vec& up) {
  expect_size(up, int64_t(gate.size()), "swiglu_backward", "up");
  expect_size(dh, int64_t(gate.size()), "swiglu_backward", "dh");
  SwigluGrads g{Vec(gate.size()), Vec(gate.size())};
  for (size_t i = 0; i < gate.size(); ++i) {
    const double sg = sigmoid(gate[i]);
    g.dgate[i] = dh[i] * up[i] * (sg + gate[i] * sg * (1.0 - sg));
    g.dup[i] = dh[i] * gate[i] * sg;
  }
  return g;
}

Vec embedding_slice_forward(const Ids& tokens, const Vec& table, int64_t V, int64_t D, int64_t vocab_begin) {
  expect_size(table, V * D, "embedding_slice_forward", "table");
  const int64_t T = int64_t(tokens.size());
  Vec out(size_t(T * D), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = int64_t(tokens[size_t(t)]) - vocab_begin;
    if (id < 0 || id >= V) continue;
    for (int64_t i = 0; i < D; ++i) out[size_t(t * D + i)] = table[size_t(id * D + i)];
  }
  return out;
}

Vec embedding_slice_backward(const Ids& tokens, const Vec& dout, int64_t V, int64_t D, int64_t vocab_begin) {
  const int64_t T = int64_t(tokens.size());
  expect_size(dout, T * D, "embedding_slice_backward", "dout");
  Vec dtable(size_t(V * D), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = int64_t(tokens[size_t(t)]) - vocab_begin;
    if (id < 0 || id >= V) continue;
    for (int64_t i = 0; i < D; ++i) dtable[size_t(id * D + i)] += dout[size_t(t * D + i)];
  }
  return dtable;
}

// ---- cross entropy ----

namespace {
double row_logsumexp(const Vec& logits, int64_t t, int64_t V) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < V; ++i) m = std::max(m, logits[size_t(t * V + i)]);
  double l = 0;
  for (int64_t i = 0; i < V; ++i) l += std::exp(logits[size_t(t * V + i)] - m);
  return m + std::log(l);
}
}  // namespace

Vec cross_entropy_forward(const Vec& logits, const Ids& targets, int64_t T, int64_t V) {
  expect_size(logits, T * V, "cross_entropy_forward", "logits");
  LATTE_REQUIRE(int64_t(targets.size()) == T, ErrorCode::invalid_argument,
                "reference::cross_entropy_forward: ", targets.size(), " targets for T = ", T);
  Vec losses(size_t(T), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t y = targets[size_t(t)];
    LATTE_REQUIRE(y < V, ErrorCode::invalid_argument, "reference::cross_entropy_forward: target ", y);
    if (y >= 0) losses[size_t(t)] = row_logsumexp(logits, t, V) - logits[size_t(t * V + y)];
  }
  return losses;
}

Vec cross_entropy_backward(const Vec& logits, const Ids& targets, int64_t T, int64_t V, double scale) {
  expect_size(logits, T * V, "cross_entropy_backward", "logits");
  LATTE_REQUIRE(int64_t(targets.size()) == T, ErrorCode::invalid_argument,
                "reference::cross_entropy_backward: ", targets.size(), " targets for T = ", T);
  Vec d(size_t(T * V), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t y = targets[size_t(t)];
    LATTE_REQUIRE(y < V, ErrorCode::invalid_argument, "reference::cross_entropy_backward: target ", y);
    if (y < 0) continue;
    const double lse = row_logsumexp(logits, t, V);
    for (int64_t i = 0; i < V; ++i)
      d[size_t(t * V + i)] = scale * (std::exp(logits[size_t(t * V + i)] - lse) - (i == y ? 1.0 : 0.0));
  }
  return d;
}

Vec cross_entropy_slice_max(const Vec& logits, int64_t N, int64_t V) {
  expect_size(logits, N * V, "cross_entropy_slice_max", "logits");
  Vec m(size_t(N), -std::numeric_limits<double>::infinity());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < V; ++v) m[size_t(n)] = std::max(m[size_t(n)], logits[size_t(n * V + v)]);
  return m;
}

CeSliceSums cross_entropy_slice_sums(const Vec& logits, const Vec& row_max, const Ids& targets, int64_t N, int64_t V,
                                     int64_t vocab_begin) {
  expect_size(logits, N * V, "cross_entropy_slice_sums", "logits");
  expect_size(row_max, N, "cross_entropy_slice_sums", "row_max");
  LATTE_REQUIRE(int64_t(targets.size()) == N, ErrorCode::invalid_argument,
                "reference::cross_entropy_slice_sums: ", targets.size(), " targets for N = ", N);
  CeSliceSums r{Vec(size_t(N), 0.0), Vec(size_t(N), 0.0)};
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t v = 0; v < V; ++v) r.sum_exp[size_t(n)] += std::exp(logits[size_t(n * V + v)] - row_max[size_t(n)]);
    const int64_t y = targets[size_t(n)];
    if (y >= vocab_begin && y < vocab_begin + V) r.target_logit[size_t(n)] = logits[size_t(n * V + y - vocab_begin)];
  }
  return r;
}

CeSliceLosses cross_entropy_slice_losses(const Vec& row_max, const Vec& sum_exp, const Vec& target_logit,
                                         const Ids& targets) {
  const int64_t N = int64_t(row_max.size());
  expect_size(sum_exp, N, "cross_entropy_slice_losses", "sum_exp");
  expect_size(target_logit, N, "cross_entropy_slice_losses", "target_logit");
  LATTE_REQUIRE(int64_t(targets.size()) == N, ErrorCode::invalid_argument,
                "reference::cross_entropy_slice_losses: ", targets.size(), " targets for N = ", N);
  CeSliceLosses r{Vec(size_t(N), 0.0), Vec(size_t(N), 0.0)};
  for (int64_t n = 0; n < N; ++n) {
    r.lse[size_t(n)] = row_max[size_t(n)] + std::log(sum_exp[size_t(n)]);
    if (targets[size_t(n)] >= 0) r.losses[size_t(n)] = r.lse[size_t(n)] - target_logit[size_t(n)];
  }
  return r;
}

Vec cross_entropy_slice_backward(const Vec& logits, const Vec& lse, const Ids& targets, int64_t N, int64_t V,
                                 int64_t vocab_begin, double scale) {
  expect_size(logits, N * V, "cross_entropy_slice_backward", "logits");
  expect_size(lse, N, "cross_entropy_slice_backward", "lse");
  LATTE_REQUIRE(int64_t(targets.size()) == N, ErrorCode::invalid_argument,
                "reference::cross_entropy_slice_backward: ", targets.size(), " targets for N = ", N);
  Vec d(size_t(N * V), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t y = targets[size_t(n)];
    if (y < 0) continue;
    for (int64_t v = 0; v < V; ++v)
      d[size_t(n * V + v)] =
          scale * (std::exp(logits[size_t(n * V + v)] - lse[size_t(n)]) - (y == vocab_begin + v ? 1.0 : 0.0));
  }
  return d;
}

// ---- elementwise ----

Vec add(const Vec& y, const Vec& x) {
  expect_size(x, int64_t(y.size()), "add", "x");
  Vec r(y.size());
  for (size_t i = 0; i < y.size(); ++i) r[i] = y[i] + x[i];
  return r;
}

}  // namespace latte::reference
