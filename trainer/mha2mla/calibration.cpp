#include "trainer/mha2mla/calibration.h"

#include <algorithm>
#include <cmath>

#include "core/base/file_io.h"
#include "core/model/transformer.h"

namespace latte {

PairNormAccumulator::PairNormAccumulator(const ModelConfig& c) : layout_(c.rope_layout), head_dim_(c.head_dim) {
  norms_.n_layers = c.n_layers;
  norms_.n_heads = c.n_heads;
  norms_.n_kv_heads = c.n_kv_heads;
  norms_.n_pairs = c.head_dim / 2;
  norms_.q.assign(size_t(c.n_layers * c.n_heads * norms_.n_pairs), 0.0);
  norms_.k.assign(size_t(c.n_layers * c.n_kv_heads * norms_.n_pairs), 0.0);
}

namespace {

// sums[h * n_pairs + i] += ||(x[first], x[second])|| over all positions of x [B, T, H, head_dim].
void add_norms(double* sums, const Tensor& x, int64_t heads, int64_t head_dim, RopeLayout layout) {
  LATTE_REQUIRE(x.ndim() == 4 && x.dim(2) == heads && x.dim(3) == head_dim && x.is_contiguous(),
                ErrorCode::shape_mismatch, "pair norms: activation of shape ", shape_str(x.shape()),
                ", expected [B, T, ", heads, ", ", head_dim, "]");
  const std::vector<float> v = x.to_vector();
  const int64_t positions = x.dim(0) * x.dim(1), n_pairs = head_dim / 2;
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t h = 0; h < heads; ++h) {
      const float* row = v.data() + (p * heads + h) * head_dim;
      for (int64_t i = 0; i < n_pairs; ++i) {
        const PairDims d = pair_dims(i, layout, head_dim);
        sums[h * n_pairs + i] += std::hypot(double(row[d.first]), double(row[d.second]));
      }
    }
}

}  // namespace

void PairNormAccumulator::add(int64_t layer, const Tensor& q, const Tensor& k) {
  LATTE_ASSERT(layer >= 0 && layer < norms_.n_layers);
  const int64_t P = norms_.n_pairs;
  add_norms(norms_.q.data() + layer * norms_.n_heads * P, q, norms_.n_heads, head_dim_, layout_);
  add_norms(norms_.k.data() + layer * norms_.n_kv_heads * P, k, norms_.n_kv_heads, head_dim_, layout_);
}

PairNorms PairNormAccumulator::mean() const {
  LATTE_REQUIRE(norms_.positions > 0, ErrorCode::invalid_argument, "pair norms: no calibration position was added");
  PairNorms m = norms_;
  for (double& v : m.q) v /= double(m.positions);
  for (double& v : m.k) v /= double(m.positions);
  return m;
}

CalibrationStats collect_calibration(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                                     const CalibrationOptions& o, Backend& backend, CalibrationNeeds needs) {
  LATTE_REQUIRE(o.max_tokens > 0, ErrorCode::invalid_argument, "calibration tokens must be positive, got ",
                o.max_tokens);
  const std::string text = read_text_file(o.text_path);
  LATTE_REQUIRE(!text.empty(), ErrorCode::invalid_argument, "calibration text ", o.text_path, " is empty");
  std::vector<int32_t> tokens = tokenizer.encode(text, false);
  LATTE_REQUIRE(!tokens.empty(), ErrorCode::invalid_argument, "calibration text ", o.text_path, " has no tokens");
  if (int64_t(tokens.size()) > o.max_tokens) tokens.resize(size_t(o.max_tokens));
  LATTE_REQUIRE(int64_t(tokens.size()) >= o.min_tokens, ErrorCode::invalid_argument, "calibration text ",
                o.text_path, " gives only ", tokens.size(), " tokens (of at most ", o.max_tokens, "); ",
                o.min_tokens_why.empty() ? std::string("this conversion") : o.min_tokens_why, " needs at least ",
                o.min_tokens);
  const int32_t bos = tokenizer.bos_id();
  const int64_t window = o.window > 0 ? std::min(o.window, c.max_seq_len) : std::min<int64_t>(c.max_seq_len, 2048);
  const int64_t per_window = window - (bos >= 0 ? 1 : 0);
  LATTE_REQUIRE(per_window > 0, ErrorCode::invalid_argument, "calibration window of ", window,
                " positions leaves no room for text after BOS");

  Transformer model(c, weights_from_store(c, weights), backend);
  PairNormAccumulator norms(c);
  AttentionInputMomentAccumulator moments(c.n_layers, c.dim);
  Activations acts;
  int64_t positions = 0;
  std::vector<int32_t> in, targets;
  for (size_t start = 0; start < tokens.size(); start += size_t(per_window)) {
    const size_t end = std::min(tokens.size(), start + size_t(per_window));
    in.clear();
    if (bos >= 0) in.push_back(bos);
    in.insert(in.end(), tokens.begin() + long(start), tokens.begin() + long(end));
    // The loss is not used, but forward_train wants at least one target: next tokens, and for a
    // one-position window the token itself.
    targets.assign(in.begin() + 1, in.end());
    targets.push_back(in.size() == 1 ? in[0] : -1);
    model.forward_train(in, targets, 1, acts);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const Activations::Layer& a = acts.layers[size_t(l)];
      if (needs.pair_norms) norms.add(l, a.q, a.k);
      if (needs.input_moments) moments.add(l, a.xn_attn);
    }
    norms.count_positions(int64_t(in.size()));
    moments.count_positions(int64_t(in.size()));
    positions += int64_t(in.size());
    if (o.progress) o.progress(int64_t(end), int64_t(tokens.size()));
  }
  CalibrationStats stats;
  if (needs.pair_norms) {
    stats.pair_norms = norms.mean();
    stats.pair_norms.text_tokens = int64_t(tokens.size());
  }
  if (needs.input_moments) stats.input_moments = moments.result();
  stats.text_tokens = int64_t(tokens.size());
  stats.positions = positions;
  return stats;
}

PairNorms collect_pair_norms(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                             const CalibrationOptions& o, Backend& backend) {
  return collect_calibration(c, weights, tokenizer, o, backend, {.pair_norms = true}).pair_norms;
}

}  // namespace latte
