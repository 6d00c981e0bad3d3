#include "core/model/rope_tables.h"

namespace latte {

RopeTables::RopeTables(const ModelConfig& c, const TpLayout& tp)
    : layout_(c.rope_layout), theta_(c.rope_theta), head_dim_(c.head_dim), qk_head_dim_(c.qk_head_dim()),
      rope_dim_(c.rope_dim()), mla_(c.is_mla()) {
  if (!mla_) return;
  const int64_t half = c.qk_head_dim() / 2, group = c.n_heads / c.n_kv_heads;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    // The frequencies of the RoPE key(s) a query head of KV group j reads: its group's, or the
    // one shared key's.
    auto key_freqs = [&](int64_t j) -> const std::vector<int32_t>& {
      return c.shared_rope() ? c.shared_rope_freqs[size_t(l)] : c.rope_freqs[size_t(l)][size_t(j)];
    };
    std::vector<int32_t> q(size_t(tp.heads * half), -1), k;
    for (int64_t hl = 0; hl < tp.heads; ++hl) {
      const std::vector<int32_t>& f = key_freqs((tp.heads0 + hl) / group);
      for (size_t s = 0; s < f.size(); ++s) q[size_t(hl * half) + s] = f[s];
    }
    if (c.shared_rope()) {
      k = c.shared_rope_freqs[size_t(l)];
    } else {
      for (int64_t jl = 0; jl < tp.kv_heads; ++jl)
        for (int32_t f : c.rope_freqs[size_t(l)][size_t(tp.kv_heads0 + jl)]) k.push_back(f);
    }
    q_pair_freqs_.push_back(std::move(q));
    k_pair_freqs_.push_back(std::move(k));
  }
}

RopeParams RopeTables::q(int64_t layer) const {
  if (!mla_) return RopeParams{.layout = layout_, .theta = theta_, .head_dim = head_dim_};
  return RopeParams{.layout = layout_, .theta = theta_, .head_dim = qk_head_dim_,
                    .pair_freqs = q_pair_freqs_[size_t(layer)], .freq_dim = head_dim_};
}

RopeParams RopeTables::k(int64_t layer) const {
  if (!mla_) return q(layer);
  return RopeParams{.layout = RopeLayout::interleaved, .theta = theta_, .head_dim = rope_dim_,
                    .pair_freqs = k_pair_freqs_[size_t(layer)], .freq_dim = head_dim_};
}

}  // namespace latte
