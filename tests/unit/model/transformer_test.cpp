// The whole decoder, Llama (MHA/GQA) and MLA: gradients against finite differences, the KV-cache
// path against the full-sequence path, and MLA's absorbed form against its expanded form.
//
// Gradient oracle: central differences of forward_train's loss along a random direction per
// weight tensor (a directional derivative), in f32 with eps 1e-3; f32 loss rounding (~1e-7
// relative) over 2*eps bounds the difference error near 1e-4, so 2e-2 relative tolerance leaves
// room while a wrong term (a missing residual, a sign, a dropped path) is far outside it (checked
// by removing a RoPE backward: every affected tensor fails).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "tests/unit/model/tiny_models.h"

namespace latte {
namespace {

using test::Case;
using test::kCases;
using test::random_weights;
using test::tiny_config;

struct Batch {
  std::vector<int32_t> tokens, targets;
  int64_t batch;
};

Batch random_batch(const ModelConfig& c, int64_t batch, int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
  Batch b{{}, {}, batch};
  for (int64_t i = 0; i < batch * T; ++i) {
    b.tokens.push_back(tok(rng));
    b.targets.push_back(i % 5 == 3 ? -1 : tok(rng));  // some ignored targets
  }
  return b;
}

class TransformerGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(TransformerGradTest, DirectionalDerivativesMatchFiniteDifferences) {
  ModelConfig c = tiny_config(GetParam());
  Transformer model(c, random_weights(c, 7), cpu_backend());
  Batch b = random_batch(c, 2, 6, 11);
  Activations acts;
  model.forward_train(b.tokens, b.targets, b.batch, acts);
  ModelWeights grads = weights_zeros_like(c);
  model.backward(acts, grads);

  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, Tensor*> grad_of;
  for_each_weight(c, grads, [&](const std::string& name, const Shape&, Tensor& t) { grad_of[name] = &t; });
  int checked = 0;
  for_each_weight(c, model.weights(), [&](const std::string& name, const Shape&, Tensor& w) {
    const int64_t n = w.numel();
    if (n == 0) return;
    std::vector<float> dir(static_cast<size_t>(n));
    for (float& d : dir) d = normal(rng);
    double analytic = 0;
    const float* g = grad_of.at(name)->f32();
    for (int64_t i = 0; i < n; ++i) analytic += double(g[i]) * dir[size_t(i)];
    const float eps = 1e-3f;
    std::vector<float> saved = w.to_vector();
    float* p = w.f32();
    Activations scratch;
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)] + eps * dir[size_t(i)];
    double plus = model.forward_train(b.tokens, b.targets, b.batch, scratch);
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)] - eps * dir[size_t(i)];
    double minus = model.forward_train(b.tokens, b.targets, b.batch, scratch);
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)];
    double numeric = (plus - minus) / (2.0 * eps);
    EXPECT_NEAR(analytic, numeric, 2e-2 * std::max(1.0, std::abs(numeric))) << name;
    EXPECT_NE(analytic, 0.0) << name << ": a zero gradient cannot be checked";
    ++checked;
  });
  EXPECT_GE(checked, 2 + 9 * c.n_layers - (c.is_mla() && (c.rope_pairs == 0 || c.nope_dim() == 0) ? c.n_layers : 0));
}

TEST_P(TransformerGradTest, CachedDecodeMatchesFullSequence) {
  ModelConfig c = tiny_config(GetParam());
  Transformer model(c, random_weights(c, 5), cpu_backend());
  Batch b = random_batch(c, 1, 9, 2);
  KvCache full_cache = KvCache::create(c, 1, 16);
  Tensor full = model.forward(b.tokens, 1, full_cache, LogitsFor::all_positions);
  // Prefill 4 tokens, then decode the rest one at a time.
  KvCache cache = KvCache::create(c, 1, 16);
  model.forward(std::span<const int32_t>(b.tokens.data(), 4), 1, cache, LogitsFor::last_position);
  for (size_t t = 4; t < b.tokens.size(); ++t) {
    Tensor step = model.forward(std::span<const int32_t>(&b.tokens[t], 1), 1, cache, LogitsFor::last_position);
    for (int64_t v = 0; v < c.vocab_size; ++v)
      EXPECT_NEAR(step.f32()[v], full.f32()[int64_t(t) * c.vocab_size + v], 1e-4f) << "position " << t;
  }
  EXPECT_EQ(cache.length, 9);
}

