#include "inference/server/engine_loop.h"

#include <exception>

#include "core/base/error.h"

namespace latte::server {

EngineLoop::EngineLoop(Engine& engine, EngineLoopOptions options)
    : engine_(engine), options_(std::move(options)) {
  LATTE_REQUIRE(engine.is_driver(), ErrorCode::invalid_argument,
                "engine loop: the engine is a TP follower; only the driver (rank 0) serves requests");
  LATTE_REQUIRE(options_.max_requests >= 1, ErrorCode::invalid_argument,
                "engine loop: max_requests must be at least 1, got ", options_.max_requests);
  LATTE_REQUIRE(options_.ping_interval_s >= 0, ErrorCode::invalid_argument,
                "engine loop: ping_interval_s must be >= 0, got ", options_.ping_interval_s);
  snapshot_.engine = engine.stats();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() { stop(); }

EngineLoop::Admission EngineLoop::submit(EngineRequest request) {
  auto stream = std::make_shared<RequestStream>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failure_.empty()) return {Admit::stopping, nullptr, "the engine failed and serves no more requests: " + failure_};
    if (stopping_) return {Admit::stopping, nullptr, "the server is shutting down"};
    if (in_flight_ >= options_.max_requests)
      return {Admit::full, nullptr,
              str_cat("the server already holds ", in_flight_, " requests, its limit (max queued requests); retry later")};
    ++in_flight_;
    inbox_.submissions.push_back({stream, std::move(request)});
  }
  wake_.notify_one();
  return {Admit::accepted, stream, ""};
}

void EngineLoop::cancel(const std::shared_ptr<RequestStream>& stream) {
  stream->request_cancel();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    inbox_.cancels.push_back(stream);
  }
  wake_.notify_one();
}

LoopStats EngineLoop::stats() const {
  const auto now = ThroughputClock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  LoopStats s = snapshot_;
  s.queued = int64_t(inbox_.submissions.size());
  s.in_flight = in_flight_;
  s.rates = throughput_.rates(now);
  s.uptime_s = std::chrono::duration<double>(now - started_).count();
  s.failure = failure_;
  return s;
}

void EngineLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    inbox_.stop = true;
  }
  wake_.notify_one();
  std::lock_guard<std::mutex> join_lock(join_mutex_);
  if (thread_.joinable()) thread_.join();
}

void EngineLoop::run() {
  try {
    if (options_.thread_init) options_.thread_init();
    for (;;) {
      Inbox in = wait_for_work();
      if (in.stop) {
        for (Pending& p : in.submissions) end_stream(p.stream, StreamEnd::shutdown, "the server is shutting down");
        end_all(StreamEnd::shutdown, "the server is shutting down");
        break;
      }
      admit(in.submissions);
      apply_cancels(in.cancels);
      publish_stats();  // the blocks of cancelled requests show as free at once
      if (engine_.has_work()) {
        std::vector<EngineEvent> events = engine_.step();
        last_collective_ = ThroughputClock::now();
        publish_stats();  // before the events: a client that saw a token sees its step in Stats
        deliver(events);
      } else {
        ping_if_due();
      }
    }
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

void EngineLoop::fail(const std::string& what) {
  // Nothing more runs on the engine: after an exception its state is unknown.
  Inbox in;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = what;
    in = std::move(inbox_);
    inbox_ = Inbox{};
  }
  const std::string message = "the engine failed: " + what;
  for (Pending& p : in.submissions) end_stream(p.stream, StreamEnd::engine_failed, message);
  for (auto& [id, stream] : running_) end_stream(stream, StreamEnd::engine_failed, message);
  running_.clear();
}

EngineLoop::Inbox EngineLoop::wait_for_work() {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto has_mail = [&] { return inbox_.stop || !inbox_.submissions.empty() || !inbox_.cancels.empty(); };
  if (!engine_.has_work()) {
    if (options_.ping_interval_s > 0)
      wake_.wait_until(lock, last_collective_ + std::chrono::duration_cast<ThroughputClock::duration>(
                                                    std::chrono::duration<double>(options_.ping_interval_s)),
                       has_mail);
    else
      wake_.wait(lock, has_mail);
  }
  Inbox out = std::move(inbox_);
  inbox_ = Inbox{};
  return out;
}

void EngineLoop::admit(std::vector<Pending>& submissions) {
  for (Pending& p : submissions) {
    if (p.stream->cancel_requested()) {
      end_cancelled(p.stream, "cancelled before it reached the engine");
      continue;
    }
    const SubmitResult r = engine_.submit(std::move(p.request));
    if (!r.ok()) {
      end_stream(p.stream, StreamEnd::refused, r.error);
      continue;
    }
    p.stream->engine_id = r.id;
    running_.emplace(r.id, p.stream);
  }
}

void EngineLoop::apply_cancels(const std::vector<std::shared_ptr<RequestStream>>& cancels) {
  // engine.cancel() frees the request's blocks now. The request is done with here as well (its
  // place freed, counted as finished), so that Stats never shows its blocks free while it still
  // holds a place; the finish event the next step reports for it finds no stream and is dropped.
  for (const auto& stream : cancels) {
    auto it = running_.find(stream->engine_id);
    if (stream->engine_id == 0 || it == running_.end()) continue;
    engine_.cancel(stream->engine_id);
    running_.erase(it);
    end_cancelled(stream, "cancelled by its client");
  }
}

void EngineLoop::end_cancelled(const std::shared_ptr<RequestStream>& stream, std::string message) {
  {
    // One lock for both: Stats never counts it finished while it still holds its place.
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
    ++snapshot_.requests_finished;
  }
  stream->end(StreamEnd::finished, std::move(message), FinishReason::cancelled);
}

void EngineLoop::deliver(std::vector<EngineEvent>& events) {
  for (EngineEvent& ev : events) {
    auto it = running_.find(ev.id);
    if (it == running_.end()) continue;
    std::shared_ptr<RequestStream> stream = it->second;
    if (ev.finished) {
      // Counted before the client hears of it: a client that got its final message may submit
      // again at once and find its place free.
      running_.erase(it);
      std::lock_guard<std::mutex> lock(mutex_);
      --in_flight_;
      ++snapshot_.requests_finished;
    }
    stream->push(std::move(ev));
  }
}

void EngineLoop::end_stream(const std::shared_ptr<RequestStream>& stream, StreamEnd how, std::string message,
                            FinishReason reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
  }
  stream->end(how, std::move(message), reason);
}

void EngineLoop::end_all(StreamEnd how, const std::string& message) {
  for (auto& [id, stream] : running_) {
    engine_.cancel(id);
    end_stream(stream, how, message);
  }
  running_.clear();
  // Report the cancellations so that the engine holds nothing: no forward pass runs for them.
  for (int i = 0; i < 2 && engine_.has_work(); ++i) engine_.step();
  publish_stats();
}

void EngineLoop::publish_stats() {
  const EngineStats es = engine_.stats();
  std::lock_guard<std::mutex> lock(mutex_);
  throughput_.record(ThroughputClock::now(), es.prompt_tokens_computed, es.generated_tokens);
  snapshot_.engine = es;
}

void EngineLoop::ping_if_due() {
  if (options_.ping_interval_s <= 0) return;
  const auto now = ThroughputClock::now();
  if (std::chrono::duration<double>(now - last_collective_).count() < options_.ping_interval_s) return;
  engine_.ping_followers();
  last_collective_ = now;
}

}  // namespace latte::server
