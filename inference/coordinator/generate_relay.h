// One client's Generate call, relayed to a shard group: the upstream stream's messages are written
// to the client one at a time (the next upstream read starts when the client has taken the last
// message, so a slow client slows its shard stream instead of filling memory). A request the
// shard refused or lost before any message reached the client is retried on another group.
//
// Lifetime: gRPC owns the reactor until OnDone; each upstream attempt holds the relay too, so the
// relay is freed when the client call and every attempt are over. No gRPC operation is started
// while the relay's lock is held: gRPC may run a reaction on the calling thread.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "inference/coordinator/coordinator_state.h"
#include "latte/v1/inference.pb.h"

namespace latte::coordinator {

class UpstreamGenerate;

class GenerateRelay : public grpc::ServerWriteReactor<latte::v1::GenerateResponse>,
                      public std::enable_shared_from_this<GenerateRelay> {
 public:
  // The reactor for the call; it has already finished the call when the request is refused.
  static grpc::ServerWriteReactor<latte::v1::GenerateResponse>* start(grpc::CallbackServerContext* context,
                                                                      const latte::v1::GenerateRequest* request,
                                                                      CoordinatorState& state);
  ~GenerateRelay() override;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // From the current upstream attempt's reactions.
  void on_upstream_read(UpstreamGenerate* attempt, bool ok);
  void on_upstream_done(UpstreamGenerate* attempt, const grpc::Status& status);

 private:
  GenerateRelay(grpc::CallbackServerContext* context, const latte::v1::GenerateRequest* request,
                CoordinatorState& state);

  // A new attempt on the best group not yet tried, or nullptr with *refusal set.
  std::shared_ptr<UpstreamGenerate> next_attempt(grpc::Status* refusal);  // caller holds mu_
  void launch(const std::shared_ptr<UpstreamGenerate>& attempt);
  // Finish now, or after the write in flight (caller holds mu_); true: call Finish now.
  bool finish_locked(grpc::Status status);

  grpc::CallbackServerContext* const context_;
  const latte::v1::GenerateRequest* const request_;
  CoordinatorState& state_;
  StreamSlot slot_;
  const int64_t cost_;
  const std::optional<uint64_t> affinity_key_;
  const std::string authorization_;
  std::shared_ptr<GenerateRelay> self_;  // gRPC's reference, dropped in OnDone

  std::mutex mu_;
  std::shared_ptr<UpstreamGenerate> current_;
  std::vector<Tried> tried_;
  bool all_tried_exhausted_ = true;  // every failed attempt said RESOURCE_EXHAUSTED
  bool client_cancelled_ = false;
  bool client_broken_ = false;  // a write to the client failed
  bool write_pending_ = false;
  std::optional<grpc::Status> pending_finish_;
  int relayed_ = 0;
  latte::v1::GenerateResponse out_;
  // A final message without tokens is held back until the upstream status is known: if that
  // status is retried elsewhere, the client must not have seen a final message already.
  std::optional<latte::v1::GenerateResponse> held_;
};

}  // namespace latte::coordinator
