// trainer/mha2mla/calibration: pair-norm statistics (spec 2.3). Oracles: hand-made activations,
// and pre-RoPE q/k recomputed in float64 from the layer input and weights (RoPE is a rotation of
// each pair, so post-RoPE norms must equal them).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "tests/unit/mha2mla/mha2mla_test_util.h"
#include "trainer/mha2mla/calibration.h"

namespace latte {
namespace {

TEST(Calibration, PairNormsOfHandMadeActivations) {
  // One layer, 2 query heads, 1 KV head, head_dim 4 (2 pairs), 2 positions.
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
    ModelConfig c;
    c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.head_dim = 4, c.rope_layout = layout;
    // Pair 0 of head 0 holds (3, 4) at position 0 and (0, 2) at position 1, wherever the layout puts it.
    std::vector<float> q(2 * 2 * 4, 0.0f), k(2 * 1 * 4, 0.0f);
    auto set = [&](std::vector<float>& x, int64_t heads, int64_t pos, int64_t h, int64_t pair, float a, float b) {
      const PairDims d = pair_dims(pair, layout, 4);
      x[size_t((pos * heads + h) * 4 + d.first)] = a;
      x[size_t((pos * heads + h) * 4 + d.second)] = b;
    };
    set(q, 2, 0, 0, 0, 3, 4);
    set(q, 2, 1, 0, 0, 0, 2);
    set(q, 2, 0, 1, 1, -6, 8);  // head 1, pair 1: norms 10 and 0
    set(k, 1, 0, 0, 1, 1, 0);
    set(k, 1, 1, 0, 1, 0, -3);
    PairNormAccumulator acc(c);
    acc.add(0, Tensor::from_vector(q, {1, 2, 2, 4}), Tensor::from_vector(k, {1, 2, 1, 4}));
    acc.count_positions(2);
    const PairNorms n = acc.mean();
    EXPECT_EQ(n.q, (std::vector<double>{3.5, 0, 0, 5})) << rope_layout_name(layout);
    EXPECT_EQ(n.k, (std::vector<double>{0, 2})) << rope_layout_name(layout);
  }
}

TEST(Calibration, NoPositionsIsAnError) {
  ModelConfig c;
  c.n_layers = 1, c.n_heads = 1, c.n_kv_heads = 1, c.head_dim = 2;
  PairNormAccumulator acc(c);
  expect_error([&] { acc.mean(); }, ErrorCode::invalid_argument, {"no calibration position"});
}

// Pair norms of u . W^T (pre-RoPE) over all positions of one forward pass, in float64.
std::vector<double> pre_rope_norms(const Tensor& xn, const Tensor& w, int64_t heads, int64_t hd, RopeLayout layout) {
  const std::vector<float> x = xn.to_vector(), wv = w.to_vector();
  const int64_t T = xn.dim(0), D = xn.dim(1), P = hd / 2;
  std::vector<double> sums(size_t(heads * P), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < P; ++i) {
        const PairDims d = pair_dims(i, layout, hd);
        double a = 0, b = 0;
        for (int64_t e = 0; e < D; ++e) {
          a += double(x[size_t(t * D + e)]) * wv[size_t((h * hd + d.first) * D + e)];
          b += double(x[size_t(t * D + e)]) * wv[size_t((h * hd + d.second) * D + e)];
        }
        sums[size_t(h * P + i)] += std::hypot(a, b) / double(T);
      }
  return sums;
}

TEST(Calibration, PostRopeNormsEqualPreRopeNormsInBothLayouts) {
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
    Checkpoint ck = stories(layout);
    const ModelConfig& c = ck.config;
    Transformer model(c, weights_from_store(c, ck.tensors), cpu_backend());
    std::vector<int32_t> tokens = ck.tokenizer->encode("Once upon a time there was a little dog.", true);
    std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
    targets.push_back(-1);
    Activations acts;
    model.forward_train(tokens, targets, 1, acts);
    PairNormAccumulator acc(c);
    for (int64_t l = 0; l < c.n_layers; ++l) acc.add(l, acts.layers[size_t(l)].q, acts.layers[size_t(l)].k);
    acc.count_positions(int64_t(tokens.size()));
    const PairNorms n = acc.mean();
    const int64_t P = c.head_dim / 2;
    for (int64_t l : {int64_t(0), c.n_layers - 1}) {
      const std::string p = str_cat("model.layers.", l, ".self_attn.");
      const Tensor& xn = acts.layers[size_t(l)].xn_attn;
      std::vector<double> q = pre_rope_norms(xn, ck.tensors.get(p + "q_proj.weight"), c.n_heads, c.head_dim, layout);
      std::vector<double> k = pre_rope_norms(xn, ck.tensors.get(p + "k_proj.weight"), c.n_kv_heads, c.head_dim, layout);
      // f32 activations (one rounding per q/k element, plus the rotation): 1e-5 relative.
      for (size_t i = 0; i < q.size(); ++i)
        EXPECT_NEAR(n.q[size_t(l * c.n_heads * P) + i], q[i], 1e-5 * (1 + q[i])) << "layer " << l << " q " << i;
      for (size_t i = 0; i < k.size(); ++i)
        EXPECT_NEAR(n.k[size_t(l * c.n_kv_heads * P) + i], k[i], 1e-5 * (1 + k[i])) << "layer " << l << " k " << i;
    }
  }
}

TEST(Calibration, CollectsOverWindowsWithBos) {
  Checkpoint ck = stories(RopeLayout::interleaved);
  CalibrationOptions o;
  o.text_path = calib_text_path();
  o.max_tokens = 1000;
  o.window = 300;  // 299 text tokens + BOS per window: 4 windows (299, 299, 299, 103)
  int64_t calls = 0, last = 0;
  o.progress = [&](int64_t done, int64_t total) {
    ++calls;
    last = done;
    EXPECT_EQ(total, 1000);
  };
  const PairNorms n = collect_pair_norms(ck.config, ck.tensors, *ck.tokenizer, o, cpu_backend());
  EXPECT_EQ(n.text_tokens, 1000);
  EXPECT_EQ(n.positions, 1004);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(last, 1000);
  for (double v : n.q) EXPECT_GT(v, 0.0);
  for (double v : n.k) EXPECT_GT(v, 0.0);
}

TEST(Calibration, EmptyTextIsRefused) {
  Checkpoint ck = stories(RopeLayout::interleaved);
  ScratchDir dir;
  const std::string empty = dir / "empty.txt";
  std::ofstream(empty).close();
  CalibrationOptions o;
  o.text_path = empty;
  expect_error([&] { collect_pair_norms(ck.config, ck.tensors, *ck.tokenizer, o, cpu_backend()); },
               ErrorCode::invalid_argument, {"calibration text", "empty.txt", "is empty"});
  o.text_path = dir / "missing.txt";
  expect_error([&] { collect_pair_norms(ck.config, ck.tensors, *ck.tokenizer, o, cpu_backend()); }, ErrorCode::io,
               {"missing.txt"});
}

}  // namespace
}  // namespace latte
