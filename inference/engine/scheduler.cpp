#include "inference/engine/scheduler.h"

#include <algorithm>
#include <span>

#include "core/base/error.h"

namespace latte {
namespace {

const SchedulerConfig& checked(const SchedulerConfig& c) {
  auto require_positive = [](int64_t v, const char* name) {
    LATTE_REQUIRE(v >= 1, ErrorCode::invalid_argument, "scheduler: ", name,
                  " must be at least 1, got ", v);
  };
  require_positive(c.block_size, "block_size");
  require_positive(c.num_blocks, "num_blocks");
  require_positive(c.max_tokens_per_step, "max_tokens_per_step");
  require_positive(c.max_running_sequences, "max_running_sequences");
  require_positive(c.max_context, "max_context");
  // Otherwise the newest running sequences could be denied their decode token step after step.
  LATTE_REQUIRE(c.max_tokens_per_step >= c.max_running_sequences, ErrorCode::invalid_argument,
                "scheduler: max_tokens_per_step (", c.max_tokens_per_step,
                ") must be at least max_running_sequences (", c.max_running_sequences,
                ") so every running sequence can decode in every step");
  return c;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stopped: return "stopped";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::deadline: return "deadline";
    case FinishReason::failed: return "failed";
  }
  return "unknown";
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(checked(config)), pool_(config.num_blocks, config.block_size) {}

Scheduler::Sequence* Scheduler::find(uint64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

int64_t Scheduler::blocks_for(int64_t tokens) const {
  return (tokens + config_.block_size - 1) / config_.block_size;
}

AddResult Scheduler::add(SequenceRequest r) {
  auto refuse = [&](auto&&... parts) {
    return AddResult{str_cat("request ", r.id, ": ", parts...)};
  };
  if (seqs_.count(r.id)) return refuse("id is already used by a sequence that has not finished");
  if (r.prompt.empty()) return refuse("empty prompt");
  if (r.max_new_tokens < 1)
    return refuse("max_new_tokens must be at least 1, got ", r.max_new_tokens);
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0) return refuse("prompt token ", i, " is negative (", r.prompt[i], ")");
  const int64_t prompt = int64_t(r.prompt.size());
  if (prompt > config_.max_context || r.max_new_tokens > config_.max_context - prompt)
    return refuse("prompt (", prompt, " tokens) + max_new_tokens (", r.max_new_tokens,
                  ") exceeds the context length ", config_.max_context);
  // The last generated token is never run through the model, so it needs no cache slot.
  const int64_t positions = prompt + r.max_new_tokens - 1;
  if (blocks_for(positions) > config_.num_blocks)
    return refuse("needs ", blocks_for(positions), " cache blocks of ", config_.block_size,
                  " tokens (", positions, " positions) but the whole cache has ",
                  config_.num_blocks);

  auto s = std::make_unique<Sequence>();
  s->id = r.id;
  s->arrival = next_arrival_++;
  s->tokens = std::move(r.prompt);
  s->prompt_len = prompt;
  s->max_new_tokens = r.max_new_tokens;
  s->deadline = r.deadline;
  waiting_.push_back(s.get());
  seqs_.emplace(r.id, std::move(s));
  return {};
}

void Scheduler::mark_executed(Sequence& s) {
  s.num_executed = s.num_computed;
  if (!config_.enable_prefix_caching) return;
  const int64_t bs = config_.block_size;
  const size_t full_blocks = size_t(s.num_executed / bs);
  while (s.block_hashes.size() < full_blocks) {
    const size_t b = s.block_hashes.size();
    const uint64_t parent =
        b == 0 ? BlockPool::root_hash(config_.prefix_cache_salt) : s.block_hashes[b - 1];
    const uint64_t h = BlockPool::chain_hash(
        parent, std::span<const int32_t>(s.tokens.data() + b * bs, size_t(bs)));
    pool_.publish(s.blocks[b], h);  // a duplicate stays unpublished; its hash still chains on
    s.block_hashes.push_back(h);
  }
}

void Scheduler::release_blocks(Sequence& s) {
  // Tail first: the evictable list is LRU, so a sequence's deepest (least shareable) blocks are
  // reclaimed before the prefix blocks other requests are most likely to hit.
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) pool_.release(*it);
  s.blocks.clear();
  s.block_hashes.clear();
  s.num_computed = 0;
  s.num_executed = 0;
}

namespace {

template <typename C>
void erase_value(C& c, const typename C::value_type& v) {
  auto it = std::find(c.begin(), c.end(), v);
  if (it != c.end()) c.erase(it);
}

}  // namespace

void Scheduler::end(Sequence& s, FinishReason reason, std::string message) {
  release_blocks(s);
  if (s.running) {
    erase_value(running_, &s);
  } else {
    erase_value(waiting_, &s);
  }
  finished_.push_back({s.id, reason, std::move(message),
                       std::vector<int32_t>(s.tokens.begin() + s.prompt_len, s.tokens.end())});
  seqs_.erase(s.id);  // destroys s
}

void Scheduler::preempt(Sequence& s, StepPlan& plan) {
  release_blocks(s);
  s.running = false;
  s.prefilling = true;
  s.awaiting_token = false;
  erase_value(running_, &s);
  waiting_.push_front(&s);
  ++preemptions_;
  plan.preempted.push_back(s.id);
}

bool Scheduler::reserve(Sequence& s, int64_t n, StepPlan& plan) {
  const int64_t need = blocks_for(s.num_computed + n) - int64_t(s.blocks.size());
  while (need > pool_.free_count()) {
    // The victim is newer than s, so it has no chunk planned yet: decodes and prefills are
    // planned oldest first, and every prefilling sequence is newer than every decoding one
    // (admission is FIFO by arrival and a preempted sequence re-enters at the front).
    Sequence& victim = *running_.back();
    if (&victim != &s) {
      preempt(victim, plan);
      continue;
    }
    if (running_.size() == 1) {
      // Unreachable while add() refuses sequences larger than the cache; kept so a future
      // change there turns into a failed request instead of a preemption loop.
      end(s, FinishReason::failed,
          str_cat("cache budget too small: the sequence needs ", blocks_for(s.num_computed + n),
                  " blocks of ", config_.block_size, " tokens but the cache has ",
                  config_.num_blocks));
    } else {
      preempt(s, plan);
    }
    return false;
  }
  for (int64_t i = 0; i < need; ++i) s.blocks.push_back(*pool_.allocate());
  return true;
}

std::optional<int64_t> Scheduler::admit(Sequence& s, int64_t budget) {
  const int64_t bs = config_.block_size;
  const int64_t total = int64_t(s.tokens.size());
  std::vector<uint64_t> hits;
  int64_t queried = 0;
  int64_t evictable_hits = 0;
  if (config_.enable_prefix_caching) {
    uint64_t parent = BlockPool::root_hash(config_.prefix_cache_salt);
    // Never the block holding the last token: its logits are needed to sample.
    const int64_t candidates = (total - 1) / bs;
    for (int64_t b = 0; b < candidates; ++b) {
      ++queried;
      const uint64_t h = BlockPool::chain_hash(
          parent, std::span<const int32_t>(s.tokens.data() + b * bs, size_t(bs)));
      const std::optional<int32_t> id = pool_.lookup(h);
      if (!id) break;
      if (pool_.refcount(*id) == 0) ++evictable_hits;  // reusing it takes it off the free count
      hits.push_back(h);
      parent = h;
    }
  }
  const int64_t cached = int64_t(hits.size()) * bs;
  const int64_t n = std::min(total - cached, budget);
  const int64_t need = blocks_for(cached + n) - int64_t(hits.size());
  if (need > pool_.free_count() - evictable_hits) return std::nullopt;

  // Cached blocks first, so that allocate() cannot evict one of them.
  for (uint64_t h : hits) s.blocks.push_back(*pool_.acquire_cached(h));
  for (int64_t i = 0; i < need; ++i) s.blocks.push_back(*pool_.allocate());
  prefix_queries_ += queried;
  prefix_hits_ += int64_t(hits.size());
  s.block_hashes = std::move(hits);
  s.num_computed = s.num_executed = cached;
  s.running = true;
  s.prefilling = true;
  waiting_.pop_front();
  running_.insert(std::upper_bound(running_.begin(), running_.end(), &s,
                                   [](const Sequence* a, const Sequence* b) {
                                     return a->arrival < b->arrival;
                                   }),
                  &s);
  return n;
}

ScheduledChunk Scheduler::emit(Sequence& s, int64_t n, bool prefill) {
  LATTE_ASSERT(s.running && blocks_for(s.num_computed + n) <= int64_t(s.blocks.size()));
  const int64_t bs = config_.block_size;
  ScheduledChunk c;
  c.id = s.id;
  c.start_position = s.num_computed;
  c.tokens.assign(s.tokens.begin() + s.num_computed, s.tokens.begin() + s.num_computed + n);
  c.prefill = prefill;
  c.sample = s.num_computed + n == int64_t(s.tokens.size());
  c.block_table = s.blocks;
  c.slots.reserve(size_t(n));
  for (int64_t p = s.num_computed; p < s.num_computed + n; ++p)
    c.slots.push_back(int64_t(s.blocks[size_t(p / bs)]) * bs + p % bs);
  s.num_computed += n;
  if (c.sample) {
    s.awaiting_token = true;
    s.prefilling = false;
  }
  return c;
}

StepPlan Scheduler::schedule(SchedulerClock::time_point now) {
  for (Sequence* s : running_) {
    if (s->awaiting_token)
      fail(ErrorCode::internal, "scheduler: sequence ", s->id,
           " sampled in the previous step but got no append_token(), finish() or cancel()");
    mark_executed(*s);  // the previous plan has run: its full blocks can be shared now
  }

  std::vector<Sequence*> expired;
  for (Sequence* s : running_)
    if (s->deadline && now >= *s->deadline) expired.push_back(s);
  for (Sequence* s : waiting_)
    if (s->deadline && now >= *s->deadline) expired.push_back(s);
  for (Sequence* s : expired)
    end(*s, FinishReason::deadline,
        str_cat("deadline passed after ", int64_t(s->tokens.size()) - s->prompt_len,
                " generated tokens"));

  StepPlan plan;
  int64_t budget = config_.max_tokens_per_step;
  std::vector<Planned> decodes, prefills, admitted;
  // Ids, not pointers: reserve() may end (and destroy) the sequence it is serving.
  std::vector<uint64_t> order;
  for (const Sequence* s : running_) order.push_back(s->id);

  for (uint64_t id : order) {
    Sequence* s = find(id);
    if (!s || !s->running || s->prefilling) continue;
    if (budget == 0) break;
    LATTE_ASSERT(int64_t(s->tokens.size()) - s->num_computed == 1);
    if (reserve(*s, 1, plan)) {
      decodes.push_back({s, 1});
      budget -= 1;
    }
  }
  for (uint64_t id : order) {
    Sequence* s = find(id);
    if (!s || !s->running || !s->prefilling) continue;
    if (budget == 0) break;
    const int64_t n = std::min(int64_t(s->tokens.size()) - s->num_computed, budget);
    if (reserve(*s, n, plan)) {
      prefills.push_back({s, n});
      budget -= n;
    }
  }
  // After a preemption the cache is full: admitting would only preempt again next step.
  if (plan.preempted.empty()) {
    while (budget > 0 && int64_t(running_.size()) < config_.max_running_sequences &&
           !waiting_.empty()) {
      Sequence* s = waiting_.front();
      const std::optional<int64_t> n = admit(*s, budget);
      if (!n) break;  // strict FIFO: a large request at the head is not overtaken
      admitted.push_back({s, *n});
      budget -= *n;
    }
  }

  for (const Planned& p : decodes) plan.chunks.push_back(emit(*p.seq, p.n, false));
  for (const Planned& p : prefills) plan.chunks.push_back(emit(*p.seq, p.n, true));
  for (const Planned& p : admitted) plan.chunks.push_back(emit(*p.seq, p.n, true));
  for (const ScheduledChunk& c : plan.chunks) plan.num_tokens += int64_t(c.tokens.size());
  plan.finished = std::move(finished_);
  finished_.clear();
  tokens_scheduled_ += plan.num_tokens;
  ++steps_;
  return plan;
}

AppendOutcome Scheduler::append_token(uint64_t id, int32_t token) {
  Sequence* s = find(id);
  if (!s) return AppendOutcome::not_running;
  if (!s->awaiting_token)
    fail(ErrorCode::internal, "scheduler: append_token for sequence ", id,
         ", whose last chunk was not scheduled to sample");
  s->awaiting_token = false;
  s->tokens.push_back(token);
  mark_executed(*s);
  if (int64_t(s->tokens.size()) - s->prompt_len >= s->max_new_tokens) {
    end(*s, FinishReason::length, str_cat("max_new_tokens (", s->max_new_tokens, ") reached"));
    return AppendOutcome::finished;
  }
  return AppendOutcome::accepted;
}

bool Scheduler::finish(uint64_t id, std::string message) {
  Sequence* s = find(id);
  if (!s) return false;
  // Only a sampled chunk proves the step ran; a sequence stopped mid-prefill publishes nothing.
  if (s->awaiting_token) mark_executed(*s);
  end(*s, FinishReason::stopped, std::move(message));
  return true;
}

bool Scheduler::cancel(uint64_t id, std::string message) {
  Sequence* s = find(id);
  if (!s) return false;
  end(*s, FinishReason::cancelled, std::move(message));  // the step in flight may not have run
  return true;
}

bool Scheduler::has_work() const {
  return !running_.empty() || !waiting_.empty() || !finished_.empty();
}

SchedulerStats Scheduler::stats() const {
  const BlockPoolStats p = pool_.stats();
  SchedulerStats s;
  s.running = int64_t(running_.size());
  s.waiting = int64_t(waiting_.size());
  s.preemptions = preemptions_;
  s.blocks_used = p.used_blocks;
  s.blocks_free = p.free_blocks;
  s.blocks_cached = p.cached_blocks;
  s.prefix_queries = prefix_queries_;
  s.prefix_hits = prefix_hits_;
  s.tokens_scheduled = tokens_scheduled_;
  s.steps = steps_;
  return s;
}

}  // namespace latte
