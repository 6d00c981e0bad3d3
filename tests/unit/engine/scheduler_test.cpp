#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/base/error.h"
#include "inference/engine/scheduler.h"

namespace latte {
namespace {

using std::chrono::milliseconds;
const SchedulerClock::time_point kT0{};

SchedulerConfig config(int32_t block_size, int32_t num_blocks, int64_t budget, bool prefix = true) {
  SchedulerConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  c.max_tokens_per_step = budget;
  c.max_running_sequences = int32_t(std::min<int64_t>(budget, 8));
  c.max_context = 256;
  c.enable_prefix_caching = prefix;
  return c;
}

std::vector<int32_t> iota_tokens(int n, int32_t first) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// A fake engine over a fake cache: every slot holds the token written there, so a chunk that
// attends to a key which is missing or belongs to another sequence (a wrong shared block, a block
// reused too early) is caught. The sampled token is a function of (id, position) only.
class Driver {
 public:
  explicit Driver(Scheduler& s) : s_(s) {}

  AddResult add(uint64_t id, std::vector<int32_t> prompt, int64_t max_new,
                std::optional<SchedulerClock::time_point> deadline = std::nullopt) {
    AddResult r = s_.add({id, prompt, max_new, deadline});
    if (r.ok()) {
      truth_[id] = std::move(prompt);
      arrival_[id] = next_arrival_++;
    }
    return r;
  }

  static int32_t sampled(uint64_t id, int64_t position) { return int32_t(1000 * id + position); }

  StepPlan step(SchedulerClock::time_point now = kT0) {
    StepPlan p = s_.schedule(now);
    check(p);
    for (const FinishedSequence& f : p.finished) finished_[f.id] = f;
    for (const ScheduledChunk& c : p.chunks)
      if (c.sample) {
        const int32_t t = sampled(c.id, c.context_len());
        truth_[c.id].push_back(t);
        s_.append_token(c.id, t);
      }
    return p;
  }

  void run(int max_steps = 1000) {
    while (s_.has_work() && max_steps-- > 0) step();
    ASSERT_FALSE(s_.has_work()) << "scheduler did not drain";
  }

  const std::map<uint64_t, FinishedSequence>& finished() const { return finished_; }
  const std::vector<int32_t>& truth(uint64_t id) { return truth_[id]; }

 private:
  void check(const StepPlan& p) {
    const int64_t bs = s_.config().block_size;
    EXPECT_LE(p.num_tokens, s_.config().max_tokens_per_step);
    int64_t total = 0;
    bool seen_prefill = false;
    std::set<int64_t> written;
    std::set<uint64_t> ids;
    // The scheduler relies on this order (preemption victims never have a chunk planned): every
    // sequence in prefill is newer than every decoding one.
    int64_t newest_decode = -1;
    for (const ScheduledChunk& c : p.chunks) {
      EXPECT_TRUE(ids.insert(c.id).second) << "sequence " << c.id << " twice in one step";
      if (!c.prefill) newest_decode = std::max(newest_decode, arrival_[c.id]);
      if (c.prefill) {
        EXPECT_GT(arrival_[c.id], newest_decode) << "older sequence " << c.id << " in prefill";
      }
      if (c.prefill) seen_prefill = true;
      EXPECT_FALSE(!c.prefill && seen_prefill) << "decode after a prefill chunk";
      if (!c.prefill) {
        EXPECT_EQ(c.tokens.size(), 1u);
      }
      ASSERT_FALSE(c.tokens.empty());
      EXPECT_GE(int64_t(c.block_table.size()) * bs, c.context_len());
      const std::vector<int32_t>& truth = truth_[c.id];
      ASSERT_LE(c.context_len(), int64_t(truth.size()));
      EXPECT_EQ(c.sample, c.context_len() == int64_t(truth.size()));
      auto slot = [&](int64_t pos) {
        return int64_t(c.block_table[size_t(pos / bs)]) * bs + pos % bs;
      };
      for (int64_t pos = 0; pos < c.start_position; ++pos) {
        auto it = cache_.find(slot(pos));
        ASSERT_TRUE(it != cache_.end())
            << "sequence " << c.id << " position " << pos << " not cached";
        EXPECT_EQ(it->second, truth[size_t(pos)]) << "sequence " << c.id << " position " << pos;
      }
      ASSERT_EQ(c.slots.size(), c.tokens.size());
      for (size_t i = 0; i < c.tokens.size(); ++i) {
        const int64_t pos = c.start_position + int64_t(i);
        EXPECT_EQ(c.tokens[i], truth[size_t(pos)]);
        EXPECT_EQ(c.slots[i], slot(pos));
        EXPECT_TRUE(written.insert(c.slots[i]).second) << "slot " << c.slots[i] << " written twice";
      }
      total += int64_t(c.tokens.size());
    }
    EXPECT_EQ(total, p.num_tokens);
    for (const ScheduledChunk& c : p.chunks)
      for (size_t i = 0; i < c.tokens.size(); ++i) cache_[c.slots[i]] = c.tokens[i];
  }

