#include "inference/engine/engine.h"

#include <algorithm>
#include <array>
#include <climits>
#include <exception>

#include "core/base/error.h"
#include "inference/engine/generate.h"

namespace latte {
namespace {

constexpr int32_t kHeaderInts = 8;
// kPing: an idle driver's keep-alive (ping_followers); followers absorb it and wait for the next.
enum PlanKind : int32_t { kStop = 0, kStep = 1, kSetup = 2, kPing = 3 };

// Bytes at the end of s that start a UTF-8 character whose continuation bytes have not come yet.
size_t incomplete_utf8_tail(const std::string& s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: the lead is further back
    if (c < 0x80) return 0;
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// The longest suffix of s that is a proper prefix of a stop string: it may still become one.
size_t stop_prefix_tail(const std::string& s, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops)
    for (size_t k = std::min(stop.size() - 1, s.size()); k > hold; --k)
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

int64_t engine_num_blocks(const Transformer& model, const EngineConfig& c) {
  LATTE_REQUIRE(c.block_size >= 1, ErrorCode::invalid_argument, "engine: block_size must be at least 1, got ",
                c.block_size);
  const int64_t per_block = PagedKvCache::bytes_per_block(model.config(), c.block_size, c.cache_dtype, model.tp());
  LATTE_REQUIRE(c.cache_bytes >= per_block, ErrorCode::invalid_argument, "engine: a cache budget of ", c.cache_bytes,
                " bytes is smaller than one block (", per_block, " bytes for ", c.block_size, " tokens of ",
                dtype_name(c.cache_dtype), " cache over ", model.config().n_layers, " layers)");
  // Slots are int32 (block * block_size + offset) and the pool counts blocks in int32.
  return std::min<int64_t>(c.cache_bytes / per_block, INT32_MAX / c.block_size);
}

// Rank 0's cache geometry for every rank of the group: a rank building a different pool would
// read the plan's block ids as other slots (or out of range).
struct Geometry {
  int64_t num_blocks;
  int32_t block_size;
  DType dtype;
};

Geometry agreed_geometry(Transformer& model, const EngineConfig& c, Communicator* tp) {
  Geometry g{engine_num_blocks(model, c), c.block_size, c.cache_dtype};
  if (!tp || tp->size() == 1) return g;
  std::array<int32_t, kHeaderInts> h = {kSetup, int32_t(g.num_blocks), g.block_size, int32_t(g.dtype), 0, 0, 0, 0};
  tp->broadcast_ints(h, 0);
  LATTE_REQUIRE(h[0] == kSetup, ErrorCode::internal, "engine: rank ", tp->rank(),
                " expected the cache set-up from rank 0, got message kind ", h[0]);
  return {h[1], h[2], DType(h[3])};
}

SchedulerConfig scheduler_config(const Transformer& model, const EngineConfig& c, const Geometry& g) {
  SchedulerConfig s;
  s.block_size = g.block_size;
  s.num_blocks = int32_t(g.num_blocks);
  s.max_tokens_per_step = c.max_tokens_per_step;
  s.max_running_sequences = c.max_running;
  s.max_context = model.config().max_seq_len;
  s.enable_prefix_caching = c.prefix_caching;
  return s;
}

}  // namespace

Engine::Engine(Transformer& model, const Tokenizer* tok, const EngineConfig& config, Communicator* tp)
    : model_(model),
      tok_(tok),
      config_(config),
      tp_(tp && tp->size() > 1 ? tp : nullptr),
      rank_(tp_ ? tp_->rank() : 0),
      cache_(),
      sched_([&] {
        // Before the set-up collective: a rank that threw after it would leave the others waiting.
        LATTE_REQUIRE(!tok || tok->vocab_size() <= model.config().vocab_size, ErrorCode::invalid_argument,
                      "engine: the tokenizer has ", tok ? tok->vocab_size() : 0, " tokens but the model only ",
                      model.config().vocab_size);
        const Geometry g = agreed_geometry(model, config, tp_);
        config_.block_size = g.block_size;
        config_.cache_dtype = g.dtype;
        cache_ = PagedKvCache::create(model.config(), g.num_blocks, g.block_size, g.dtype, model.tp(),
                                      model.backend());
        return scheduler_config(model, config, g);
      }()) {
  if (tok_) {
    bos_ = tok_->bos_id();
    eos_ = tok_->eos_id();
  } else {
    bos_ = model.config().bos_id;
    eos_ = model.config().eos_id;
  }
  counters_.blocks_total = cache_.num_blocks;
  counters_.cache_bytes = cache_.bytes();
}

Engine::~Engine() {
  if (is_driver() && tp_ && !followers_stopped_ && std::uncaught_exceptions() == 0) {
    try {
      stop_followers();
    } catch (...) {  // a destructor must not throw; the watchdog reports a broken group
    }
  }
}

std::string Engine::validate(EngineRequest& r) const {
  const ModelConfig& c = model_.config();
  if (r.prompt.empty() && !r.text.empty()) {
    if (!tok_) return "a text prompt needs a tokenizer and this engine has none: send token ids";
    r.prompt = tok_->encode(r.text, tok_->adds_bos_to_prompts());
  }
  if (r.prompt.empty()) return "empty prompt";
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size)
      return str_cat("prompt token ", i, " is ", r.prompt[i], ", outside the model's vocabulary [0, ", c.vocab_size,
                     ")");
  if (r.max_new_tokens < 1) return str_cat("max_new_tokens must be at least 1, got ", r.max_new_tokens);
  try {
    Sampler check(r.sampling);
  } catch (const Error& e) {
    return e.what();
  }
  for (size_t i = 0; i < r.stop_strings.size(); ++i)
    if (r.stop_strings[i].empty()) return str_cat("stop string ", i, " is empty");
  if (!r.stop_strings.empty() && !tok_) return "stop strings need a tokenizer and this engine has none";
  return "";
}

SubmitResult Engine::submit(EngineRequest request) {
  LATTE_REQUIRE(is_driver(), ErrorCode::invalid_argument, "engine: submit() on TP rank ", rank_,
                "; only rank 0 takes requests (the others run follow())");
  const uint64_t id = next_id_++;
  if (std::string problem = validate(request); !problem.empty())
    return {0, str_cat("request ", id, ": ", problem)};
  AddResult added = sched_.add({id, request.prompt, request.max_new_tokens, request.deadline});
  if (!added.ok()) return {0, added.error};
  Active a{request, Sampler(request.sampling)};
  a.prompt_len = int64_t(a.req.prompt.size());
  a.last_token = a.req.prompt.back();
  active_.emplace(id, std::move(a));
  return {id, ""};
}

bool Engine::cancel(uint64_t id) {
  // The scheduler frees the blocks now; the finish is reported by the next step().
  return active_.count(id) && sched_.cancel(id);
}

bool Engine::has_work() const { return sched_.has_work(); }

Engine::Plan Engine::build_plan(const StepPlan& sp) const {
  Plan p;
  for (const ScheduledChunk& ch : sp.chunks) p.max_blocks = std::max<int64_t>(p.max_blocks, int64_t(ch.block_table.size()));
  p.query_start.push_back(0);
  const int64_t max_slot = cache_.num_blocks * cache_.block_size;
  for (const ScheduledChunk& ch : sp.chunks) {
    for (size_t i = 0; i < ch.tokens.size(); ++i) {
      const int64_t slot = ch.slots[i];
      LATTE_REQUIRE(slot >= 0 && slot < max_slot, ErrorCode::internal, "engine: sequence ", ch.id, " token ", i,
                    " has cache slot ", slot, " outside the cache's ", max_slot, " slots");
      p.tokens.push_back(ch.tokens[i]);
      p.positions.push_back(int32_t(ch.start_position + int64_t(i)));
      p.slots.push_back(int32_t(slot));
    }
    p.query_start.push_back(int32_t(p.tokens.size()));
    p.context_len.push_back(int32_t(ch.context_len()));
    p.block_table.insert(p.block_table.end(), ch.block_table.begin(), ch.block_table.end());
    p.block_table.resize(p.block_table.size() + size_t(p.max_blocks) - ch.block_table.size(), 0);
    if (ch.sample) p.logit_rows.push_back(p.query_start.back() - 1);
  }
  return p;
}

Tensor Engine::run_forward(const Plan& p) {
  PagedStep s;
  s.tokens = p.tokens;
  s.positions = p.positions;
  s.slots = p.slots;
  s.batch.query_start = p.query_start;
  s.batch.context_len = p.context_len;
  s.batch.block_table = p.block_table;
  s.batch.max_blocks = p.max_blocks;
  s.batch.block_size = cache_.block_size;
  s.logit_rows = p.logit_rows;
  return model_.forward_paged(s, cache_);
}

void Engine::broadcast_header(int32_t kind, const Plan* p) {
  const int32_t S = p ? int32_t(p->context_len.size()) : 0;
  std::array<int32_t, kHeaderInts> h = {kind,
                                        p ? int32_t(p->tokens.size()) : 0,
                                        S,
                                        p ? int32_t(p->max_blocks) : 0,
                                        p ? int32_t(p->logit_rows.size()) : 0,
                                        int32_t(cache_.block_size),
                                        0,
                                        0};
  tp_->broadcast_ints(h, 0);
}

void Engine::broadcast_plan(const Plan* p) {
  broadcast_header(p ? kStep : kStop, p);
  if (!p) return;
  std::vector<int32_t> body;
  for (const auto* v : {&p->tokens, &p->positions, &p->slots, &p->query_start, &p->context_len, &p->block_table,
                        &p->logit_rows})
    body.insert(body.end(), v->begin(), v->end());
  tp_->broadcast_ints(body, 0);
}

bool Engine::receive_plan(Plan& p) {
  std::array<int32_t, kHeaderInts> h{};
  do tp_->broadcast_ints(h, 0);
  while (h[0] == kPing);
  if (h[0] == kStop) return false;
  LATTE_REQUIRE(h[0] == kStep && h[5] == cache_.block_size, ErrorCode::internal, "engine: TP rank ", rank_,
                " got a plan header of kind ", h[0], " for block size ", h[5], " (this rank's cache: ",
                cache_.block_size, ")");
  const int64_t N = h[1], S = h[2], B = h[3], R = h[4];
  std::vector<int32_t> all(size_t(3 * N + (S + 1) + S + S * B + R));
  tp_->broadcast_ints(all, 0);
  auto take = [&, pos = size_t(0)](int64_t n) mutable {
    std::vector<int32_t> out(all.begin() + long(pos), all.begin() + long(pos + size_t(n)));
    pos += size_t(n);
    return out;
  };
  p.tokens = take(N);
  p.positions = take(N);
  p.slots = take(N);
  p.query_start = take(S + 1);
  p.context_len = take(S);
  p.block_table = take(S * B);
  p.logit_rows = take(R);
  p.max_blocks = B;
  return true;
}

void Engine::follow() {
  LATTE_REQUIRE(!is_driver(), ErrorCode::invalid_argument,
                "engine: follow() on rank 0, the driver (it submits and steps instead)");
  Plan p;
  while (receive_plan(p)) run_forward(p);
}

void Engine::stop_followers() {
  if (!tp_ || !is_driver() || followers_stopped_) return;
  followers_stopped_ = true;
  broadcast_plan(nullptr);
}

void Engine::ping_followers() {
  if (!tp_ || !is_driver() || followers_stopped_) return;
  broadcast_header(kPing, nullptr);
}

bool Engine::add_text(Active& a, int32_t token, std::string& stop_found) {
  if (!tok_) return false;
  const size_t before = a.text.size();
  a.text += printable_piece(tok_->decode_piece(a.last_token, token));
  size_t cut = std::string::npos;
  for (const std::string& stop : a.req.stop_strings) {
    // A new match ends inside the new piece.
    const size_t from = before >= stop.size() - 1 ? before - (stop.size() - 1) : 0;
    const size_t at = a.text.find(stop, from);
    if (at != std::string::npos && at < cut) {
      cut = at;
      stop_found = stop;
    }
  }
  if (cut == std::string::npos) return false;
  a.text.resize(std::max(cut, a.emitted));
  return true;
}

std::string Engine::take_text(Active& a, bool final) {
  size_t end = a.text.size();
  if (!final) {
    const size_t hold = std::max(incomplete_utf8_tail(a.text), stop_prefix_tail(a.text, a.req.stop_strings));
    end = end - std::min(hold, end);
  }
  if (end <= a.emitted) return "";
  std::string out = a.text.substr(a.emitted, end - a.emitted);
  a.emitted = end;
  return out;
}

std::vector<EngineEvent> Engine::step() {
  LATTE_REQUIRE(is_driver(), ErrorCode::invalid_argument, "engine: step() on TP rank ", rank_,
                "; only rank 0 steps (the others run follow())");
  const auto t0 = EngineClock::now();
  std::vector<EngineEvent> events;
  StepPlan sp = sched_.schedule(t0);

  // Length and stop finishes were reported when they happened; the scheduler's report covers
  // what the engine did not see coming: cancellation, deadlines, failures.
  for (FinishedSequence& f : sp.finished) {
    auto it = active_.find(f.id);
    if (it == active_.end()) continue;
    EngineEvent ev;
    ev.id = f.id;
    ev.text = take_text(it->second, true);
    ev.finished = true;
    ev.reason = f.reason;
    ev.message = std::move(f.message);
    ev.prefix_cached_tokens = it->second.prefix_cached_tokens;
    events.push_back(std::move(ev));
    active_.erase(it);
  }
  for (uint64_t id : sp.preempted)
    if (auto it = active_.find(id); it != active_.end()) it->second.preempted = true;

  const SchedulerStats before = sched_.stats();
  counters_.peak_blocks_used = std::max(counters_.peak_blocks_used, before.blocks_used);
  counters_.max_running_seen = std::max(counters_.max_running_seen, before.running);
  counters_.last_step_prefill_tokens = 0;
  counters_.last_step_decode_tokens = 0;
  if (sp.chunks.empty()) {
    counters_.busy_seconds += std::chrono::duration<double>(EngineClock::now() - t0).count();
    return events;
  }

  const Plan plan = build_plan(sp);
  if (tp_) broadcast_plan(&plan);
  Tensor logits = model_.backend().to_host(run_forward(plan));
  const int64_t V = model_.config().vocab_size;
  LATTE_REQUIRE(logits.dim(0) == int64_t(plan.logit_rows.size()) && logits.dim(1) == V, ErrorCode::internal,
                "engine: forward_paged returned logits ", shape_str(logits.shape()), " for ", plan.logit_rows.size(),
                " rows of a ", V, "-token vocabulary");
  ++counters_.steps;

  int64_t row = 0;
  for (const ScheduledChunk& ch : sp.chunks) {
    if (ch.prefill) {
      counters_.last_step_prefill_tokens += int64_t(ch.tokens.size());
    } else {
      counters_.last_step_decode_tokens += int64_t(ch.tokens.size());
    }
    auto it = active_.find(ch.id);
    LATTE_ASSERT(it != active_.end());
    Active& a = it->second;
    a.preempted = false;
    if (ch.prefill && !a.admitted) {
      a.admitted = true;
      a.prefix_cached_tokens = ch.start_position;
    }
    if (!ch.sample) continue;
    const std::span<const float> row_logits(logits.f32() + row * V, size_t(V));
    ++row;
    if (observer_) observer_(ch.id, ch.context_len() - 1, row_logits);
    const int32_t token = a.sampler.sample(row_logits);
    EngineEvent ev;
    ev.id = ch.id;
    if (a.req.stop_at_eos && token >= 0 && (token == eos_ || token == bos_)) {
      sched_.finish(ch.id, "end of sequence token");
      ev.text = take_text(a, true);
      ev.finished = true;
      ev.reason = FinishReason::stopped;
      ev.message = str_cat("end of sequence token ", token);
    } else {
      ++counters_.generated_tokens;
      ev.token = token;
      a.tokens.push_back(token);
      std::string stop;
      if (add_text(a, token, stop)) {
        sched_.finish(ch.id, "stop string");
        ev.text = take_text(a, true);
        ev.finished = true;
        ev.reason = FinishReason::stopped;
        ev.message = "stop string \"" + stop + "\"";
        ev.matched_stop = stop;
      } else if (sched_.append_token(ch.id, token) == AppendOutcome::finished) {
        ev.text = take_text(a, true);
        ev.finished = true;
        ev.reason = FinishReason::length;
        ev.message = str_cat("max_new_tokens (", a.req.max_new_tokens, ") reached");
      } else {
        ev.text = take_text(a, false);
      }
      a.last_token = token;
    }
    const bool done = ev.finished;
    if (done) ev.prefix_cached_tokens = a.prefix_cached_tokens;
    events.push_back(std::move(ev));
    if (done) active_.erase(it);
  }
  counters_.prompt_tokens_computed += counters_.last_step_prefill_tokens;
  counters_.busy_seconds += std::chrono::duration<double>(EngineClock::now() - t0).count();
  return events;
}

EngineStats Engine::stats() const {
  EngineStats s = counters_;
  const SchedulerStats ss = sched_.stats();
  s.running = ss.running;
  s.waiting = ss.waiting;
  s.preemptions = ss.preemptions;
  s.preempted = 0;
  for (const auto& [id, a] : active_) s.preempted += a.preempted ? 1 : 0;
  s.blocks_used = ss.blocks_used;
  s.blocks_free = ss.blocks_free;
  s.blocks_cached = ss.blocks_cached;
  s.peak_blocks_used = std::max(s.peak_blocks_used, ss.blocks_used);
  s.prefix_queries = ss.prefix_queries;
  s.prefix_hits = ss.prefix_hits;
  s.tokens_per_s = s.busy_seconds > 0 ? double(s.generated_tokens) / s.busy_seconds : 0;
  return s;
}

std::unordered_map<uint64_t, EngineResult> Engine::run_to_completion() {
  std::unordered_map<uint64_t, EngineResult> out;
  for (const auto& [id, a] : active_) out[id];
  while (has_work()) {
    for (EngineEvent& ev : step()) {
      EngineResult& r = out[ev.id];
      if (ev.token >= 0) r.tokens.push_back(ev.token);
      r.text += ev.text;
      if (ev.finished) {
        r.reason = ev.reason;
        r.message = ev.message;
      }
    }
  }
  return out;
}

}  // namespace latte
