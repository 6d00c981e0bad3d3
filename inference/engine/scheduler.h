// Iteration-level continuous batching over a paged KV cache (vLLM's scheduler, as bookkeeping
// only: no model, no tensors). Each schedule() call plans one forward step under a token budget:
//   1. decodes: every running sequence whose prompt is fully computed gets its 1 pending token;
//   2. the next prefill chunk of each running sequence that is still part-way through its prompt;
//   3. waiting sequences, strictly FIFO, admitted with a (possibly partial) first prefill chunk.
// The scheduler owns the block pool and the block tables; the engine runs the plan, samples a
// token for every chunk with `sample` set and reports it with append_token() (or ends the
// sequence with finish()/cancel()) before the next schedule().
//
// Prefix caching: a full block is published under the chain hash of all tokens up to its end
// once the step that wrote it has run (at the next schedule(), append_token() or finish()), never
// when it is merely planned, so a cache hit never reads K/V that is not written yet. Admission
// reuses the longest run of published blocks of the sequence's tokens, but never the block holding
// its last token: at least one token must run so there are logits to sample from.
//
// Memory pressure: when a running sequence needs a block and none is free, the newest running
// sequence (latest add()) is preempted in recompute mode: its blocks are released (its published
// blocks stay findable, so the recompute often hits its own prefix) and it goes back to the front
// of the waiting queue with prompt + generated tokens to recompute. No sequence is admitted in a
// step that preempted. A sequence that cannot fit even alone fails with an error, never a hang.
//
// Deterministic: a plan depends only on the sequence of calls (deadlines compare against the
// `now` passed in; the scheduler reads no clock).
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "inference/engine/block_pool.h"

namespace latte {

using SchedulerClock = std::chrono::steady_clock;

struct SequenceRequest {
  uint64_t id = 0;              // unique among sequences the scheduler still holds
  std::vector<int32_t> prompt;  // token ids, BOS included if the model wants one
  int64_t max_new_tokens = 0;   // >= 1; reaching it finishes the sequence (FinishReason::length)
  std::optional<SchedulerClock::time_point> deadline;  // none: no deadline
};

struct SchedulerConfig {
  int32_t block_size = 16;             // tokens per KV-cache block
  int32_t num_blocks = 0;              // blocks in the pool
  int64_t max_tokens_per_step = 2048;  // token budget of one forward step
  int32_t max_running_sequences = 256;
  int64_t max_context = 0;             // the model's context length
  bool enable_prefix_caching = true;
  uint64_t prefix_cache_salt = 0;      // e.g. a model id: different salts never share blocks
};

struct AddResult {
  std::string error;  // empty: accepted
  bool ok() const { return error.empty(); }
};

// One sequence's work in a step. Positions are start_position .. start_position + tokens.size()-1;
// start_position is also how many of its tokens already have K/V in the cache, so attention runs
// over context_len() keys.
struct ScheduledChunk {
  uint64_t id = 0;
  std::vector<int32_t> tokens;
  int64_t start_position = 0;
  bool prefill = false;  // false: a single decode token
  // The chunk ends at the sequence's last known token: sample the next one from its last row.
  bool sample = false;
  std::vector<int32_t> block_table;  // physical block of logical block i; covers context_len()
  std::vector<int64_t> slots;        // cache slot of each token: block * block_size + offset
  int64_t context_len() const { return start_position + int64_t(tokens.size()); }
};

enum class FinishReason {
  stopped,    // finish(): the engine saw EOS or a stop string
  length,     // max_new_tokens generated
  cancelled,  // cancel()
  deadline,   // the deadline passed before it finished
  failed,     // the scheduler could not serve it (message says why)
};
const char* finish_reason_name(FinishReason r);

struct FinishedSequence {
  uint64_t id = 0;
  FinishReason reason = FinishReason::stopped;
  std::string message;
  std::vector<int32_t> generated;  // tokens appended with append_token()
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;      // decodes first, then prefill chunks
  std::vector<FinishedSequence> finished;  // ended since the previous schedule(), in order
  std::vector<uint64_t> preempted;         // sent back to the waiting queue by this step
  int64_t num_tokens = 0;                  // sum of chunk sizes, <= max_tokens_per_step
};

struct SchedulerStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t preemptions = 0;  // total since construction
  int64_t blocks_used = 0;
  int64_t blocks_free = 0;
  int64_t blocks_cached = 0;
  int64_t prefix_queries = 0;  // blocks looked up at admission
  int64_t prefix_hits = 0;     // blocks reused from the cache
  int64_t tokens_scheduled = 0;
  int64_t steps = 0;
};

enum class AppendOutcome {
  accepted,     // the sequence continues
  finished,     // this token was the last one (max_new_tokens); reported in the next plan
  not_running,  // the sequence already ended (e.g. cancelled while the step ran): token dropped
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);  // throws invalid_argument on a bad config

  // Refuses (without throwing, nothing else affected) an empty prompt, a duplicate id,
  // max_new_tokens < 1, prompt + max_new_tokens beyond max_context, or a sequence that could not
  // fit in the whole cache even alone.
  AddResult add(SequenceRequest request);

  // Plans the next step. Assumes the previous plan has run: every chunk with `sample` set must
  // have had append_token(), finish() or cancel() (else a Latte bug: throws internal).
  StepPlan schedule(SchedulerClock::time_point now);

  AppendOutcome append_token(uint64_t id, int32_t token);
  // Both free the sequence's blocks now and report it in the next plan; false if not held.
  // finish() (EOS, stop string) publishes the blocks of a chunk it sampled from first; cancel()
  // publishes nothing more, as it may come before the step in flight has run.
  bool finish(uint64_t id, std::string message = {});
  bool cancel(uint64_t id, std::string message = "cancelled");

  bool has_work() const;  // running or waiting sequences, or finished ones not yet reported
  SchedulerStats stats() const;
  const BlockPool& pool() const { return pool_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  struct Sequence {
    uint64_t id = 0;
    uint64_t arrival = 0;  // add() order: preemption picks the largest
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t prompt_len = 0;
    int64_t max_new_tokens = 0;
    std::optional<SchedulerClock::time_point> deadline;
    std::vector<int32_t> blocks;
    std::vector<uint64_t> block_hashes;  // chain hashes of the leading full, computed blocks
    int64_t num_computed = 0;  // tokens planned into the cache, including the step in flight
    int64_t num_executed = 0;  // tokens whose K/V is known to be written
    bool running = false;
    bool prefilling = true;       // since (re)admission, until a chunk reaches its last token
    bool awaiting_token = false;  // its last chunk samples; append_token() has not come yet
  };
  struct Planned {
    Sequence* seq;
    int64_t n;
  };

  Sequence* find(uint64_t id) const;
  int64_t blocks_for(int64_t tokens) const;
  void mark_executed(Sequence& s);
  void release_blocks(Sequence& s);
  void end(Sequence& s, FinishReason reason, std::string message);
  void preempt(Sequence& s, StepPlan& plan);
  bool reserve(Sequence& s, int64_t n, StepPlan& plan);
  std::optional<int64_t> admit(Sequence& s, int64_t budget);
  ScheduledChunk emit(Sequence& s, int64_t n, bool prefill);

  SchedulerConfig config_;
  BlockPool pool_;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;  // sorted by arrival
  std::deque<Sequence*> waiting_;
  std::vector<FinishedSequence> finished_;
  uint64_t next_arrival_ = 0;
  int64_t preemptions_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
  int64_t tokens_scheduled_ = 0;
  int64_t steps_ = 0;
};

}  // namespace latte
