// Transformer::forward_paged, the serving engine's forward, against Transformer::forward on a
// contiguous KV cache: several sequences of different lengths in one ragged step, their blocks
// scattered through the pool, prefill in chunks, then a decode step. With an f32 cache the paged
// path is the same computation in another memory layout (MLA: the absorbed form, whose reordering
// of sums against the expanded reference stays within 1e-5 relative); bf16 and i8 caches are
// lossy and held to the bounds their rounding allows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "tests/unit/model/tiny_models.h"

namespace latte {
namespace {

using test::Case;
using test::kCases;

constexpr int64_t kBlock = 4, kBlocks = 40;

struct Sequence {
  std::vector<int32_t> tokens;      // everything it will have run
  std::vector<int32_t> blocks;      // its block table
  int64_t done = 0;                 // tokens already in the cache
};

// One ragged step: sequence s runs chunk[s] more tokens (0: not in this step).
struct StepResult {
  std::vector<std::vector<float>> last_logits;  // per scheduled sequence, the last row's logits
  std::vector<size_t> which;                    // the sequence index of each
};

StepResult run_step(Transformer& model, PagedKvCache& cache, std::vector<Sequence>& seqs,
                    const std::vector<int64_t>& chunk) {
  std::vector<int32_t> tokens, positions, slots, query_start{0}, context_len, table, logit_rows;
  int64_t max_blocks = 0;
  for (const Sequence& s : seqs) max_blocks = std::max<int64_t>(max_blocks, int64_t(s.blocks.size()));
  StepResult r;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (chunk[i] == 0) continue;
    Sequence& s = seqs[i];
    for (int64_t p = s.done; p < s.done + chunk[i]; ++p) {
      tokens.push_back(s.tokens[size_t(p)]);
      positions.push_back(int32_t(p));
      slots.push_back(s.blocks[size_t(p / kBlock)] * int32_t(kBlock) + int32_t(p % kBlock));
    }
    s.done += chunk[i];
    query_start.push_back(int32_t(tokens.size()));
    context_len.push_back(int32_t(s.done));
    for (int64_t j = 0; j < max_blocks; ++j) table.push_back(j < int64_t(s.blocks.size()) ? s.blocks[size_t(j)] : -1);
    logit_rows.push_back(int32_t(tokens.size()) - 1);
    r.which.push_back(i);
  }
  PagedStep step{tokens, positions, slots, PagedBatch{query_start, context_len, table, max_blocks, kBlock},
                 logit_rows};
  Tensor logits = model.backend().to_host(model.forward_paged(step, cache));
  const int64_t V = model.config().vocab_size;
  for (size_t k = 0; k < logit_rows.size(); ++k)
    r.last_logits.emplace_back(logits.f32() + int64_t(k) * V, logits.f32() + int64_t(k + 1) * V);
  return r;
}

// Logits at every position of `tokens` run alone on a contiguous cache.
std::vector<float> reference_logits(Transformer& model, const std::vector<int32_t>& tokens) {
  KvCache cache = model.make_cache(1, int64_t(tokens.size()));
  Tensor logits = model.forward(tokens, 1, cache, LogitsFor::all_positions, MlaForm::expanded);
  return model.backend().to_host(logits).to_vector();
}

double relative_error(const std::vector<float>& got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(got[size_t(i)]) - want[i]) * (double(got[size_t(i)]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Three sequences (prompts of 13, 5 and 22 tokens) prefilled over two ragged steps in chunks,
// then two decode steps; every sampled row is compared with the contiguous reference. Returns the
// worst relative error.
double worst_error(const ModelConfig& c, Transformer& model, DType dtype) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
  std::vector<int32_t> free_blocks(kBlocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);  // scattered, non-contiguous tables
  std::vector<Sequence> seqs(3);
  const int64_t lengths[] = {13 + 2, 5 + 2, 22 + 2};
  size_t next_block = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int64_t p = 0; p < lengths[i]; ++p) seqs[i].tokens.push_back(tok(rng));
    for (int64_t b = 0; b < (lengths[i] + kBlock - 1) / kBlock; ++b) seqs[i].blocks.push_back(free_blocks[next_block++]);
  }
  PagedKvCache cache = PagedKvCache::create(c, kBlocks, kBlock, dtype, model.backend());
  double worst = 0;
  auto check = [&](const StepResult& r) {
    for (size_t k = 0; k < r.which.size(); ++k) {
      const Sequence& s = seqs[r.which[k]];
      const std::vector<float> ref = reference_logits(model, s.tokens);
      const float* want = ref.data() + (s.done - 1) * c.vocab_size;
      worst = std::max(worst, relative_error(r.last_logits[k], want, c.vocab_size));
    }
  };
  check(run_step(model, cache, seqs, {7, 5, 10}));  // mixed chunk sizes
  check(run_step(model, cache, seqs, {6, 0, 12}));  // the rest of two prompts; one sequence idle
  check(run_step(model, cache, seqs, {1, 1, 1}));   // decode
  check(run_step(model, cache, seqs, {1, 1, 1}));
  return worst;
}

