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

namespace {

// The calibration text as the windows the model runs: each [BOS] + the next text tokens when
// the vocabulary has a BOS.
struct CalibrationWindows {
  std::vector<std::vector<int32_t>> windows;
  int64_t text_tokens = 0, positions = 0;
};

CalibrationWindows calibration_windows(const ModelConfig& c, const Tokenizer& tokenizer, const CalibrationOptions& o) {
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
  CalibrationWindows w;
  for (size_t start = 0; start < tokens.size(); start += size_t(per_window)) {
    const size_t end = std::min(tokens.size(), start + size_t(per_window));
    std::vector<int32_t> in;
    if (bos >= 0) in.push_back(bos);
    in.insert(in.end(), tokens.begin() + long(start), tokens.begin() + long(end));
    w.positions += int64_t(in.size());
    w.windows.push_back(std::move(in));
  }
  w.text_tokens = int64_t(tokens.size());
  return w;
}

}  // namespace

CalibrationStats collect_calibration(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                                     const CalibrationOptions& o, Backend& backend, CalibrationNeeds needs) {
  const CalibrationWindows w = calibration_windows(c, tokenizer, o);
  Transformer model(c, weights_from_store(c, weights), backend);
  PairNormAccumulator norms(c);
  AttentionInputMomentAccumulator moments(c.n_layers, c.dim);
  Activations acts;
  std::vector<int32_t> targets;
  int64_t done = 0;
  for (const std::vector<int32_t>& in : w.windows) {
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
    done += int64_t(in.size()) - (tokenizer.bos_id() >= 0 ? 1 : 0);
    if (o.progress) o.progress(done, w.text_tokens);
  }
  CalibrationStats stats;
  if (needs.pair_norms) {
    stats.pair_norms = norms.mean();
    stats.pair_norms.text_tokens = w.text_tokens;
  }
  if (needs.input_moments) stats.input_moments = moments.result();
  stats.text_tokens = w.text_tokens;
  stats.positions = w.positions;
  return stats;
}

struct LayerwiseCalibration::State {
  State(const ModelConfig& c, const TensorStore& weights, Backend& backend)
      : model(c, weights_from_store(c, weights), backend), norms(c), moments(1, c.dim) {}
  Transformer model;
  std::vector<Tensor> hidden;  // per window, the input of layer next_
  PairNormAccumulator norms;
  AttentionInputMomentAccumulator moments;  // of the last layer run
  int64_t dim = 0;
};

LayerwiseCalibration::LayerwiseCalibration(const ModelConfig& c, const TensorStore& weights,
                                           const Tokenizer& tokenizer, const CalibrationOptions& o, Backend& backend,
                                           CalibrationNeeds needs)
    : needs_(needs) {
  const CalibrationWindows w = calibration_windows(c, tokenizer, o);
  s_ = std::make_unique<State>(c, weights, backend);
  s_->dim = c.dim;
  for (const std::vector<int32_t>& in : w.windows) s_->hidden.push_back(s_->model.embed_train(in));
  s_->norms.count_positions(w.positions);
  text_tokens_ = w.text_tokens;
  positions_ = w.positions;
}

LayerwiseCalibration::~LayerwiseCalibration() = default;

int64_t LayerwiseCalibration::run_next_layer() {
  const int64_t l = next_;
  LATTE_REQUIRE(l < s_->model.config().n_layers, ErrorCode::invalid_argument, "calibration: every one of the ",
                l, " layers has run");
  s_->moments = AttentionInputMomentAccumulator(1, s_->dim);
  Activations::Layer a;
  for (Tensor& x : s_->hidden) {
    Tensor out = s_->model.layer_forward_train(l, x, 1, a);
    if (needs_.pair_norms) s_->norms.add(l, a.q, a.k);
    if (needs_.input_moments) s_->moments.add(0, a.xn_attn);
    x = out;
  }
  s_->moments.count_positions(positions_);
  ++next_;
  if (next_ == s_->model.config().n_layers) s_->hidden.clear();
  return l;
}

PairNorms LayerwiseCalibration::pair_norms() const {
  LATTE_REQUIRE(needs_.pair_norms, ErrorCode::internal, "calibration: pair norms were not asked for");
  PairNorms m = s_->norms.mean();
  m.text_tokens = text_tokens_;
  return m;
}

MatrixD LayerwiseCalibration::second_moment() const {
  LATTE_REQUIRE(needs_.input_moments && next_ > 0, ErrorCode::internal,
                "calibration: no attention-input moment (not asked for, or no layer has run)");
  return s_->moments.result().second_moment(0);
}

PairNorms collect_pair_norms(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                             const CalibrationOptions& o, Backend& backend) {
  return collect_calibration(c, weights, tokenizer, o, backend, {.pair_norms = true}).pair_norms;
}

}  // namespace latte
