#include "trainer/mha2mla/partial_rope.h"

#include <algorithm>
#include <numeric>

#include "core/base/error.h"

namespace latte {

const char* rope_strategy_name(RopeStrategy s) {
  switch (s) {
    case RopeStrategy::high: return "high";
    case RopeStrategy::low: return "low";
    case RopeStrategy::uniform: return "uniform";
    case RopeStrategy::two_norm: return "2norm";
  }
  return "?";
}

RopeStrategy rope_strategy_from_name(const std::string& name) {
  for (RopeStrategy s : {RopeStrategy::high, RopeStrategy::low, RopeStrategy::uniform, RopeStrategy::two_norm})
    if (name == rope_strategy_name(s)) return s;
  fail(ErrorCode::invalid_argument, "unknown RoPE strategy '", name, "' (expected high, low, uniform or 2norm)");
}

PairDims pair_dims(int64_t i, RopeLayout layout, int64_t head_dim) {
  LATTE_ASSERT(i >= 0 && 2 * i < head_dim);
  return layout == RopeLayout::interleaved ? PairDims{2 * i, 2 * i + 1} : PairDims{i, i + head_dim / 2};
}

int32_t pair_of_dim(int64_t d, RopeLayout layout, int64_t head_dim) {
  LATTE_ASSERT(d >= 0 && d < head_dim);
  return int32_t(layout == RopeLayout::interleaved ? d / 2 : d % (head_dim / 2));
}

std::vector<double> two_norm_scores(const PairNorms& n, int64_t layer, int64_t kv_head) {
  const int64_t g = n.n_heads / n.n_kv_heads;
  std::vector<double> score(size_t(n.n_pairs), 0.0);
  const double* k = n.k.data() + (layer * n.n_kv_heads + kv_head) * n.n_pairs;
  for (int64_t h = kv_head * g; h < (kv_head + 1) * g; ++h) {
    const double* q = n.q.data() + (layer * n.n_heads + h) * n.n_pairs;
    for (int64_t i = 0; i < n.n_pairs; ++i) score[size_t(i)] += q[i] * k[i];
  }
  return score;
}

namespace {

// The set shared by every layer and head for the fixed strategies (spec 2.2; example for
// head_dim 64, r 4: high {0,1,2,3}, low {28..31}, uniform {0,8,16,24}).
std::vector<int32_t> fixed_pairs(RopeStrategy s, int64_t r, int64_t n_pairs) {
  std::vector<int32_t> out(static_cast<size_t>(r));
  for (int64_t k = 0; k < r; ++k) {
    switch (s) {
      case RopeStrategy::high: out[size_t(k)] = int32_t(k); break;
      case RopeStrategy::low: out[size_t(k)] = int32_t(n_pairs - r + k); break;
      case RopeStrategy::uniform: out[size_t(k)] = int32_t(k * (n_pairs / r)); break;
      case RopeStrategy::two_norm: LATTE_ASSERT(false);
    }
  }
  return out;
}

// Top r by score; a tie goes to the lower index (stable sort), so the choice is deterministic.
std::vector<int32_t> top_pairs(const std::vector<double>& score, int64_t r) {
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[size_t(a)] > score[size_t(b)]; });
  idx.resize(size_t(r));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

RopeFreqs select_rope_freqs(RopeStrategy s, int64_t r, const ModelConfig& c, const PairNorms* norms) {
  const int64_t n_pairs = c.head_dim / 2;
  LATTE_REQUIRE(r >= 0 && r <= n_pairs, ErrorCode::invalid_argument, "rope pairs r = ", r,
                " is outside the valid range [0, head_dim/2 = ", n_pairs, "]");
  if (s == RopeStrategy::uniform && r > 0)
    LATTE_REQUIRE(n_pairs % r == 0, ErrorCode::invalid_argument, "rope strategy uniform needs r to divide head_dim/2 = ",
                  n_pairs, " (every (head_dim/2r)-th pair); r = ", r, " does not");
  RopeFreqs out(size_t(c.n_layers), std::vector<std::vector<int32_t>>(size_t(c.n_kv_heads)));
  if (s != RopeStrategy::two_norm) {
    const std::vector<int32_t> fixed = fixed_pairs(s, r, n_pairs);
    for (auto& layer : out)
      for (auto& head : layer) head = fixed;
    return out;
  }
  LATTE_REQUIRE(norms != nullptr, ErrorCode::invalid_argument,
                "rope strategy 2norm needs calibration statistics (a calibration text)");
  LATTE_REQUIRE(norms->n_layers == c.n_layers && norms->n_heads == c.n_heads && norms->n_kv_heads == c.n_kv_heads &&
                    norms->n_pairs == n_pairs && int64_t(norms->q.size()) == c.n_layers * c.n_heads * n_pairs &&
                    int64_t(norms->k.size()) == c.n_layers * c.n_kv_heads * n_pairs,
                ErrorCode::shape_mismatch, "2norm statistics are for ", norms->n_layers, " layers, ", norms->n_heads,
                " heads, ", norms->n_kv_heads, " KV heads, ", norms->n_pairs, " pairs; the model has ", c.n_layers,
                ", ", c.n_heads, ", ", c.n_kv_heads, ", ", n_pairs);
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t j = 0; j < c.n_kv_heads; ++j) out[size_t(l)][size_t(j)] = top_pairs(two_norm_scores(*norms, l, j), r);
  return out;
}

HeadRows head_rows(const std::vector<int32_t>& freqs, RopeLayout layout, int64_t head_dim) {
  HeadRows rows;
  std::vector<bool> is_rope(size_t(head_dim), false);
  for (int32_t i : freqs) {
    const PairDims p = pair_dims(i, layout, head_dim);
    rows.rope.push_back(p.first);
    rows.rope.push_back(p.second);
    is_rope[size_t(p.first)] = is_rope[size_t(p.second)] = true;
  }
  for (int64_t d = 0; d < head_dim; ++d)
    if (!is_rope[size_t(d)]) rows.nope.push_back(d);
  return rows;
}

}  // namespace latte