  Scheduler& s_;
  std::unordered_map<uint64_t, std::vector<int32_t>> truth_;
  std::unordered_map<int64_t, int32_t> cache_;
  std::unordered_map<uint64_t, int64_t> arrival_;
  int64_t next_arrival_ = 0;
  std::map<uint64_t, FinishedSequence> finished_;
};

TEST(SchedulerTest, DecodesComeFirstAndTheTokenBudgetHolds) {
  Scheduler s(config(4, 64, 8));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(6, 1), 4).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(6, 100), 4).ok());

  StepPlan p = d.step();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].id, 1u);
  EXPECT_EQ(p.chunks[0].tokens.size(), 6u);
  EXPECT_TRUE(p.chunks[0].sample);
  EXPECT_EQ(p.chunks[1].id, 2u);
  EXPECT_EQ(p.chunks[1].tokens.size(), 2u);  // what the budget leaves
  EXPECT_FALSE(p.chunks[1].sample);
  EXPECT_EQ(p.num_tokens, 8);

  ASSERT_TRUE(d.add(3, iota_tokens(10, 200), 2).ok());
  p = d.step();
  ASSERT_EQ(p.chunks.size(), 3u);
  EXPECT_EQ(p.chunks[0].id, 1u);  // the decode goes first
  EXPECT_FALSE(p.chunks[0].prefill);
  EXPECT_EQ(p.chunks[0].start_position, 6);
  EXPECT_EQ(p.chunks[1].id, 2u);  // then the running prefill
  EXPECT_EQ(p.chunks[1].start_position, 2);
  EXPECT_EQ(p.chunks[1].tokens.size(), 4u);
  EXPECT_TRUE(p.chunks[1].sample);
  EXPECT_EQ(p.chunks[2].id, 3u);  // then admission with the rest
  EXPECT_EQ(p.chunks[2].tokens.size(), 3u);
  EXPECT_EQ(p.num_tokens, 8);

  p = d.step();
  ASSERT_EQ(p.chunks.size(), 3u);
  EXPECT_FALSE(p.chunks[0].prefill);
  EXPECT_FALSE(p.chunks[1].prefill);
  EXPECT_EQ(p.chunks[2].id, 3u);
  EXPECT_EQ(p.chunks[2].start_position, 3);
  EXPECT_EQ(p.chunks[2].tokens.size(), 6u);

  d.run();
  for (uint64_t id : {1u, 2u, 3u}) EXPECT_EQ(d.finished().at(id).reason, FinishReason::length);
  EXPECT_EQ(d.finished().at(1).generated.size(), 4u);
  EXPECT_EQ(s.pool().free_count(), 64);
}

