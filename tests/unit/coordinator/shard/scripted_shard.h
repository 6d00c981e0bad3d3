// A small latte.v1.Inference server with scripted behaviour, for testing the coordinator against
// real gRPC: it streams made-up tokens, fails before the first one, stalls until cancelled, or
// dies mid-stream, and records what it was sent. Not a model: token i of a stream is first_token + i.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "latte/v1/inference.grpc.pb.h"

namespace latte::test {

struct ShardScript {
  enum class Mode {
    stream,            // `tokens` messages of one token each, then a final LENGTH message
    unavailable,       // UNAVAILABLE before any message
    error_final,       // a final ERROR message without tokens, then UNAVAILABLE (shutdown ending)
    stall,             // `tokens` messages, then nothing until the call is cancelled
    die,               // `tokens` messages, then the whole server shuts down
  };
  Mode mode = Mode::stream;
  int tokens = 5;
  int delay_ms = 0;         // before each message
  int first_token = 1000;   // token ids first_token, first_token + 1, ...
  std::string model_name = "scripted";
  std::string required_token;  // non-empty: calls without "Bearer <it>" are UNAUTHENTICATED
};

// What one Generate call brought and how it ended.
struct SeenCall {
  latte::v1::GenerateRequest request;
  std::string authorization;
  double deadline_s = -1;  // seconds left at arrival; -1: no deadline
  bool cancelled = false;  // the call's context was seen cancelled
  std::vector<latte::v1::GenerateResponse> sent;
};

class ScriptedShard {
 public:
  explicit ScriptedShard(ShardScript script, int port = 0);
  ~ScriptedShard();

  // (Re)starts on the same port (the first start picks one when port was 0).
  void start();
  // Shuts the server down at once: calls in flight are cancelled, connections closed.
  void stop();
  bool running();

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  void set_serving(bool serving);
  void set_script(const ShardScript& script);

  int generate_calls();
  std::vector<SeenCall> calls();
  int unary_calls() const { return unary_calls_.load(); }
  // Waits (up to timeout_ms) until the n-th Generate call (0-based) has been seen cancelled.
  bool wait_cancelled(size_t n, int timeout_ms);

 private:
  class Service;
  ShardScript script();
  size_t record(SeenCall call);
  void update(size_t index, const std::function<void(SeenCall&)>& f);
  void die_soon();

  std::unique_ptr<Service> service_;
  std::mutex server_mu_;
  std::unique_ptr<grpc::Server> server_;
  bool serving_ = true;
  int port_;
  std::mutex mu_;
  std::condition_variable changed_;
  ShardScript script_;
  std::vector<SeenCall> calls_;
  std::atomic<int> unary_calls_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int64_t> generated_{0};
  std::mutex killer_mu_;
  std::thread killer_;
};

}  // namespace latte::test
