// The whole Llama model: gradients against finite differences, and the KV-cache path against the
// full-sequence path. Oracle for gradients: central differences of forward_train's loss along a
// random direction per weight tensor (a directional derivative), in f32 with eps 1e-3; f32 loss
// rounding (~1e-7 relative) over 2*eps bounds the difference error near 1e-4, so 2e-2 relative
// tolerance leaves room while a wrong term (a missing residual, a sign) is far outside it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/backend/registry.h"
#include "core/model/llama.h"

namespace latte {
namespace {

ModelConfig tiny_config(RopeLayout layout, int64_t n_kv_heads, bool tied) {
  ModelConfig c;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = 4;
  c.vocab_size = 29;
  c.max_seq_len = 16;
  c.rope_layout = layout;
  c.tied_embeddings = tied;
  return c;
}

LlamaWeights random_weights(const ModelConfig& c, uint32_t seed) {
  LlamaWeights w = llama_weights_zeros_like(c);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  w.for_each(c.tied_embeddings, [&](const std::string& name, Tensor& t) {
    float* p = t.f32();
    bool is_norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f + 0.2f * normal(rng) : normal(rng);
  });
  return w;
}

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

class LlamaGradTest : public ::testing::TestWithParam<std::tuple<RopeLayout, int64_t, bool>> {};

TEST_P(LlamaGradTest, DirectionalDerivativesMatchFiniteDifferences) {
  auto [layout, n_kv, tied] = GetParam();
  ModelConfig c = tiny_config(layout, n_kv, tied);
  LlamaModel model(c, random_weights(c, 7), cpu_backend());
  Batch b = random_batch(c, 2, 6, 11);
  LlamaActivations acts;
  model.forward_train(b.tokens, b.targets, b.batch, acts);
  LlamaWeights grads = llama_weights_zeros_like(c);
  model.backward(acts, grads);

  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, Tensor*> grad_of;
  grads.for_each(c.tied_embeddings, [&](const std::string& name, Tensor& t) { grad_of[name] = &t; });
  int checked = 0;
  model.weights().for_each(c.tied_embeddings, [&](const std::string& name, Tensor& w) {
    const int64_t n = w.numel();
    std::vector<float> dir(static_cast<size_t>(n));
    for (float& d : dir) d = normal(rng);
    double analytic = 0;
    const float* g = grad_of.at(name)->f32();
    for (int64_t i = 0; i < n; ++i) analytic += double(g[i]) * dir[size_t(i)];
    const float eps = 1e-3f;
    std::vector<float> saved = w.to_vector();
    float* p = w.f32();
    LlamaActivations scratch;
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)] + eps * dir[size_t(i)];
    double plus = model.forward_train(b.tokens, b.targets, b.batch, scratch);
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)] - eps * dir[size_t(i)];
    double minus = model.forward_train(b.tokens, b.targets, b.batch, scratch);
    for (int64_t i = 0; i < n; ++i) p[i] = saved[size_t(i)];
    double numeric = (plus - minus) / (2.0 * eps);
    double tol = 2e-2 * std::max(1.0, std::abs(numeric)) ;
    EXPECT_NEAR(analytic, numeric, tol) << name;
    ++checked;
  });
  EXPECT_EQ(checked, 2 + 9 * c.n_layers + (c.tied_embeddings ? 0 : 1));
}

INSTANTIATE_TEST_SUITE_P(Layouts, LlamaGradTest,
                         ::testing::Values(std::make_tuple(RopeLayout::interleaved, int64_t(2), true),
                                           std::make_tuple(RopeLayout::rotate_half, int64_t(4), false),
                                           std::make_tuple(RopeLayout::rotate_half, int64_t(1), true)));

TEST(LlamaModelTest, CachedDecodeMatchesFullSequence) {
  ModelConfig c = tiny_config(RopeLayout::interleaved, 2, true);
  LlamaModel model(c, random_weights(c, 5), cpu_backend());
  Batch b = random_batch(c, 1, 9, 2);
  KvCache full_cache = KvCache::create(c, 1, 16);
  Tensor full = model.forward(b.tokens, 1, full_cache, LogitsFor::all_positions);
  // Prefill 4 tokens, then decode the rest one at a time.
  KvCache cache = KvCache::create(c, 1, 16);
  model.forward(std::span<const int32_t>(b.tokens.data(), 4), 1, cache, LogitsFor::last_position);
  for (size_t t = 4; t < b.tokens.size(); ++t) {
    Tensor step = model.forward(std::span<const int32_t>(&b.tokens[t], 1), 1, cache, LogitsFor::last_position);
    for (int64_t v = 0; v < c.vocab_size; ++v)
      EXPECT_NEAR(step.f32()[v], full.f32()[int64_t(t) * c.vocab_size + v], 1e-5f) << "position " << t;
  }
  EXPECT_EQ(cache.length, 9);
}

TEST(LlamaModelTest, TrainingForwardLossMatchesInferenceLogits) {
  ModelConfig c = tiny_config(RopeLayout::rotate_half, 4, false);
  LlamaModel model(c, random_weights(c, 9), cpu_backend());
  Batch b = random_batch(c, 2, 7, 4);
  LlamaActivations acts;
  model.forward_train(b.tokens, b.targets, 2, acts);
  KvCache cache = KvCache::create(c, 2, 7);
  Tensor logits = model.forward(b.tokens, 2, cache, LogitsFor::all_positions);
  std::vector<float> a = acts.logits.to_vector(), l = logits.to_vector();
  ASSERT_EQ(a.size(), l.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], l[i], 1e-5f);
}

TEST(LlamaModelTest, RejectsContextOverflowAndBadTokens) {
  ModelConfig c = tiny_config(RopeLayout::interleaved, 2, true);
  LlamaModel model(c, random_weights(c, 5), cpu_backend());
  KvCache cache = KvCache::create(c, 1, 4);
  std::vector<int32_t> five(5, 1);
  EXPECT_THROW(model.forward(five, 1, cache, LogitsFor::last_position), Error);
  std::vector<int32_t> bad{1, int32_t(c.vocab_size)};
  KvCache cache2 = KvCache::create(c, 1, 4);
  EXPECT_THROW(model.forward(bad, 1, cache2, LogitsFor::last_position), Error);
}

}  // namespace
}  // namespace latte
