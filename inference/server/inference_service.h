// latte.v1.Inference (proto/latte/v1/inference.proto) over an EngineLoop, on gRPC's synchronous
// API: every call runs on a thread of gRPC's pool. A Generate call's thread prepares the request
// (generate_request.h), hands it to the engine thread, then relays what comes back on its
// RequestStream, checking every `poll_interval` whether its client is still there: a client that
// cancelled or passed its deadline has its request cancelled in the engine, which frees the
// request's KV cache blocks before the engine's next step.
//
// How a Generate call ends:
//   EOS, stop string, length       final message (finish_reason, usage), OK
//   refused by the engine          no message, INVALID_ARGUMENT with the engine's reason
//   server full                    no message, RESOURCE_EXHAUSTED
//   deadline passed                final message (DEADLINE) if the client still listens, DEADLINE_EXCEEDED
//   client cancelled               CANCELLED (nobody is listening)
//   server shutting down           final message (ERROR), UNAVAILABLE
//   engine failure                 final message (ERROR), INTERNAL with the failure
// Tokens streamed before an error stand: usage in the final message counts them.
//
// Every RPC first checks the bearer token (when the server has one: UNAUTHENTICATED otherwise) and
// whether the server is shutting down (UNAVAILABLE).
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "inference/server/engine_loop.h"
#include "inference/server/generate_request.h"
#include "inference/server/server_limits.h"
#include "latte/v1/inference.grpc.pb.h"

namespace latte::server {

struct ServiceConfig {
  ServedModel model;
  v1::ModelInfoResponse info;  // what ModelInfo answers
  ServerLimits limits;
  std::string auth_token;  // empty: no authentication
  // How often a Generate call's thread checks that its client is still there.
  std::chrono::milliseconds poll_interval{10};
};

class InferenceService final : public v1::Inference::Service {
 public:
  InferenceService(EngineLoop& loop, ServiceConfig config);

  // Every call from now on gets UNAVAILABLE (open Generate streams are ended by the loop's stop()).
  void begin_shutdown() { shutting_down_.store(true); }

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status ModelInfo(grpc::ServerContext* context, const v1::ModelInfoRequest* request,
                         v1::ModelInfoResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;

 private:
  struct Call;  // one Generate call in progress

  grpc::Status admit_call(const grpc::ServerContext& context) const;
  grpc::Status generate(grpc::ServerContext& context, const v1::GenerateRequest& request,
                        grpc::ServerWriter<v1::GenerateResponse>& writer);
  grpc::Status relay(Call& call, grpc::ServerContext& context, grpc::ServerWriter<v1::GenerateResponse>& writer);
  grpc::Status tokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse& response) const;
  std::string next_request_id();
  uint64_t next_seed();

  EngineLoop& loop_;
  const ServiceConfig config_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint64_t> calls_{0};  // numbers the request ids the server assigns
  std::atomic<uint64_t> seeds_{0};  // numbers the seeds of requests that set none
  const uint64_t seed_base_;
};

}  // namespace latte::server