class PagedForwardTest : public ::testing::TestWithParam<Case> {};

TEST_P(PagedForwardTest, F32CacheMatchesContiguousForward) {
  const ModelConfig c = test::tiny_config(GetParam());
  Transformer model(c, test::random_weights(c, 7), cpu_backend());
  EXPECT_LT(worst_error(c, model, DType::f32), 1e-5);
}

TEST_P(PagedForwardTest, Bf16CacheStaysWithinItsRounding) {
  const ModelConfig c = test::tiny_config(GetParam());
  Transformer model(c, test::random_weights(c, 7), cpu_backend());
  const double err = worst_error(c, model, DType::bf16);
  EXPECT_LT(err, 2e-2);  // 8-bit mantissa on K/V (or latent): ~4e-3 per element
  EXPECT_GT(err, 0.0) << "a bf16 cache that changes nothing was not used";
}

INSTANTIATE_TEST_SUITE_P(Cases, PagedForwardTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PagedForwardTest, I8CacheIsCloseAndOnlyForMla) {
  for (const Case& k : kCases) {
    const ModelConfig c = test::tiny_config(k);
    Transformer model(c, test::random_weights(c, 7), cpu_backend());
    if (!c.is_mla()) {
      EXPECT_THROW(PagedKvCache::create(c, 4, kBlock, DType::i8, model.backend()), Error) << k.name;
      continue;
    }
    const double err = worst_error(c, model, DType::i8);
    EXPECT_LT(err, 5e-2) << k.name;  // 1/254 of each latent and RoPE-key row's largest element
    EXPECT_GT(err, 0.0) << k.name;
  }
}

TEST(PagedForwardTest, BadStepsAreRefusedNamingTheProblem) {
  const ModelConfig c = test::tiny_config(kCases[0]);
  Transformer model(c, test::random_weights(c, 7), cpu_backend());
  PagedKvCache cache = PagedKvCache::create(c, 4, kBlock, DType::f32, model.backend());
  const std::vector<int32_t> tokens{1, 2}, positions{0, 1}, slots{0, 1}, qs{0, 2}, ctx{2}, table{0};
  const std::vector<int32_t> rows{1};
  auto step = [&](std::span<const int32_t> pos, std::span<const int32_t> sl, std::span<const int32_t> lr) {
    return PagedStep{tokens, pos, sl, PagedBatch{qs, ctx, table, 1, kBlock}, lr};
  };
  EXPECT_NO_THROW(model.forward_paged(step(positions, slots, rows), cache));
  const std::vector<int32_t> far{0, int32_t(c.max_seq_len)}, bad_row{2}, one_slot{0};
  auto message = [&](const PagedStep& s) {
    try {
      model.forward_paged(s, cache);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(step(far, slots, rows)).find("outside the context"), std::string::npos);
  EXPECT_NE(message(step(positions, slots, bad_row)).find("logit row 2"), std::string::npos);
  EXPECT_NE(message(step(positions, one_slot, rows)).find("slots"), std::string::npos);
  PagedKvCache other = PagedKvCache::create(c, 4, 8, DType::f32, model.backend());
  try {
    model.forward_paged(step(positions, slots, rows), other);
    ADD_FAILURE() << "a cache of another block size was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace latte
