// The hand-over point between the engine thread and the gRPC handler thread of one Generate call.
// The engine thread appends what the engine produced for the request (tokens, text, the end); the
// handler takes everything that piled up since it last looked, waiting a bounded time so that it
// can also notice a client that went away. One mutex per request: handlers never contend with
// each other, and the engine thread holds a lock only long enough to append.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "inference/engine/engine.h"

namespace latte::server {

// How a request's stream ended.
enum class StreamEnd {
  none,           // not yet
  finished,       // the engine finished it (StreamNews::reason says how)
  refused,        // the engine's submit() refused it (message says why)
  shutdown,       // the server is shutting down
  engine_failed,  // the engine threw; the server cannot serve any more requests
};

// Everything that came for one request since the handler last took news.
struct StreamNews {
  std::vector<int32_t> tokens;  // new tokens, in order
  std::string text;             // new text (as the engine reports it: complete UTF-8 characters)
  StreamEnd end = StreamEnd::none;
  FinishReason reason = FinishReason::stopped;  // when end == finished
  std::string message;                          // why it ended (any end)
  std::string matched_stop;
  int64_t prefix_cached_tokens = 0;
};

class RequestStream {
 public:
  // Engine thread. An event after the end is dropped (the stream already ended another way).
  void push(EngineEvent&& event);
  // Ends the stream without an engine event (`reason` is reported only for StreamEnd::finished).
  void end(StreamEnd how, std::string message, FinishReason reason = FinishReason::failed);

  // Handler thread: waits at most `timeout` for news, then moves it into `out` (cleared first).
  // Returns whether anything came.
  bool take(StreamNews& out, std::chrono::milliseconds timeout);

  // The handler's client went away (or its deadline passed): the engine thread cancels the request.
  void request_cancel() { cancel_requested_.store(true); }
  bool cancel_requested() const { return cancel_requested_.load(); }

  // Engine thread only: the engine's id for the request (0 until submitted).
  uint64_t engine_id = 0;

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  StreamNews pending_;
  bool news_ = false;
  bool ended_ = false;
  std::atomic<bool> cancel_requested_{false};
};

}  // namespace latte::server
