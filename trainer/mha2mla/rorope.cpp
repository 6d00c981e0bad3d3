#include "trainer/mha2mla/rorope.h"

#include <algorithm>
#include <numeric>

#include "core/base/error.h"
#include "core/linalg/matmul.h"
#include "core/linalg/svd.h"
#include "trainer/mha2mla/partial_rope.h"

namespace latte {

std::vector<int32_t> RoropePlan::freqs() const {
  std::vector<int32_t> out;
  for (const RoropeComponent& k : kept) out.push_back(k.freq);
  return out;
}

std::vector<int32_t> RoropePlan::dropped(int32_t freq) const {
  std::vector<bool> is_kept(size_t(n_kv_heads), false);
  for (const RoropeComponent& k : kept)
    if (k.freq == freq) is_kept[size_t(k.component)] = true;
  std::vector<int32_t> out;
  for (int32_t j = 0; j < int32_t(n_kv_heads); ++j)
    if (!is_kept[size_t(j)]) out.push_back(j);
  return out;
}

namespace {

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// dst = sum_h coef[h] * src.row(rows[h]), for one output row.
void mix_rows(double* dst, const MatrixD& src, const std::vector<int64_t>& rows, const std::vector<double>& coef) {
  std::fill(dst, dst + src.cols, 0.0);
  for (size_t h = 0; h < rows.size(); ++h) {
    if (coef[h] == 0) continue;
    const double* s = src.row(rows[h]);
    for (int64_t c = 0; c < src.cols; ++c) dst[c] += coef[h] * s[c];
  }
}

}  // namespace

RoropePlan rorope_plan(const ModelConfig& c, const MatrixD& wk, const MatrixD& s, int64_t d_r) {
  const int64_t n_kv = c.n_kv_heads, hd = c.head_dim, n_pairs = hd / 2;
  LATTE_REQUIRE(d_r >= 2 && d_r % 2 == 0 && d_r <= n_kv * hd, ErrorCode::invalid_argument, "RoRoPE: --rope-dims d_r = ",
                d_r, " must be even and in [2, n_kv_heads*head_dim = ", n_kv * hd,
                "] (the shared RoPE key keeps d_r/2 of the ", n_kv * n_pairs, " rotated components)");
  LATTE_REQUIRE(wk.rows == c.kv_dim() && wk.cols == c.dim && s.rows == c.dim && s.cols == c.dim,
                ErrorCode::shape_mismatch, "RoRoPE: key rows [", wk.rows, ", ", wk.cols, "] and moment [", s.rows, ", ",
                s.cols, "] do not fit a model with kv_dim ", c.kv_dim(), " and dim ", c.dim);
  RoropePlan plan;
  plan.n_kv_heads = n_kv;
  plan.n_pairs = n_pairs;
  const MatrixD ks = matmul(wk, s);  // row r: wk_r S, so (wk S wk^T)_{r,r'} = ks_r . wk_r'
  std::vector<RoropeComponent> all;
  double total = 0;
  for (int64_t f = 0; f < n_pairs; ++f) {
    const PairDims p = pair_dims(f, c.rope_layout, hd);
    MatrixD cf(n_kv, n_kv);
    for (int64_t h = 0; h < n_kv; ++h)
      for (int64_t h2 = 0; h2 < n_kv; ++h2)
        cf(h, h2) = dot(ks.row(h * hd + p.first), wk.row(h2 * hd + p.first), c.dim) +
                    dot(ks.row(h * hd + p.second), wk.row(h2 * hd + p.second), c.dim);
    for (int64_t h = 0; h < n_kv; ++h)  // exactly symmetric, whatever the summation order gave
      for (int64_t h2 = 0; h2 < h; ++h2) cf(h, h2) = cf(h2, h) = 0.5 * (cf(h, h2) + cf(h2, h));
    // C_f is symmetric positive semi-definite: its SVD is its eigendecomposition, eigenvalues
    // descending. Only U's orthogonality matters for exactness, and u's columns have it.
    const Svd eig = svd_thin(cf);
    MatrixD u(n_kv, n_kv);
    for (int64_t j = 0; j < n_kv; ++j)
      for (int64_t h = 0; h < n_kv; ++h) u(j, h) = eig.u(h, j);
    plan.rotation.push_back(std::move(u));
    for (int64_t j = 0; j < n_kv; ++j) {
      all.push_back({int32_t(f), int32_t(j), eig.s[size_t(j)]});
      total += eig.s[size_t(j)];
    }
  }
  // The d_r/2 largest energies over all frequencies; a tie goes to the faster frequency, then the
  // leading component (stable sort over (f, j) order), so the choice is deterministic.
  std::stable_sort(all.begin(), all.end(),
                   [](const RoropeComponent& a, const RoropeComponent& b) { return a.energy > b.energy; });
  plan.kept.assign(all.begin(), all.begin() + d_r / 2);
  std::sort(plan.kept.begin(), plan.kept.end(), [](const RoropeComponent& a, const RoropeComponent& b) {
    return a.freq != b.freq ? a.freq < b.freq : a.component < b.component;
  });
  double kept = 0;
  for (const RoropeComponent& k : plan.kept) kept += k.energy;
  plan.energy_kept = total > 0 ? kept / total : 1.0;
  return plan;
}

RoropeWeights rorope_weights(const ModelConfig& c, const MatrixD& wq, const MatrixD& wk, const RoropePlan& plan) {
  const int64_t n_kv = c.n_kv_heads, hd = c.head_dim, G = c.n_heads / c.n_kv_heads, D = c.dim;
  const int64_t d_r = 2 * int64_t(plan.kept.size()), qk = d_r + hd;
  LATTE_REQUIRE(wq.rows == c.n_heads * hd && wq.cols == D && wk.rows == n_kv * hd && wk.cols == D &&
                    plan.n_kv_heads == n_kv && plan.n_pairs == hd / 2,
                ErrorCode::shape_mismatch, "RoRoPE: q rows [", wq.rows, ", ", wq.cols, "] and key rows [", wk.rows, ", ",
                wk.cols, "] do not fit the plan's ", plan.n_kv_heads, " KV heads of ", 2 * plan.n_pairs, " dims");
  RoropeWeights w{MatrixD(c.n_heads * qk, D), MatrixD(d_r, D), MatrixD(n_kv * hd, D)};
  // The source rows of frequency f's two coordinates in every KV head.
  auto key_rows = [&](int64_t f, bool second) {
    const PairDims p = pair_dims(f, c.rope_layout, hd);
    std::vector<int64_t> rows;
    for (int64_t h = 0; h < n_kv; ++h) rows.push_back(h * hd + (second ? p.second : p.first));
    return rows;
  };
  for (size_t s = 0; s < plan.kept.size(); ++s) {
    const RoropeComponent& k = plan.kept[s];
    const MatrixD& u = plan.rotation[size_t(k.freq)];
    const std::vector<double> coef(u.row(k.component), u.row(k.component) + n_kv);  // U_f[j, :]
    // Shared key component j at f = sum_h U_f[j,h] k_{h,f}, the same mixing on both coordinates.
    mix_rows(w.k_rope.row(int64_t(2 * s)), wk, key_rows(k.freq, false), coef);
    mix_rows(w.k_rope.row(int64_t(2 * s + 1)), wk, key_rows(k.freq, true), coef);
    // Query head i reads it with U_f[j, g(i)] q_{i,f}.
    const PairDims p = pair_dims(k.freq, c.rope_layout, hd);
    for (int64_t i = 0; i < c.n_heads; ++i) {
      const double a = u(k.component, i / G);
      const double* first = wq.row(i * hd + p.first);
      const double* second = wq.row(i * hd + p.second);
      double* d0 = w.q.row(i * qk + int64_t(2 * s));
      double* d1 = w.q.row(i * qk + int64_t(2 * s + 1));
      for (int64_t col = 0; col < D; ++col) {
        d0[col] = a * first[col];
        d1[col] = a * second[col];
      }
    }
  }
  // The no-RoPE part of every query head: its source rows, unrotated, in their order.
  for (int64_t i = 0; i < c.n_heads; ++i)
    std::copy(wq.row(i * hd), wq.row(i * hd) + hd * D, w.q.row(i * qk + d_r));
  // No-RoPE keys: per KV head g, P_f k_{g,f} with P_f = U_drop^T U_drop.
  for (int64_t f = 0; f < hd / 2; ++f) {
    const std::vector<int32_t> drop = plan.dropped(int32_t(f));
    if (drop.empty()) continue;
    const MatrixD& u = plan.rotation[size_t(f)];
    const PairDims p = pair_dims(f, c.rope_layout, hd);
    for (int64_t g = 0; g < n_kv; ++g) {
      std::vector<double> coef(size_t(n_kv), 0.0);
      for (int64_t h = 0; h < n_kv; ++h)
        for (int32_t j : drop) coef[size_t(h)] += u(j, g) * u(j, h);
      mix_rows(w.k_nope.row(g * hd + p.first), wk, key_rows(f, false), coef);
      mix_rows(w.k_nope.row(g * hd + p.second), wk, key_rows(f, true), coef);
    }
  }
  return w;
}

}  // namespace latte