TEST(SchedulerTest, ChunkedPrefillHasConsecutivePositionsAndSlots) {
  Scheduler s(config(4, 16, 5));
  Driver d(s);
  const std::vector<int32_t> prompt = iota_tokens(12, 50);
  ASSERT_TRUE(d.add(9, prompt, 3).ok());
  const int64_t starts[] = {0, 5, 10};
  const size_t sizes[] = {5, 5, 2};
  const size_t tables[] = {2, 3, 3};
  for (int i = 0; i < 3; ++i) {
    StepPlan p = d.step();
    ASSERT_EQ(p.chunks.size(), 1u);
    const ScheduledChunk& c = p.chunks[0];
    EXPECT_EQ(c.start_position, starts[i]);
    ASSERT_EQ(c.tokens.size(), sizes[i]);
    EXPECT_EQ(c.block_table.size(), tables[i]);
    EXPECT_EQ(c.sample, i == 2);
    EXPECT_TRUE(c.prefill);
    for (size_t j = 0; j < c.tokens.size(); ++j) {
      const int64_t pos = c.start_position + int64_t(j);
      EXPECT_EQ(c.tokens[j], prompt[size_t(pos)]);
      EXPECT_EQ(c.slots[j], int64_t(c.block_table[size_t(pos / 4)]) * 4 + pos % 4);
    }
  }
  EXPECT_EQ(s.stats().tokens_scheduled, 12);
  StepPlan p = d.step();  // first decode: position 12 opens a fourth block
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start_position, 12);
  EXPECT_EQ(p.chunks[0].block_table.size(), 4u);
  EXPECT_EQ(p.chunks[0].slots[0], int64_t(p.chunks[0].block_table[3]) * 4);
  d.run();
  EXPECT_EQ(s.pool().free_count(), 16);
}

TEST(SchedulerTest, SharedPrefixReusesThePhysicalBlocks) {
  Scheduler s(config(4, 32, 64));
  Driver d(s);
  std::vector<int32_t> a = iota_tokens(10, 1);  // two full blocks and a partial one
  std::vector<int32_t> b(a.begin(), a.begin() + 8);
  b.push_back(77);
  b.push_back(78);
  b.push_back(79);
  ASSERT_TRUE(d.add(1, a, 4).ok());
  StepPlan p1 = d.step();
  ASSERT_EQ(p1.chunks.size(), 1u);
  EXPECT_EQ(p1.chunks[0].start_position, 0);

  ASSERT_TRUE(d.add(2, b, 4).ok());
  StepPlan p2 = d.step();
  ASSERT_EQ(p2.chunks.size(), 2u);
  const ScheduledChunk& second = p2.chunks[1];
  EXPECT_EQ(second.id, 2u);
  EXPECT_EQ(second.start_position, 8);  // prefill starts after the two cached blocks
  EXPECT_EQ(second.tokens.size(), 3u);
  ASSERT_GE(second.block_table.size(), 3u);
  EXPECT_EQ(second.block_table[0], p1.chunks[0].block_table[0]);
  EXPECT_EQ(second.block_table[1], p1.chunks[0].block_table[1]);
  EXPECT_NE(second.block_table[2], p1.chunks[0].block_table[2]);
  EXPECT_EQ(s.pool().refcount(second.block_table[0]), 2);
  EXPECT_EQ(s.stats().prefix_hits, 2);
  EXPECT_EQ(s.stats().prefix_queries, 1 + 2);  // request 1 stopped at its first miss

  d.run();
  EXPECT_EQ(d.finished().at(1).reason, FinishReason::length);
  EXPECT_EQ(d.finished().at(2).reason, FinishReason::length);
  EXPECT_EQ(s.pool().free_count(), 32);
  EXPECT_EQ(s.stats().blocks_used, 0);
  EXPECT_GT(s.stats().blocks_cached, 0);  // kept, evictable, for the next request
}

TEST(SchedulerTest, TheBlockHoldingTheLastPromptTokenIsNeverReused) {
  Scheduler s(config(4, 32, 64));
  Driver d(s);
  const std::vector<int32_t> prompt = iota_tokens(8, 1);  // exactly two blocks
  ASSERT_TRUE(d.add(1, prompt, 2).ok());
  d.run();
  ASSERT_TRUE(d.add(2, prompt, 2).ok());
  StepPlan p = d.step();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start_position, 4);  // one block reused, the last token recomputed
  EXPECT_EQ(p.chunks[0].tokens.size(), 4u);
  EXPECT_TRUE(p.chunks[0].sample);
  d.run();
  EXPECT_EQ(s.pool().free_count(), 32);
}

