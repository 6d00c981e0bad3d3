// score_continuations against two oracles:
//  1. a "bigram" decoder (every attention and MLP output projection zero, so the residual stream
//     at a position is its token's embedding): log p(next | token) is computed here in double from
//     the embedding, final norm and LM head, with no Transformer code involved;
//  2. for every tiny model variant (Llama MHA/GQA/MQA, MLA with partial, full and no RoPE), one
//     plain forward of each whole sequence context + choice in a fresh cache, log-softmax in double:
//     the shared-context cache copy and the padded batch must not change a single score.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend/registry.h"
#include "inference/eval/choice_scoring.h"
#include "../model/tiny_models.h"

namespace latte {
namespace {

// log p(target | logits row) in double.
double log_softmax_at(const float* row, int64_t V, int32_t target) {
  double m = -1e300;
  for (int64_t v = 0; v < V; ++v) m = std::max(m, double(row[v]));
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - m);
  return double(row[target]) - m - std::log(s);
}

double whole_sequence_log_likelihood(Transformer& model, const std::vector<int32_t>& context,
                                     const std::vector<int32_t>& cont) {
  std::vector<int32_t> seq = context;
  seq.insert(seq.end(), cont.begin(), cont.end() - 1);
  KvCache cache = model.make_cache(1, int64_t(seq.size()));
  Tensor logits = model.forward(seq, 1, cache, LogitsFor::all_positions, MlaForm::expanded);
  const int64_t V = logits.dim(1);
  double sum = 0;
  for (size_t t = 0; t < cont.size(); ++t)
    sum += log_softmax_at(logits.f32() + int64_t(context.size() - 1 + t) * V, V, cont[t]);
  return sum;
}

const std::vector<int32_t> kContext = {3, 17, 4, 28, 9, 1};
const std::vector<std::vector<int32_t>> kChoices = {{5}, {11, 2, 7, 7}, {0, 28}, {13, 6, 22}};

TEST(ChoiceScoring, BigramModelMatchesHandComputedLogLikelihood) {
  const test::Case k{"bigram", "llama", RopeLayout::rotate_half, 2, false};
  ModelConfig c = test::tiny_config(k);
  ModelWeights w = test::random_weights(c, 31);
  for (LayerWeights& l : w.layers) {
    l.wo.fill(0.0f);
    l.w_down.fill(0.0f);
  }
  // Independent of the model code: h = rmsnorm(e_a) * norm, logits = lm_head h, in double.
  auto log_p = [&](int32_t a, int32_t b) {
    const int64_t D = c.dim, V = c.vocab_size;
    const float* e = w.tok_embeddings.f32() + a * D;
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += double(e[d]) * e[d];
    const double inv_rms = 1.0 / std::sqrt(ms / double(D) + double(c.norm_eps));
    std::vector<double> logits(static_cast<size_t>(V));
    double m = -1e300;
    for (int64_t v = 0; v < V; ++v) {
      double z = 0;
      for (int64_t d = 0; d < D; ++d) z += double(w.lm_head.f32()[v * D + d]) * w.norm.f32()[d] * e[d] * inv_rms;
      logits[size_t(v)] = z;
      m = std::max(m, z);
    }
    double s = 0;
    for (double z : logits) s += std::exp(z - m);
    return logits[size_t(b)] - m - std::log(s);
  };
  std::vector<double> expected;
  for (const std::vector<int32_t>& choice : kChoices) {
    double sum = 0;
    int32_t prev = kContext.back();
    for (int32_t t : choice) {
      sum += log_p(prev, t);
      prev = t;
    }
    expected.push_back(sum);
  }
  Transformer model(c, std::move(w), cpu_backend());
  ContinuationScores got = score_continuations(model, kContext, kChoices);
  ASSERT_EQ(got.log_likelihood.size(), kChoices.size());
  // f32 forward (K = 16 sums, logits of magnitude ~5) against double: 1e-4 per token is ample;
  // a wrong position or an off-by-one target is off by > 0.1.
  for (size_t i = 0; i < kChoices.size(); ++i)
    EXPECT_NEAR(got.log_likelihood[i], expected[i], 1e-4 * double(kChoices[i].size())) << "choice " << i;
  EXPECT_EQ(got.tokens, int64_t(kContext.size()) - 1 + int64_t(kChoices.size()) * 4);
}

class ChoiceScoringModels : public ::testing::TestWithParam<test::Case> {};

TEST_P(ChoiceScoringModels, SharedContextEqualsWholeSequenceForward) {
  ModelConfig c = test::tiny_config(GetParam());
  Transformer model(c, test::random_weights(c, 13), cpu_backend());
  ContinuationScores got = score_continuations(model, kContext, kChoices);
  for (size_t i = 0; i < kChoices.size(); ++i)
    EXPECT_NEAR(got.log_likelihood[i], whole_sequence_log_likelihood(model, kContext, kChoices[i]), 1e-4)
        << GetParam().name << " choice " << i;
}

TEST_P(ChoiceScoringModels, OneTokenContextHasNoSharedPrefix) {
  ModelConfig c = test::tiny_config(GetParam());
  Transformer model(c, test::random_weights(c, 17), cpu_backend());
  const std::vector<int32_t> context = {8};
  ContinuationScores got = score_continuations(model, context, kChoices);
  for (size_t i = 0; i < kChoices.size(); ++i)
    EXPECT_NEAR(got.log_likelihood[i], whole_sequence_log_likelihood(model, context, kChoices[i]), 1e-4)
        << GetParam().name << " choice " << i;
}

INSTANTIATE_TEST_SUITE_P(AllVariants, ChoiceScoringModels, ::testing::ValuesIn(test::kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ChoiceScoring, RefusesWhatCannotBeScored) {
  const test::Case k{"llama", "llama", RopeLayout::rotate_half, 2, true};
  ModelConfig c = test::tiny_config(k);
  Transformer model(c, test::random_weights(c, 3), cpu_backend());
  EXPECT_THROW(score_continuations(model, {}, kChoices), Error);
  EXPECT_THROW(score_continuations(model, kContext, {{1}, {}}), Error);
  EXPECT_THROW(score_continuations(model, kContext, {{1}, {int32_t(c.vocab_size)}}), Error);
  std::vector<int32_t> too_long(size_t(c.max_seq_len), 1);
  EXPECT_THROW(score_continuations(model, kContext, {too_long}), Error);
}

}  // namespace
}  // namespace latte
