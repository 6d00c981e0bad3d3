// The one thread that owns the serving Engine (which is not thread-safe). gRPC handler threads
// never touch the engine: they hand requests in with submit(), read what the engine produced from
// their RequestStream, and ask for a cancellation with cancel(). The engine thread, in a loop:
//   1. takes the requests and cancellations that came in (waits for them while the engine is idle),
//   2. submits the requests (a refusal ends the stream with its message) and cancels the requests
//      whose clients went away, which frees their KV cache blocks before the next step,
//   3. runs one engine step and delivers each event to its request's stream,
//   4. publishes a statistics snapshot (what stats() returns) after 2 and after each step, the
//      latter before the step's events are delivered, so a client never sees Stats lag behind
//      what it was sent.
// While idle under tensor parallelism it pings the followers every `ping_interval_s`, so that they
// never wait in one collective longer than the collective watchdog allows and a dead follower is
// noticed even when no request comes.
//
// stop() ends every open stream with StreamEnd::shutdown, cancels their sequences (the engine's
// blocks are all free afterwards) and joins the thread; the engine is then the caller's again (a
// TP driver calls stop_followers() next). If the engine throws, the loop ends every open stream
// with StreamEnd::engine_failed, refuses all later requests and reports the failure in stats():
// the engine's state is unknown after an exception, so nothing more is run on it.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "inference/engine/engine.h"
#include "inference/server/request_stream.h"
#include "inference/server/throughput_window.h"

namespace latte::server {

struct EngineLoopOptions {
  // Requests held at once, waiting or running; submit() refuses more (Admit::full).
  int64_t max_requests = 256;
  // Seconds between follower pings while idle; 0: never (no TP, or no watchdog to satisfy).
  double ping_interval_s = 0;
  // Run first on the engine thread: per-thread settings such as the OpenMP thread count.
  std::function<void()> thread_init;
};

struct LoopStats {
  EngineStats engine;
  int64_t queued = 0;     // handed in, not yet submitted to the engine
  int64_t in_flight = 0;  // held: queued, waiting in the engine, or running
  int64_t requests_finished = 0;  // finished by the engine (any reason), counted before delivery
  TokenRates rates;
  double uptime_s = 0;
  std::string failure;  // non-empty: the engine threw this and the loop has stopped serving
};

class EngineLoop {
 public:
  EngineLoop(Engine& engine, EngineLoopOptions options);  // starts the engine thread
  ~EngineLoop();                                           // stop()
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  enum class Admit { accepted, full, stopping };
  struct Admission {
    Admit result = Admit::stopping;
    std::shared_ptr<RequestStream> stream;  // set when accepted
    std::string message;                    // why not, when not accepted
  };
  Admission submit(EngineRequest request);
  // The client of this stream went away: the engine thread cancels its request.
  void cancel(const std::shared_ptr<RequestStream>& stream);
  LoopStats stats() const;
  void stop();  // idempotent

 private:
  struct Pending {
    std::shared_ptr<RequestStream> stream;
    EngineRequest request;
  };
  struct Inbox {
    std::vector<Pending> submissions;
    std::vector<std::shared_ptr<RequestStream>> cancels;
    bool stop = false;
  };

  void run();
  void fail(const std::string& what);
  Inbox wait_for_work();
  void admit(std::vector<Pending>& submissions);
  void apply_cancels(const std::vector<std::shared_ptr<RequestStream>>& cancels);
  void deliver(std::vector<EngineEvent>& events);
  // A cancelled request ends as a finished one: its place freed and its finish counted together.
  void end_cancelled(const std::shared_ptr<RequestStream>& stream, std::string message);
  // Ends a stream that has not ended through an engine event, and releases its place.
  void end_stream(const std::shared_ptr<RequestStream>& stream, StreamEnd how, std::string message,
                  FinishReason reason = FinishReason::failed);
  void end_all(StreamEnd how, const std::string& message);
  void publish_stats();
  void ping_if_due();

  Engine& engine_;
  const EngineLoopOptions options_;
  const ThroughputClock::time_point started_ = ThroughputClock::now();

  mutable std::mutex mutex_;  // guards everything below up to the thread
  std::condition_variable wake_;
  Inbox inbox_;
  int64_t in_flight_ = 0;
  bool stopping_ = false;
  std::string failure_;
  LoopStats snapshot_;
  ThroughputWindow throughput_;

  // Engine thread only.
  std::unordered_map<uint64_t, std::shared_ptr<RequestStream>> running_;  // by engine id
  ThroughputClock::time_point last_collective_ = ThroughputClock::now();  // last step or ping

  std::mutex join_mutex_;  // stop() may be called from several threads
  std::thread thread_;
};

}  // namespace latte::server