TEST_P(TransformerGradTest, TrainingForwardMatchesInferenceLogits) {
  ModelConfig c = tiny_config(GetParam());
  Transformer model(c, random_weights(c, 9), cpu_backend());
  Batch b = random_batch(c, 2, 7, 4);
  Activations acts;
  model.forward_train(b.tokens, b.targets, 2, acts);
  KvCache cache = KvCache::create(c, 2, 7);
  Tensor logits = model.forward(b.tokens, 2, cache, LogitsFor::all_positions, MlaForm::expanded);
  std::vector<float> a = acts.logits.to_vector(), l = logits.to_vector();
  ASSERT_EQ(a.size(), l.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], l[i], 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(Configs, TransformerGradTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Absorbed vs expanded MLA for a prefill of 8 tokens and 64 decode steps, batch 2: the same
// weights through two orders of computation, so they agree to f32 rounding (logits O(1..10)).
TEST(MlaFormsTest, AbsorbedMatchesExpandedOverPrefillAnd64Steps) {
  for (const Case& k : kCases) {
    if (std::string(k.arch) != "mla") continue;
    SCOPED_TRACE(k.name);
    ModelConfig c = tiny_config(k);
    Transformer model(c, random_weights(c, 21), cpu_backend());
    Batch b = random_batch(c, 2, 8 + 64, 5);
    KvCache ce = KvCache::create(c, 2, 80), ca = KvCache::create(c, 2, 80);
    auto row_tokens = [&](int64_t from, int64_t count) {
      std::vector<int32_t> t;
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t i = from; i < from + count; ++i) t.push_back(b.tokens[size_t(r * 72 + i)]);
      return t;
    };
    std::vector<int32_t> prompt = row_tokens(0, 8);
    Tensor le = model.forward(prompt, 2, ce, LogitsFor::last_position, MlaForm::expanded);
    Tensor la = model.forward(prompt, 2, ca, LogitsFor::last_position, MlaForm::absorbed);
    double worst = 0;
    for (int64_t step = 0; step <= 64; ++step) {
      std::vector<float> e = le.to_vector(), a = la.to_vector();
      for (size_t i = 0; i < e.size(); ++i) worst = std::max(worst, double(std::abs(e[i] - a[i])));
      if (step == 64) break;
      std::vector<int32_t> next = row_tokens(8 + step, 1);
      le = model.forward(next, 2, ce, LogitsFor::last_position, MlaForm::expanded);
      la = model.forward(next, 2, ca, LogitsFor::last_position, MlaForm::absorbed);
    }
    EXPECT_LT(worst, 2e-4) << "max |logit difference| over 65 positions";
    // The two caches hold the same latents: bit-identical in layer 0 (same input, same kernel),
    // within rounding of the residual stream after it.
    for (int64_t l = 0; l < c.n_layers; ++l) {
      std::vector<float> x = ce.latent[size_t(l)].to_vector(), y = ca.latent[size_t(l)].to_vector();
      if (l == 0) {
        EXPECT_EQ(x, y);
      }
      for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], 1e-4) << "layer " << l;
    }
    // Per token and layer: every KV head's RoPE key (or the one shared key) and the latent.
    const int64_t rope_per_token = (c.shared_rope() ? 1 : c.n_kv_heads) * c.rope_dim();
    EXPECT_EQ(ca.bytes(), int64_t(c.n_layers * 2 * 80 * (rope_per_token + c.n_kv_heads * c.kv_rank_per_head) * 4));
  }
}

TEST(TransformerTest, RejectsContextOverflowBadTokensAndWrongCache) {
  ModelConfig c = tiny_config(kCases[0]);
  Transformer model(c, random_weights(c, 5), cpu_backend());
  KvCache cache = KvCache::create(c, 1, 4);
  std::vector<int32_t> five(5, 1);
  EXPECT_THROW(model.forward(five, 1, cache, LogitsFor::last_position), Error);
  std::vector<int32_t> bad{1, int32_t(c.vocab_size)};
  KvCache cache2 = KvCache::create(c, 1, 4);
  EXPECT_THROW(model.forward(bad, 1, cache2, LogitsFor::last_position), Error);
  KvCache mla_cache = KvCache::create(tiny_config(kCases[3]), 1, 4);
  EXPECT_THROW(model.forward(std::vector<int32_t>{1}, 1, mla_cache, LogitsFor::last_position), Error);
}

}  // namespace
}  // namespace latte

namespace latte {
namespace {

// Activation recomputation keeps only each layer's input and rebuilds the rest in backward with
// the same kernels in the same order: loss and every gradient are bit-identical.
TEST(TransformerTest, RecomputationGivesBitIdenticalGradients) {
  for (const Case& k : {kCases[0], kCases[3]}) {
    ModelConfig c = tiny_config(k);
    Transformer model(c, random_weights(c, 13), cpu_backend());
    Batch b = random_batch(c, 2, 7, 8);
    auto run = [&](bool recompute, ModelWeights& grads) {
      model.set_recompute(recompute);
      Activations acts;
      float loss = model.forward_train(b.tokens, b.targets, 2, acts);
      if (recompute) {
        EXPECT_FALSE(acts.layers[0].q.defined()) << "recomputation kept the layer's activations";
      }
      model.backward(acts, grads);
      return loss;
    };
    ModelWeights g1 = weights_zeros_like(c), g2 = weights_zeros_like(c);
    EXPECT_EQ(run(false, g1), run(true, g2)) << k.name;
    std::vector<std::vector<float>> a, bb;
    for_each_weight(c, g1, [&](const std::string&, const Shape&, Tensor& t) { a.push_back(t.to_vector()); });
    for_each_weight(c, g2, [&](const std::string&, const Shape&, Tensor& t) { bb.push_back(t.to_vector()); });
    EXPECT_EQ(a, bb) << k.name;
  }
}

}  // namespace
}  // namespace latte
