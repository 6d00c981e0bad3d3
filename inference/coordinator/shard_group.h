// One shard group as the coordinator sees it: its channel, its health, its load and the calls in
// flight on it. Thread-safe; every method takes the group's own lock briefly and never calls gRPC
// while holding it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/coordinator/router.h"
#include "latte/v1/inference.grpc.pb.h"

namespace latte::coordinator {

// A call in flight on a group, cut off when the group is declared dead: a host that vanished
// does not close its connections, and its streams would otherwise wait forever.
class Abortable {
 public:
  virtual void abort(const std::string& why) = 0;

 protected:
  ~Abortable() = default;
};

// Counters and state of one group, for Stats.
struct GroupSnapshot {
  std::string address;
  bool healthy = false;
  std::string unhealthy_reason;
  int consecutive_failed_checks = 0;
  int64_t outstanding_tokens = 0;
  int in_flight = 0;
  int64_t requests_routed = 0;
  int64_t requests_failed = 0;
};

class ShardGroup {
 public:
  ShardGroup(std::string address, const std::shared_ptr<grpc::Channel>& channel);

  const std::string& address() const { return address_; }
  latte::v1::Inference::Stub& inference() { return *inference_; }
  grpc::health::v1::Health::Stub& health() { return *health_; }

  // Health transitions; each returns true when the healthy flag changed (or, for the checks, on
  // the first check, so that the starting state is announced too).
  bool record_check_ok();
  bool record_check_failed(const std::string& why);
  // A call on the group failed in a way that says the group is down (UNAVAILABLE): stop routing
  // to it now rather than at the next health check, which alone re-admits it.
  bool record_call_failed(const std::string& why);
  int consecutive_failed_checks() const;
  bool healthy() const;

  // Load booked by LoadLease (shard_groups.h).
  void book(int64_t tokens);
  void unbook(int64_t tokens, bool request_done);
  void count_failed();

  // Calls in flight (weakly held: a finished call is simply gone).
  void track(Abortable* key, std::weak_ptr<Abortable> call);
  void untrack(Abortable* key);
  // Aborts every tracked call; the calls run their own completion (and retries) afterwards.
  int abort_all(const std::string& why);

  GroupView view() const;
  GroupSnapshot snapshot() const;

 private:
  const std::string address_;
  std::unique_ptr<latte::v1::Inference::Stub> inference_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;

  mutable std::mutex mu_;
  bool healthy_ = false;  // until the first health check says otherwise
  bool checked_ = false;
  std::string unhealthy_reason_ = "no health check yet";
  int consecutive_failed_checks_ = 0;
  int64_t outstanding_tokens_ = 0;
  int in_flight_ = 0;
  int64_t routed_ = 0, failed_ = 0;
  std::map<Abortable*, std::weak_ptr<Abortable>> calls_;
};

}  // namespace latte::coordinator
