#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/base/error.h"
#include "inference/engine/sampler.h"

namespace latte {
namespace {

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  std::vector<float> logits{0.5f, 2.0f, -1.0f, 2.0f};
  Sampler s({0.0f, 0.9f, 0, 1});
  EXPECT_EQ(s.sample(logits), 1);
  EXPECT_EQ(argmax_lowest_id(logits), 1);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  std::vector<float> logits{0.1f, 0.3f, 3.0f, 0.2f};
  Sampler s({1.0f, 1.0f, 1, 7});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits), 2);
}

TEST(SamplerTest, TopPKeepsSmallestPrefixAboveMass) {
  // softmax of log(p): probabilities 0.5, 0.3, 0.15, 0.05. top_p 0.7 keeps {0, 1}.
  std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler s({1.0f, 0.7f, 0, 123});
  std::map<int32_t, int> seen;
  for (int i = 0; i < 2000; ++i) seen[s.sample(logits)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], seen[1]);
}

TEST(SamplerTest, FrequenciesFollowProbabilities) {
  std::vector<float> logits{std::log(0.2f), std::log(0.8f)};
  Sampler s({1.0f, 1.0f, 0, 99});
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.sample(logits) == 1;
  EXPECT_NEAR(double(ones) / n, 0.8, 0.02);
}

TEST(SamplerTest, RejectsBadParametersAndNaN) {
  EXPECT_THROW(Sampler({-1.0f, 0.9f, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 1.5f, 0, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 0.9f, -2, 0}), Error);
  Sampler s({0.0f, 0.9f, 0, 0});
  std::vector<float> nan{0.0f, std::nanf("")};
  EXPECT_THROW(s.sample(nan), Error);
}

}  // namespace
}  // namespace latte