TEST(SchedulerTest, BlocksArePublishedOnlyAfterTheirStepRan) {
  // Two identical prompts admitted in the same step: the second must not attend to blocks the
  // first is only about to write (the driver's fake cache would miss those keys).
  Scheduler s(config(4, 32, 64));
  Driver d(s);
  const std::vector<int32_t> prompt = iota_tokens(13, 1);
  ASSERT_TRUE(d.add(1, prompt, 3).ok());
  ASSERT_TRUE(d.add(2, prompt, 3).ok());
  StepPlan p = d.step();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[1].start_position, 0);
  EXPECT_EQ(s.stats().prefix_hits, 0);
  ASSERT_TRUE(d.add(3, prompt, 3).ok());  // now the blocks are written: reused
  p = d.step();
  ASSERT_EQ(p.chunks.size(), 3u);
  EXPECT_EQ(p.chunks[2].start_position, 12);
  EXPECT_EQ(s.stats().prefix_hits, 3);
  d.run();
  EXPECT_EQ(s.pool().free_count(), 32);
}

TEST(SchedulerTest, CancelledBeforeItsStepRanPublishesNothing) {
  Scheduler s(config(4, 32, 64));
  const std::vector<int32_t> prompt = iota_tokens(9, 1);
  ASSERT_TRUE(s.add({1, prompt, 3, std::nullopt}).ok());
  ASSERT_EQ(s.schedule(kT0).chunks.size(), 1u);
  EXPECT_TRUE(s.cancel(1));  // e.g. the client left before the engine ran the step
  ASSERT_TRUE(s.add({2, prompt, 3, std::nullopt}).ok());
  StepPlan p = s.schedule(kT0);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start_position, 0);  // those blocks were never written
  EXPECT_EQ(s.stats().prefix_hits, 0);
  EXPECT_EQ(s.stats().blocks_cached, 0);
}

TEST(SchedulerTest, EvictionTakesTheDeepestBlockOfAFinishedPrefixFirst) {
  Scheduler s(config(4, 5, 64, true));
  Driver d(s);
  const std::vector<int32_t> a = iota_tokens(9, 1);  // two full blocks published, one partial
  ASSERT_TRUE(d.add(1, a, 1).ok());
  d.run();
  const uint64_t first = BlockPool::chain_hash(BlockPool::root_hash(), std::span(a).first(4));
  const uint64_t second = BlockPool::chain_hash(first, std::span(a).subspan(4, 4));
  ASSERT_TRUE(s.pool().lookup(first));
  ASSERT_TRUE(s.pool().lookup(second));
  ASSERT_TRUE(d.add(2, iota_tokens(16, 500), 1).ok());  // 4 blocks: 3 plain + 1 evicted
  d.step();
  EXPECT_EQ(s.pool().stats().evictions, 1);
  EXPECT_TRUE(s.pool().lookup(first));  // the shared-most block survives
  EXPECT_FALSE(s.pool().lookup(second));
  d.run();
}

TEST(SchedulerTest, PrefixCachingOffSharesNothing) {
  Scheduler s(config(4, 32, 64, false));
  Driver d(s);
  const std::vector<int32_t> prompt = iota_tokens(12, 1);
  ASSERT_TRUE(d.add(1, prompt, 2).ok());
  d.run();
  ASSERT_TRUE(d.add(2, prompt, 2).ok());
  StepPlan p = d.step();
  EXPECT_EQ(p.chunks[0].start_position, 0);
  EXPECT_EQ(s.stats().prefix_hits, 0);
  EXPECT_EQ(s.stats().blocks_cached, 0);
  d.run();
}

TEST(SchedulerTest, OutOfBlocksPreemptsTheNewestWhichRecomputesAndCompletes) {
  // 2 tokens per block, 6 blocks. Each sequence needs 4 + 6 - 1 = 9 positions = 5 blocks at its
  // longest, so both can run together only until the cache fills.
  Scheduler s(config(2, 6, 16, false));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(4, 10), 6).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(4, 20), 6).ok());

  std::vector<uint64_t> preempted;
  bool recomputed = false;
  for (int step = 0; step < 100 && s.has_work(); ++step) {
    const size_t before = d.truth(2).size();
    StepPlan p = d.step();
    preempted.insert(preempted.end(), p.preempted.begin(), p.preempted.end());
    if (!p.preempted.empty()) {
      for (const ScheduledChunk& c : p.chunks) EXPECT_NE(c.id, 2u) << "preempted but scheduled";
    }
    for (const ScheduledChunk& c : p.chunks)
      if (c.id == 2 && !preempted.empty() && c.start_position == 0) {
        // Recompute: the prompt and every token generated before the preemption.
        EXPECT_GT(before, 4u);
        EXPECT_EQ(c.tokens.size(), before);
        recomputed = true;
      }
  }
  ASSERT_FALSE(s.has_work());
  ASSERT_FALSE(preempted.empty());
  for (uint64_t id : preempted) EXPECT_EQ(id, 2u);  // always the newest
  EXPECT_TRUE(recomputed);
  EXPECT_EQ(s.stats().preemptions, int64_t(preempted.size()));
  for (uint64_t id : {1u, 2u}) {
    EXPECT_EQ(d.finished().at(id).reason, FinishReason::length);
    ASSERT_EQ(d.finished().at(id).generated.size(), 6u);
    for (int64_t i = 0; i < 6; ++i)  // the same tokens as without preemption
      EXPECT_EQ(d.finished().at(id).generated[size_t(i)], Driver::sampled(id, 4 + i));
  }
  EXPECT_EQ(s.pool().free_count(), 6);
}

