// The serving engine: many requests of different lengths in flight over one paged KV cache,
// iteration-level continuous batching (the Scheduler plans, the engine executes), one forward
// pass per step over every scheduled token (Transformer::forward_paged), and per-request sampling.
//
// Each request owns its Sampler (its own RNG stream), so its tokens depend on its own prompt,
// parameters and seed, never on which other requests share its steps. Its logits equal those of
// the sequence run alone on a contiguous cache to float rounding (the paged kernels sum in another
// order; tests/unit/engine measures about 2e-6 relative), so a greedy or seeded request yields
// what generate() yields for it alone unless two candidates tie to within that rounding. A request the engine cannot
// serve (bad tokens, bad sampling values, too long for the context or for the whole cache) is
// refused by submit() with a one-line message; nothing else is affected.
//
// Driving it (one thread; the engine is not thread-safe, a server serialises calls into it):
//   Engine e(model, &tok, cfg);
//   SubmitResult r = e.submit(req);          // r.error says why when refused
//   while (e.has_work()) for (EngineEvent& ev : e.step()) ...;   // tokens, text, finishes
//   e.cancel(id);                            // blocks freed now, reported by the next step()
//
// Tensor parallelism: every rank of the TP group builds its shard of the model and an Engine with
// the same config and the group's communicator. Rank 0 is the driver: it alone accepts requests,
// schedules, samples and reports events; each step it broadcasts the step's plan (a fixed-size
// header, then one array of tokens, positions, slots, query starts, context lengths, block tables
// and logit rows) and then runs the same forward_paged as every other rank (the model runs its own
// TP collectives inside). The constructor is collective too: rank 0's cache geometry (blocks,
// block size, dtype) is broadcast so that every rank's pool matches. The other ranks call follow(), which runs the broadcast plans (and
// absorbs the pings an idle driver sends with ping_followers()) until rank 0 calls stop_followers() (also done by rank 0's destructor unless an exception is in
// flight: a collective then could wait forever for ranks that are gone).
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/dtype.h"
#include "core/comm/communicator.h"
#include "core/model/paged_kv_cache.h"
#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"
#include "inference/engine/sampler.h"
#include "inference/engine/scheduler.h"

