// trainer/mha2mla/partial_rope: the kept frequency pairs per strategy (spec 2.2, 2.3) and the
// row order of converted heads. Oracles: the spec's worked example and hand-computed cases.
#include <gtest/gtest.h>

#include "tests/unit/mha2mla/mha2mla_test_util.h"
#include "trainer/mha2mla/partial_rope.h"

namespace latte {
namespace {

ModelConfig shape(int64_t head_dim, int64_t n_heads = 4, int64_t n_kv_heads = 2, int64_t n_layers = 2) {
  ModelConfig c;
  c.dim = n_heads * head_dim;
  c.hidden_dim = 8;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = 8;
  c.max_seq_len = 8;
  return c;
}

using Set = std::vector<int32_t>;

Set only_set(const RopeFreqs& f) {
  // Fixed strategies: one set everywhere.
  for (const auto& layer : f)
    for (const auto& head : layer) EXPECT_EQ(head, f[0][0]);
  return f[0][0];
}

TEST(PartialRope, SpecExampleHeadDim64R4) {
  const ModelConfig c = shape(64);
  EXPECT_EQ(only_set(select_rope_freqs(RopeStrategy::high, 4, c, nullptr)), (Set{0, 1, 2, 3}));
  EXPECT_EQ(only_set(select_rope_freqs(RopeStrategy::low, 4, c, nullptr)), (Set{28, 29, 30, 31}));
  EXPECT_EQ(only_set(select_rope_freqs(RopeStrategy::uniform, 4, c, nullptr)), (Set{0, 8, 16, 24}));
  const RopeFreqs f = select_rope_freqs(RopeStrategy::high, 4, c, nullptr);
  EXPECT_EQ(f.size(), 2u);
  EXPECT_EQ(f[1].size(), 2u);
}

TEST(PartialRope, EdgesOfTheRange) {
  const ModelConfig c = shape(8);
  for (RopeStrategy s : {RopeStrategy::high, RopeStrategy::low, RopeStrategy::uniform}) {
    EXPECT_EQ(only_set(select_rope_freqs(s, 0, c, nullptr)), Set{}) << rope_strategy_name(s);
    EXPECT_EQ(only_set(select_rope_freqs(s, 4, c, nullptr)), (Set{0, 1, 2, 3})) << rope_strategy_name(s);
  }
  EXPECT_EQ(only_set(select_rope_freqs(RopeStrategy::uniform, 2, c, nullptr)), (Set{0, 2}));
  EXPECT_EQ(only_set(select_rope_freqs(RopeStrategy::uniform, 1, c, nullptr)), (Set{0}));
}

TEST(PartialRope, RefusesROutOfRangeAndUniformThatDoesNotDivide) {
  const ModelConfig c = shape(64);
  expect_error([&] { select_rope_freqs(RopeStrategy::high, 33, c, nullptr); }, ErrorCode::invalid_argument,
               {"r = 33", "[0, head_dim/2 = 32]"});
  expect_error([&] { select_rope_freqs(RopeStrategy::low, -1, c, nullptr); }, ErrorCode::invalid_argument,
               {"r = -1", "[0, head_dim/2 = 32]"});
  expect_error([&] { select_rope_freqs(RopeStrategy::uniform, 3, c, nullptr); }, ErrorCode::invalid_argument,
               {"uniform", "r = 3", "32"});
  expect_error([&] { select_rope_freqs(RopeStrategy::two_norm, 4, c, nullptr); }, ErrorCode::invalid_argument,
               {"2norm", "calibration"});
}

TEST(PartialRope, StrategyNames) {
  for (RopeStrategy s : {RopeStrategy::high, RopeStrategy::low, RopeStrategy::uniform, RopeStrategy::two_norm})
    EXPECT_EQ(rope_strategy_from_name(rope_strategy_name(s)), s);
  EXPECT_STREQ(rope_strategy_name(RopeStrategy::two_norm), "2norm");
  expect_error([] { rope_strategy_from_name("middle"); }, ErrorCode::invalid_argument,
               {"middle", "high, low, uniform or 2norm"});
}

TEST(PartialRope, PairDimsPerLayout) {
  EXPECT_EQ(pair_dims(0, RopeLayout::interleaved, 8).first, 0);
  EXPECT_EQ(pair_dims(0, RopeLayout::interleaved, 8).second, 1);
  EXPECT_EQ(pair_dims(3, RopeLayout::interleaved, 8).first, 6);
  EXPECT_EQ(pair_dims(3, RopeLayout::interleaved, 8).second, 7);
  EXPECT_EQ(pair_dims(0, RopeLayout::rotate_half, 8).first, 0);
  EXPECT_EQ(pair_dims(0, RopeLayout::rotate_half, 8).second, 4);
  EXPECT_EQ(pair_dims(3, RopeLayout::rotate_half, 8).first, 3);
  EXPECT_EQ(pair_dims(3, RopeLayout::rotate_half, 8).second, 7);
}

TEST(PartialRope, HeadRowsAreRopePairsThenTheRestInOrder) {
  using Rows = std::vector<int64_t>;
  HeadRows a = head_rows({1, 3}, RopeLayout::interleaved, 8);
  EXPECT_EQ(a.rope, (Rows{2, 3, 6, 7}));
  EXPECT_EQ(a.nope, (Rows{0, 1, 4, 5}));
  HeadRows b = head_rows({1, 3}, RopeLayout::rotate_half, 8);
  EXPECT_EQ(b.rope, (Rows{1, 5, 3, 7}));
  EXPECT_EQ(b.nope, (Rows{0, 2, 4, 6}));
  HeadRows none = head_rows({}, RopeLayout::rotate_half, 4);
  EXPECT_TRUE(none.rope.empty());
  EXPECT_EQ(none.nope, (Rows{0, 1, 2, 3}));
}

// One layer, 4 query heads in 2 groups, 2 KV heads, head_dim 8 (4 pairs).
PairNorms tiny_norms() {
  PairNorms n;
  n.n_layers = 1, n.n_heads = 4, n.n_kv_heads = 2, n.n_pairs = 4, n.positions = 1;
  // q[h][i]
  n.q = {1, 2, 3, 4,    // head 0 (group 0)
         1, 2, 3, 4,    // head 1 (group 0)
         10, 1, 1, 1,   // head 2 (group 1)
         0, 1, 1, 1};   // head 3 (group 1)
  // k[j][i]
  n.k = {4, 3, 2, 1,    // kv head 0
         1, 9, 1, 1};   // kv head 1
  return n;
}

TEST(PartialRope, TwoNormScoreIsSumOfQueryNormTimesKeyNorm) {
  const PairNorms n = tiny_norms();
  // group 0: (1+1)*4, (2+2)*3, (3+3)*2, (4+4)*1 = 8, 12, 12, 8
  EXPECT_EQ(two_norm_scores(n, 0, 0), (std::vector<double>{8, 12, 12, 8}));
  // group 1: (10+0)*1, (1+1)*9, 2*1, 2*1 = 10, 18, 2, 2
  EXPECT_EQ(two_norm_scores(n, 0, 1), (std::vector<double>{10, 18, 2, 2}));
  ModelConfig c = shape(8, 4, 2, 1);
  // r = 1: the single best pair. r = 2 / 3 in group 0 hit ties, which go to the lower index.
  EXPECT_EQ(select_rope_freqs(RopeStrategy::two_norm, 1, c, &n)[0], (std::vector<Set>{{1}, {1}}));
  EXPECT_EQ(select_rope_freqs(RopeStrategy::two_norm, 2, c, &n)[0], (std::vector<Set>{{1, 2}, {0, 1}}));
  EXPECT_EQ(select_rope_freqs(RopeStrategy::two_norm, 3, c, &n)[0], (std::vector<Set>{{0, 1, 2}, {0, 1, 2}}));
  // The paper-era sum form, sum_h q + g*k, would rank group 1 as 10+2=12, 2+18=20, 2+2=4, 4: same
  // top 2 here, but group 0 as 10, 10, 10, 10; the product form above is what the paper states.
}

TEST(PartialRope, TwoNormRefusesStatisticsOfAnotherShape) {
  const PairNorms n = tiny_norms();
  expect_error([&] { select_rope_freqs(RopeStrategy::two_norm, 1, shape(8, 4, 2, 2), &n); },
               ErrorCode::shape_mismatch, {"2norm statistics"});
}

}  // namespace
}  // namespace latte