TEST(SchedulerTest, PreemptedSequenceGoesBackAheadOfNewerRequests) {
  SchedulerConfig c = config(2, 6, 16, false);
  c.max_running_sequences = 2;
  Scheduler s(c);
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(4, 10), 6).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(4, 20), 6).ok());
  ASSERT_TRUE(d.add(3, {30, 31}, 1).ok());  // small: would fit long before 2 does
  int preempted_at = -1, readmitted_at = -1, third_at = -1;
  for (int step = 0; step < 100 && s.has_work(); ++step) {
    StepPlan p = d.step();
    if (!p.preempted.empty() && preempted_at < 0) preempted_at = step * 100;
    for (size_t i = 0; i < p.chunks.size(); ++i) {  // step and place in the plan
      if (p.chunks[i].id == 2 && preempted_at >= 0 && readmitted_at < 0)
        readmitted_at = step * 100 + int(i);
      if (p.chunks[i].id == 3 && third_at < 0) third_at = step * 100 + int(i);
    }
  }
  ASSERT_GE(preempted_at, 0);
  ASSERT_GE(readmitted_at, 0);
  EXPECT_LT(readmitted_at, third_at);  // strict FIFO, the preempted sequence first
  EXPECT_EQ(s.pool().free_count(), 6);
}

TEST(SchedulerTest, PreemptedSequenceReusesItsOwnCachedBlocks) {
  Scheduler s(config(2, 6, 16, true));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(4, 10), 6).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(4, 20), 6).ok());
  d.run();
  EXPECT_GE(s.stats().preemptions, 1);
  EXPECT_GT(s.stats().prefix_hits, 0);
  EXPECT_EQ(d.finished().at(2).generated.size(), 6u);
  EXPECT_EQ(s.pool().free_count(), 6);
}

TEST(SchedulerTest, CancellationFreesBlocksAtOnce) {
  Scheduler s(config(4, 16, 64));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(9, 1), 50).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(5, 100), 50).ok());
  d.step();
  d.step();
  EXPECT_EQ(s.stats().blocks_used, 3 + 2);
  EXPECT_TRUE(s.cancel(1));
  EXPECT_FALSE(s.cancel(1));
  EXPECT_EQ(s.stats().blocks_used, 2);
  EXPECT_EQ(s.pool().free_count(), 14);
  StepPlan p = d.step();
  ASSERT_EQ(p.finished.size(), 1u);
  EXPECT_EQ(p.finished[0].id, 1u);
  EXPECT_EQ(p.finished[0].reason, FinishReason::cancelled);
  EXPECT_EQ(p.finished[0].generated.size(), 2u);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].id, 2u);
  EXPECT_EQ(s.append_token(1, 5), AppendOutcome::not_running);  // late result: dropped
  EXPECT_TRUE(s.cancel(2));
  EXPECT_EQ(s.append_token(2, 5), AppendOutcome::not_running);  // cancelled while its step ran
  EXPECT_EQ(s.pool().free_count(), 16);
}

