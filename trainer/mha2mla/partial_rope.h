// Partial RoPE (shared/notes/mha2mla-spec.md section 2): which r of a head's head_dim/2
// frequency pairs keep their rotation, per layer and KV head, and the row order of a head after
// conversion. Frequency index i is layout-independent (i = 0 rotates fastest); the two rows
// forming pair i are not, so every gather below goes through pair_dims().
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"

namespace latte {

// Spec 2.2: high = {0..r-1} (fastest), low = the r slowest, uniform = every (head_dim/2r)-th pair
// from 0, two_norm = the r pairs with the largest calibrated q/k norm product (per layer, KV head).
enum class RopeStrategy { high, low, uniform, two_norm };
const char* rope_strategy_name(RopeStrategy s);                // "high", "low", "uniform", "2norm"
RopeStrategy rope_strategy_from_name(const std::string& name);  // invalid_argument naming the choices

// [layer][kv head][r] ascending frequency indices, as ModelConfig::rope_freqs.
using RopeFreqs = std::vector<std::vector<std::vector<int32_t>>>;

// The two coordinates of frequency pair i within a head (spec 1.3): interleaved (2i, 2i+1),
// rotate_half (i, i + head_dim/2).
struct PairDims {
  int64_t first, second;
};
PairDims pair_dims(int64_t i, RopeLayout layout, int64_t head_dim);
// The inverse: the frequency pair that coordinate d of a head belongs to.
int32_t pair_of_dim(int64_t d, RopeLayout layout, int64_t head_dim);

// Mean 2-norm of every pair of every q and k head over calibration positions (spec 2.3 step 4),
// filled by calibration.h. Indexing: q[(l * n_heads + h) * n_pairs + i], k likewise with n_kv_heads.
struct PairNorms {
  int64_t n_layers = 0, n_heads = 0, n_kv_heads = 0, n_pairs = 0;
  std::vector<double> q, k;
  int64_t positions = 0;    // token positions the means are over (BOS included)
  int64_t text_tokens = 0;  // calibration text tokens behind them (BOS not counted)
};

// score[i] = sum over the query heads h of group j of q[l,h,i] * k[l,j,i] (spec 2.3 step 5, the
// paper's product form). Returns [n_pairs].
std::vector<double> two_norm_scores(const PairNorms& n, int64_t layer, int64_t kv_head);

// The kept pairs for every layer and KV head. r must lie in [0, head_dim/2]; uniform also needs
// r to divide head_dim/2 (an integer step); two_norm needs norms for this config's shape.
RopeFreqs select_rope_freqs(RopeStrategy s, int64_t r, const ModelConfig& c, const PairNorms* norms);

// Source row indices of one head in its converted order [rope | nope] (core/model/config.h):
// rope = (first, second) of each kept pair in ascending frequency order (2r rows), nope = the
// other head_dim - 2r rows in their original order.
struct HeadRows {
  std::vector<int64_t> rope, nope;
};
HeadRows head_rows(const std::vector<int32_t>& freqs, RopeLayout layout, int64_t head_dim);

}  // namespace latte
