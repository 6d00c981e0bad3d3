// Helpers of the coordinator tests: a coordinator on 127.0.0.1:0 in front of scripted shards,
// clients, and waiting for a condition with a deadline (nothing here waits unboundedly).
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/coordinator/coordinator_server.h"
#include "latte/v1/inference.grpc.pb.h"
#include "tests/unit/coordinator/shard/scripted_shard.h"

namespace latte::test {

using coordinator::CoordinatorOptions;
using coordinator::CoordinatorServer;
using grpc::health::v1::HealthCheckResponse;
using latte::v1::GenerateRequest;
using latte::v1::GenerateResponse;

// Fast health checks so that tests see health changes within a second; affinity off so that
// routing is by load alone unless a test turns it on.
inline CoordinatorOptions test_options(const std::vector<ScriptedShard*>& shards) {
  CoordinatorOptions o;
  o.listen = "127.0.0.1:0";
  for (ScriptedShard* s : shards) o.shards.push_back(s->address());
  o.health_interval_ms = 100;
  o.health_timeout_ms = 1000;
  o.affinity_prefix_tokens = 0;
  o.shutdown_grace_ms = 200;
  return o;
}

inline std::unique_ptr<CoordinatorServer> start_coordinator(CoordinatorOptions o) {
  auto c = std::make_unique<CoordinatorServer>(std::move(o));
  c->start();
  return c;
}

inline std::unique_ptr<latte::v1::Inference::Stub> client(const std::string& address) {
  return latte::v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

inline bool wait_until(const std::function<bool()>& condition, int timeout_ms = 10000) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

inline GenerateRequest token_request(int prompt_tokens, int max_new_tokens, int first_id = 1) {
  GenerateRequest r;
  for (int i = 0; i < prompt_tokens; ++i) r.mutable_token_ids()->add_ids(first_id + i);
  r.set_max_new_tokens(max_new_tokens);
  return r;
}

struct StreamResult {
  std::vector<GenerateResponse> messages;
  grpc::Status status;
};

inline void set_deadline_ms(grpc::ClientContext& ctx, int ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// A whole Generate call; every test call has a deadline so that a hung relay fails the test.
inline StreamResult generate(latte::v1::Inference::Stub& stub, const GenerateRequest& request,
                             const std::string& token = "", int deadline_ms = 20000) {
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, deadline_ms);
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  StreamResult r;
  auto reader = stub.Generate(&ctx, request);
  GenerateResponse m;
  while (reader->Read(&m)) r.messages.push_back(m);
  r.status = reader->Finish();
  return r;
}

// A Generate call kept open: read its first message, then cancel it or read the rest.
class OpenStream {
 public:
  OpenStream(latte::v1::Inference::Stub& stub, const GenerateRequest& request, int deadline_ms = 20000) {
    set_deadline_ms(ctx_, deadline_ms);
    reader_ = stub.Generate(&ctx_, request);
  }
  ~OpenStream() {
    if (!finished_) {
      ctx_.TryCancel();
      finish();
    }
  }
  bool read(GenerateResponse* m) { return reader_->Read(m); }
  void cancel() { ctx_.TryCancel(); }
  grpc::Status finish() {
    GenerateResponse m;
    while (reader_->Read(&m)) {
    }
    finished_ = true;
    return reader_->Finish();
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<GenerateResponse>> reader_;
  bool finished_ = false;
};

// The coordinator's (or any server's) health for a service; NOT_FOUND and errors as a status.
struct HealthAnswer {
  grpc::Status status;
  HealthCheckResponse::ServingStatus serving = HealthCheckResponse::UNKNOWN;
};

inline HealthAnswer health(const std::string& address, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 5000);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  HealthCheckResponse resp;
  HealthAnswer a;
  a.status = stub->Check(&ctx, req, &resp);
  a.serving = resp.status();
  return a;
}

inline bool is_serving(const std::string& address, const std::string& service) {
  const HealthAnswer a = health(address, service);
  return a.status.ok() && a.serving == HealthCheckResponse::SERVING;
}

inline bool is_not_serving(const std::string& address, const std::string& service) {
  const HealthAnswer a = health(address, service);
  return a.status.ok() && a.serving == HealthCheckResponse::NOT_SERVING;
}

inline std::string group_health(const ScriptedShard& shard) {
  return CoordinatorServer::health_service_name(shard.address());
}

inline latte::v1::StatsResponse stats(latte::v1::Inference::Stub& stub, grpc::Status* status = nullptr) {
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 5000);
  latte::v1::StatsResponse r;
  const grpc::Status s = stub.Stats(&ctx, latte::v1::StatsRequest(), &r);
  if (status) *status = s;
  EXPECT_TRUE(s.ok()) << s.error_message();
  return r;
}

inline std::vector<int> token_ids(const StreamResult& r) {
  std::vector<int> ids;
  for (const auto& m : r.messages)
    for (int id : m.token_ids()) ids.push_back(id);
  return ids;
}

}  // namespace latte::test