TEST(SchedulerTest, WaitingSequenceCanBeCancelled) {
  Scheduler s(config(4, 16, 8));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(8, 1), 4).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(8, 1), 4).ok());
  EXPECT_TRUE(s.cancel(2, "client went away"));
  StepPlan p = d.step();
  ASSERT_EQ(p.finished.size(), 1u);
  EXPECT_EQ(p.finished[0].message, "client went away");
  EXPECT_EQ(s.stats().waiting, 0);
  d.run();
  EXPECT_EQ(s.pool().free_count(), 16);
}

TEST(SchedulerTest, DeadlineEndsRunningAndWaitingSequences) {
  Scheduler s(config(4, 16, 8));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(6, 1), 20, kT0 + milliseconds(10)).ok());
  ASSERT_TRUE(d.add(2, iota_tokens(6, 100), 20).ok());
  ASSERT_TRUE(d.add(3, iota_tokens(6, 200), 20, kT0 + milliseconds(10)).ok());
  StepPlan p = d.step(kT0);
  EXPECT_EQ(s.stats().waiting, 1);  // 3 is not admitted yet
  p = d.step(kT0 + milliseconds(9));
  EXPECT_TRUE(p.finished.empty());
  EXPECT_EQ(s.stats().running, 3);
  ASSERT_TRUE(d.add(4, iota_tokens(6, 300), 20, kT0 + milliseconds(5)).ok());
  p = d.step(kT0 + milliseconds(10));
  ASSERT_EQ(p.finished.size(), 3u);
  EXPECT_EQ(p.finished[0].id, 1u);
  EXPECT_EQ(p.finished[0].reason, FinishReason::deadline);
  EXPECT_NE(p.finished[0].message.find("deadline"), std::string::npos);
  EXPECT_EQ(p.finished[1].id, 3u);
  EXPECT_EQ(p.finished[1].reason, FinishReason::deadline);
  EXPECT_EQ(p.finished[2].id, 4u);  // still waiting: never admitted
  EXPECT_EQ(p.finished[2].reason, FinishReason::deadline);
  EXPECT_TRUE(p.finished[2].generated.empty());
  for (const ScheduledChunk& c : p.chunks) EXPECT_EQ(c.id, 2u);
  EXPECT_EQ(s.stats().running, 1);
  d.run();
  EXPECT_EQ(d.finished().at(2).reason, FinishReason::length);
  EXPECT_EQ(s.pool().free_count(), 16);
}

TEST(SchedulerTest, BadRequestsAreRefusedWithReasonsAndOthersContinue) {
  Scheduler s(config(4, 8, 16));  // 8 blocks of 4: 32 positions
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(5, 1), 3).ok());
  auto refusal = [&](uint64_t id, std::vector<int32_t> prompt, int64_t max_new) {
    AddResult r = s.add({id, std::move(prompt), max_new, std::nullopt});
    EXPECT_FALSE(r.ok());
    return r.error;
  };
  auto has = [](const std::string& error, const std::string& part) {
    return error.find(part) != std::string::npos;
  };
  EXPECT_PRED2(has, refusal(2, {}, 4), "request 2: empty prompt");
  EXPECT_PRED2(has, refusal(1, {1, 2}, 4), "request 1: id is already used");
  EXPECT_PRED2(has, refusal(3, {1, 2}, 0), "max_new_tokens must be at least 1, got 0");
  EXPECT_PRED2(has, refusal(4, {1, -5}, 4), "prompt token 1 is negative");
  EXPECT_PRED2(has, refusal(5, iota_tokens(200, 1), 57), "exceeds the context length 256");
  EXPECT_PRED2(has, refusal(6, {1, 2}, int64_t(1) << 62), "exceeds the context length 256");
  EXPECT_PRED2(has, refusal(7, iota_tokens(20, 1), 14),
               "needs 9 cache blocks of 4 tokens (33 positions) but the whole cache has 8");
  ASSERT_TRUE(d.add(8, iota_tokens(20, 1), 13).ok());  // 32 positions: exactly the cache
  d.run();
  EXPECT_EQ(d.finished().size(), 2u);
  EXPECT_EQ(d.finished().at(1).reason, FinishReason::length);
  EXPECT_EQ(d.finished().at(8).generated.size(), 13u);
  EXPECT_EQ(s.pool().free_count(), 8);
}

