// The calibration pass: run the original model over a text and collect, in one pass,
//  - for the 2-norm RoPE strategy (shared/notes/mha2mla-spec.md 2.3): per layer, head and
//    frequency pair, the mean 2-norm of the pair's two q (and k) coordinates. RoPE rotates each
//    pair rigidly, so the norms of the post-RoPE q/k that Transformer::forward_train keeps equal
//    the pre-RoPE ones;
//  - for the activation-aware latent (issue 17, trainer/mha2mla/latent_pca.h): per layer, the
//    float64 second moment of the attention input, from which those of the pre-RoPE keys and the
//    values follow exactly (trainer/mha2mla/attention_input_moments.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/tensor/tensor_store.h"
#include "core/tokenizer/tokenizer.h"
#include "trainer/mha2mla/attention_input_moments.h"
#include "trainer/mha2mla/partial_rope.h"

namespace latte {

// Sums pair norms of q [B, T, n_heads, head_dim] and k [B, T, n_kv_heads, head_dim] per layer,
// in float64, and turns them into means.
class PairNormAccumulator {
 public:
  explicit PairNormAccumulator(const ModelConfig& c);
  // Adds every position of one layer's q and k; each layer must see the same positions.
  void add(int64_t layer, const Tensor& q, const Tensor& k);
  void count_positions(int64_t n) { norms_.positions += n; }
  PairNorms mean() const;  // sums / positions; invalid_argument when no position was added

 private:
  PairNorms norms_;  // holds sums until mean()
  RopeLayout layout_;
  int64_t head_dim_;
};

struct CalibrationOptions {
  std::string text_path;
  // Text tokens to run (BOS not counted). The paper used 1024 sequences x 2048 tokens (spec 2.3);
  // this default keeps a CPU calibration of a 135M model to minutes.
  int64_t max_tokens = 32768;
  // Positions per forward pass, BOS included; 0: the model context, capped at 2048 (the paper's
  // calibration length for SmolLM) because forward_train keeps every layer's activations
  // (~1.5 MB per position for SmolLM-135M).
  int64_t window = 0;
  // Fewer text tokens than this is an invalid_argument naming the file, raised before the model
  // runs; min_tokens_why says who needs them (e.g. "--init pca with latent width D = 48").
  int64_t min_tokens = 1;
  std::string min_tokens_why;
  std::function<void(int64_t tokens_done, int64_t tokens_total)> progress;  // after each window
};

// Tokenizes the text (no BOS), takes up to max_tokens tokens, and runs them in windows, each
// [BOS] + next tokens when the vocabulary has a BOS. An empty text, or one with no tokens, is
// an invalid_argument naming the file.
// What one calibration pass collects (the moments cost one dim x dim float64 matrix per layer).
struct CalibrationNeeds {
  bool pair_norms = false;
  bool input_moments = false;
};

struct CalibrationStats {
  PairNorms pair_norms;                 // empty unless needed
  AttentionInputMoments input_moments;  // empty unless needed
  int64_t text_tokens = 0;              // calibration text tokens run (BOS not counted)
  int64_t positions = 0;                // positions run (BOS included)
};

CalibrationStats collect_calibration(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                                     const CalibrationOptions& o, Backend& backend, CalibrationNeeds needs);

// collect_calibration one layer at a time, for a model larger than memory (the streamed
// conversion, trainer/mha2mla/convert_streamed.h): every window's hidden state waits between
// layers ([calibration positions, dim] f32: 512 MiB for 32k positions of a 4096-wide model), so
// a layer's weights are read while that layer runs and never again. Layer l's statistics are
// those of collect_calibration bit for bit: the same windows through the same kernels, summed in
// the same order.
class LayerwiseCalibration {
 public:
  // Tokenizes and embeds (the refusals of collect_calibration, before any layer runs).
  LayerwiseCalibration(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                       const CalibrationOptions& o, Backend& backend, CalibrationNeeds needs);
  ~LayerwiseCalibration();

  // Runs layer next_layer() over every window and returns its index; its statistics are then
  // in pair_norms() and second_moment().
  int64_t run_next_layer();
  int64_t next_layer() const { return next_; }
  // Means over the layers run so far (the other layers' entries are zero); needs.pair_norms.
  PairNorms pair_norms() const;
  // E[u^T u] of the attention input of the last layer run; needs.input_moments.
  MatrixD second_moment() const;
  int64_t text_tokens() const { return text_tokens_; }
  int64_t positions() const { return positions_; }

 private:
  struct State;
  std::unique_ptr<State> s_;
  CalibrationNeeds needs_;
  int64_t next_ = 0, text_tokens_ = 0, positions_ = 0;
};

// collect_calibration for the pair norms alone.
PairNorms collect_pair_norms(const ModelConfig& c, const TensorStore& weights, const Tokenizer& tokenizer,
                             const CalibrationOptions& o, Backend& backend);

}  // namespace latte
