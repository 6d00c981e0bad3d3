// A gRPC server for one Engine: latte.v1.Inference (inference_service.h) on an engine thread
// (engine_loop.h), plus the standard services a deployment expects, grpc.health.v1.Health (gRPC's
// built-in implementation) and server reflection (so grpcurl and similar tools can list and call
// the API without the .proto files).
//
// Security: the listen address decides who can connect (the `latte shard` default is 127.0.0.1);
// TLS when a certificate and key are given; a bearer token when one is given (the health and
// reflection services stay open: a load balancer or an orchestrator probes health without secrets).
//
// Health and shutdown, for whoever supervises the server (an orchestrator, a coordinator):
//   - serving: health SERVING for "" (the whole server) and "latte.v1.Inference";
//   - begin_shutdown(): health NOT_SERVING at once, every later Inference call gets UNAVAILABLE,
//     every open Generate stream ends with UNAVAILABLE (after a final message with its usage), and
//     the engine thread stops (the engine's blocks are all free again). Health still answers, so a
//     prober sees NOT_SERVING rather than a refused connection;
//   - shutdown(grace): begin_shutdown(), then gRPC's own shutdown, which waits at most `grace` for
//     calls still running before cancelling them. The engine is then the caller's again: a TP
//     driver calls Engine::stop_followers() after it.
//   - engine_failure(): non-empty when the engine threw; the server then answers every Generate
//     with UNAVAILABLE and the owner should shut it down and exit with an error.
#pragma once
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "inference/engine/engine.h"
#include "inference/server/engine_loop.h"
#include "inference/server/inference_service.h"
#include "inference/server/server_limits.h"

namespace latte::server {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (address() says which).
  std::string listen = "127.0.0.1:50051";
  std::string model_name;  // what ModelInfo reports
  // TLS: the server's certificate chain and private key, PEM text; both or neither.
  std::string tls_cert_pem, tls_key_pem;
  std::string auth_token;  // empty: no authentication
  ServerLimits limits;
  int tp_size = 1;              // ranks of the engine's TP group (ModelInfo)
  double ping_interval_s = 0;   // EngineLoopOptions::ping_interval_s
  std::function<void()> engine_thread_init;
  std::chrono::milliseconds poll_interval{10};  // ServiceConfig::poll_interval
};

class InferenceServer {
 public:
  // Starts the engine thread and the gRPC server; throws latte::Error naming the address when it
  // cannot listen there (in use, not this host's, a bad TLS certificate or key).
  InferenceServer(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer, ServerOptions options);
  ~InferenceServer();  // shutdown() with a short grace if not done yet
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  const std::string& address() const { return address_; }  // host:port actually bound
  int port() const { return port_; }

  void begin_shutdown();  // idempotent
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));  // idempotent
  std::string engine_failure() const { return loop_.stats().failure; }

 private:
  void set_serving(bool serving);

  ServerOptions options_;
  EngineLoop loop_;
  InferenceService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  std::mutex shutdown_mutex_;
  bool shutdown_begun_ = false, shut_down_ = false;
};

// The service names health reports on: "" (the whole server) and the Inference service.
extern const char* const kInferenceServiceName;  // "latte.v1.Inference"

}  // namespace latte::server