TEST(SchedulerTest, SequencesThatEachNeedTheWholeCacheTakeTurns) {
  // Admitted together (short prompts), each grows to the entire cache (3 + 14 - 1 = 16
  // positions = 4 blocks): preemption must serialise them, with no failure and no hang.
  Scheduler s(config(4, 4, 32, false));
  Driver d(s);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(d.add(id, iota_tokens(3, int32_t(id)), 14).ok());
  EXPECT_EQ(d.step().chunks.size(), 3u);
  d.run();
  for (uint64_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(d.finished().at(id).reason, FinishReason::length);
    EXPECT_EQ(d.finished().at(id).generated.size(), 14u);
  }
  EXPECT_GE(s.stats().preemptions, 2);
  EXPECT_EQ(s.pool().free_count(), 4);
}

TEST(SchedulerTest, FinishReportsStoppedAndKeepsComputedBlocksCached) {
  Scheduler s(config(4, 16, 64));
  Driver d(s);
  ASSERT_TRUE(d.add(1, iota_tokens(8, 1), 20).ok());
  StepPlan p = s.schedule(kT0);  // no driver: the engine stops at this sample (EOS)
  ASSERT_EQ(p.chunks.size(), 1u);
  ASSERT_TRUE(p.chunks[0].sample);
  EXPECT_TRUE(s.finish(1, "eos"));
  EXPECT_FALSE(s.finish(1));
  EXPECT_EQ(s.stats().blocks_cached, 2);
  EXPECT_EQ(s.pool().free_count(), 16);
  p = s.schedule(kT0);
  ASSERT_EQ(p.finished.size(), 1u);
  EXPECT_EQ(p.finished[0].reason, FinishReason::stopped);
  EXPECT_EQ(p.finished[0].message, "eos");
  EXPECT_FALSE(s.has_work());
}

TEST(SchedulerTest, MaxNewTokensFinishesWithLength) {
  Scheduler s(config(4, 16, 64));
  ASSERT_TRUE(s.add({1, {5, 6, 7}, 2, {}}).ok());
  StepPlan p = s.schedule(kT0);
  EXPECT_EQ(s.append_token(1, 40), AppendOutcome::accepted);
  p = s.schedule(kT0);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].tokens, std::vector<int32_t>{40});
  EXPECT_EQ(s.append_token(1, 41), AppendOutcome::finished);
  EXPECT_EQ(s.pool().free_count(), 16);
  p = s.schedule(kT0);
  EXPECT_TRUE(p.chunks.empty());
  ASSERT_EQ(p.finished.size(), 1u);
  EXPECT_EQ(p.finished[0].reason, FinishReason::length);
  EXPECT_EQ(p.finished[0].generated, (std::vector<int32_t>{40, 41}));
  EXPECT_STREQ(finish_reason_name(p.finished[0].reason), "length");
}

TEST(SchedulerTest, RunningSequencesAreCapped) {
  SchedulerConfig c = config(4, 64, 64);
  c.max_running_sequences = 2;
  Scheduler s(c);
  Driver d(s);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(d.add(id, {1, 2, 3}, 2).ok());
  StepPlan p = d.step();
  EXPECT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(s.stats().running, 2);
  EXPECT_EQ(s.stats().waiting, 1);
  d.run();
  EXPECT_EQ(d.finished().size(), 3u);
}

TEST(SchedulerTest, MissingAppendIsReportedNotIgnored) {
  Scheduler s(config(4, 16, 64));
  ASSERT_TRUE(s.add({1, {1, 2, 3}, 4, {}}).ok());
  s.schedule(kT0);
  EXPECT_THROW(s.schedule(kT0), Error);  // sampled, but the engine reported nothing
  EXPECT_EQ(s.append_token(1, 9), AppendOutcome::accepted);
  EXPECT_THROW(s.append_token(1, 9), Error);  // two tokens for one sample
  EXPECT_EQ(s.append_token(2, 0), AppendOutcome::not_running);  // never added, or long gone
}

TEST(SchedulerTest, BadConfigIsRefused) {
  SchedulerConfig c = config(4, 16, 64);
  c.max_running_sequences = 65;
  EXPECT_THROW(Scheduler{c}, Error);
  c = config(4, 16, 64);
  c.max_context = 0;
  EXPECT_THROW(Scheduler{c}, Error);
  c = config(0, 16, 64);
  EXPECT_THROW(Scheduler{c}, Error);
}