namespace latte {

using EngineClock = SchedulerClock;

struct EngineConfig {
  // Bytes of KV cache (per rank under TP), divided into blocks of block_size tokens; a budget
  // smaller than one block is a configuration error (the constructor throws).
  int64_t cache_bytes = 64ll << 20;
  int32_t block_size = 16;
  DType cache_dtype = DType::f32;  // f32, bf16, or i8 (MLA models only)
  int64_t max_tokens_per_step = 512;
  int32_t max_running = 64;        // at most max_tokens_per_step (every running sequence decodes each step)
  bool prefix_caching = true;
};

struct EngineRequest {
  // Token ids (BOS included if the model wants one). When empty, `text` is encoded with the
  // engine's tokenizer, with BOS as generate() adds it.
  std::vector<int32_t> prompt;
  std::string text;
  int64_t max_new_tokens = 128;
  SamplingParams sampling;
  // Stop at an end-of-sequence token: EOS, and BOS, which in llama2.c models starts the next
  // story (generate() stops at BOS always). The stopping token is not part of the output.
  bool stop_at_eos = true;
  // The request stops as soon as its generated text contains one of these; the text is cut just
  // before it. Text that could be the start of a stop string is held back until it is not.
  std::vector<std::string> stop_strings;
  std::optional<EngineClock::time_point> deadline;
};

struct SubmitResult {
  uint64_t id = 0;    // 0: refused
  std::string error;  // why it was refused
  bool ok() const { return error.empty(); }
};

// What happened to one request in one step: a new token (and the text it adds), and/or the end.
struct EngineEvent {
  uint64_t id = 0;
  int32_t token = -1;  // -1: no new token in this event
  // New output text: UTF-8 complete (a partial multi-byte character waits for its next byte) and
  // without anything that might still turn into a stop string. The concatenation over a request's
  // events is its whole output text.
  std::string text;
  bool finished = false;
  FinishReason reason = FinishReason::stopped;
  std::string message;  // why it finished (EOS, the stop string, the limit, the error)
  // Finish events only. The stop string that ended the request ("" when something else did), so a
  // server can tell a stop string from EOS without parsing `message`.
  std::string matched_stop;
  // Finish events only: prompt tokens whose K/V the request's first admission reused from the
  // prefix cache (0 when it was never admitted).
  int64_t prefix_cached_tokens = 0;
};

// A finished request as run_to_completion() collects it.
struct EngineResult {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  std::string text;
  FinishReason reason = FinishReason::stopped;
  std::string message;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t preempted = 0;    // waiting sequences that were running once (recompute pending)
  int64_t preemptions = 0;  // total since construction
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;
  int64_t blocks_free = 0;
  int64_t blocks_cached = 0;
  int64_t peak_blocks_used = 0;
  int64_t max_running_seen = 0;
  int64_t prefix_queries = 0;  // blocks looked up at admission
  int64_t prefix_hits = 0;     // blocks reused
  int64_t steps = 0;           // steps that ran a forward pass
  int64_t prompt_tokens_computed = 0;  // prefill tokens run (recomputation included)
  int64_t generated_tokens = 0;
  double busy_seconds = 0;   // inside step()
  double tokens_per_s = 0;   // generated_tokens / busy_seconds
  // The last step: its prefill and decode tokens (a decode-only step has no prefill tokens).
  int64_t last_step_prefill_tokens = 0;
  int64_t last_step_decode_tokens = 0;
  int64_t cache_bytes = 0;   // the paged cache actually allocated (this rank)
};

class Engine {
 public:
  // tok may be null (requests must then carry token ids, and stop strings are refused).
  // tp: the model's TP group, or null / size 1 for a single process. Collective under TP.
  Engine(Transformer& model, const Tokenizer* tok, const EngineConfig& config, Communicator* tp = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  SubmitResult submit(EngineRequest request);  // driver only
  // Plans and runs one step; returns its events, in plan order (finishes reported by the
  // scheduler first). A step with nothing to compute runs no forward pass.
  std::vector<EngineEvent> step();
  bool cancel(uint64_t id);  // false when the id is not in flight
  bool has_work() const;
  EngineStats stats() const;
  // Steps until nothing is left; returns every request that finished meanwhile, by id.
  std::unordered_map<uint64_t, EngineResult> run_to_completion();

  bool is_driver() const { return rank_ == 0; }
  // Non-driver ranks: runs rank 0's steps until it stops the group.
  void follow();
  void stop_followers();  // driver: ends the followers' follow(); idempotent
  // Driver, while idle: one small broadcast that the followers' follow() absorbs. A server calls it
  // now and then so that followers waiting for the next plan are never in one collective longer
  // than the collective watchdog allows (parallel/comm/watchdog.h), and so that a dead follower is
  // noticed while no request is running. No-op without TP or after stop_followers().
  void ping_followers();

  // Sees every row of logits the driver samples from, before sampling: the request, the position
  // of the token whose logits these are, the whole vocabulary's logits. For tests and logprobs.
  using LogitsObserver = std::function<void(uint64_t id, int64_t position, std::span<const float> logits)>;
  void set_logits_observer(LogitsObserver f) { observer_ = std::move(f); }

  const Scheduler& scheduler() const { return sched_; }
  const PagedKvCache& cache() const { return cache_; }
  int64_t num_blocks() const { return cache_.num_blocks; }

 private:
  struct Active {
    EngineRequest req;
    Sampler sampler;
    int64_t prompt_len = 0;
    int32_t last_token = -1;     // feeds decode_piece
    std::string text;            // generated text so far (printable pieces), before any cut
    size_t emitted = 0;          // bytes of text already reported
    std::vector<int32_t> tokens;
    bool preempted = false;
    bool admitted = false;             // its first prefill chunk has been planned
    int64_t prefix_cached_tokens = 0;  // start position of that chunk: tokens reused from the cache
  };
  // A step's plan in the form forward_paged reads (and the TP broadcast carries).
  struct Plan {
    std::vector<int32_t> tokens, positions, slots, query_start, context_len, block_table, logit_rows;
    int64_t max_blocks = 0;
  };

  std::string validate(EngineRequest& r) const;
  Plan build_plan(const StepPlan& sp) const;
  Tensor run_forward(const Plan& p);
  void broadcast_header(int32_t kind, const Plan* p);
  void broadcast_plan(const Plan* p);  // driver: p; null: stop
  bool receive_plan(Plan& p);          // follower: false on stop
  // Appends a sampled token's text; true when a stop string appeared (text cut before it).
  bool add_text(Active& a, int32_t token, std::string& stop_found);
  std::string take_text(Active& a, bool final);

  Transformer& model_;
  const Tokenizer* tok_;
  EngineConfig config_;
  Communicator* tp_;
  int rank_ = 0;
  PagedKvCache cache_;
  Scheduler sched_;
  std::unordered_map<uint64_t, Active> active_;
  uint64_t next_id_ = 1;
  int32_t bos_ = -1, eos_ = -1;
  bool followers_stopped_ = false;
  EngineStats counters_;
  LogitsObserver observer_;
};

}  // namespace latte