// Many configurations, shared prefixes, cancellations and preemption at once. The driver checks
// every plan against its fake cache; at the end every block must be back.
TEST(SchedulerTest, RandomWorkloadsKeepEveryInvariant) {
  std::mt19937 rng(12345);  // raw outputs only: the same numbers on every platform
  auto pick = [&](uint32_t n) { return int64_t(rng() % n); };
  int64_t preemptions = 0, hits = 0;
  for (int trial = 0; trial < 300; ++trial) {
    SchedulerConfig c;
    c.block_size = int32_t(1 + pick(8));
    c.max_context = 64;
    c.num_blocks = int32_t((c.max_context + c.block_size - 1) / c.block_size + pick(6));
    c.max_running_sequences = int32_t(1 + pick(6));
    c.max_tokens_per_step = c.max_running_sequences + pick(20);
    c.enable_prefix_caching = pick(4) != 0;
    Scheduler s(c);
    Driver d(s);
    const std::vector<int32_t> shared = iota_tokens(40, 7);
    std::map<uint64_t, int64_t> max_new;
    std::set<uint64_t> cancelled;
    for (uint64_t id = 1; id <= 12; ++id) {
      std::vector<int32_t> prompt(shared.begin(), shared.begin() + pick(30));
      for (int64_t extra = 1 + pick(12); extra > 0; --extra) prompt.push_back(int32_t(pick(50)));
      max_new[id] = 1 + pick(uint32_t(c.max_context - int64_t(prompt.size())));
      ASSERT_TRUE(d.add(id, prompt, max_new[id]).ok());
    }
    for (int step = 0; step < 2000 && s.has_work(); ++step) {
      StepPlan p = d.step();
      for (const ScheduledChunk& ch : p.chunks)
        for (uint64_t id : p.preempted)
          EXPECT_NE(ch.id, id) << "preempted and scheduled in one step";
      if (pick(25) == 0) {
        const uint64_t id = uint64_t(1 + pick(12));
        if (s.cancel(id)) cancelled.insert(id);
      }
    }
    ASSERT_FALSE(s.has_work()) << "trial " << trial << " did not drain";
    ASSERT_EQ(d.finished().size(), 12u);
    for (const auto& [id, f] : d.finished()) {
      if (cancelled.count(id)) {
        EXPECT_EQ(f.reason, FinishReason::cancelled);
      } else {
        EXPECT_EQ(f.reason, FinishReason::length) << f.message;
        EXPECT_EQ(int64_t(f.generated.size()), max_new[id]);
      }
    }
    EXPECT_EQ(s.pool().free_count(), c.num_blocks);
    EXPECT_EQ(s.stats().blocks_used, 0);
    preemptions += s.stats().preemptions;
    hits += s.stats().prefix_hits;
  }
  EXPECT_GT(preemptions, 0);  // the workload must reach the paths it is meant to check
  EXPECT_GT(hits, 0);
}

std::string describe(const StepPlan& p) {
  std::ostringstream o;
  for (const ScheduledChunk& c : p.chunks) {
    o << c.id << '@' << c.start_position << '+' << c.tokens.size() << (c.sample ? "s" : "") << '[';
    for (int64_t slot : c.slots) o << slot << ' ';
    o << ']';
  }
  for (uint64_t id : p.preempted) o << " p" << id;
  for (const FinishedSequence& f : p.finished) o << " f" << f.id << finish_reason_name(f.reason);
  return o.str();
}

TEST(SchedulerTest, PlansDependOnlyOnTheCalls) {
  auto trace = [] {
    Scheduler s(config(2, 10, 6));
    Driver d(s);
    std::string out;
    for (uint64_t id = 1; id <= 5; ++id) {
      EXPECT_TRUE(d.add(id * 7919, iota_tokens(int(3 + id), int32_t(id)), 5).ok());
      out += describe(d.step()) + "\n";
    }
    while (s.has_work()) out += describe(d.step()) + "\n";
    return out;
  };
  const std::string first = trace();
  EXPECT_EQ(first, trace());
  EXPECT_NE(first.find(" p"), std::string::npos)
      << "the trace should exercise preemption:\n" << first;
}

}  // namespace
}  // namespace latte
