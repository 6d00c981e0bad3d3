#include "inference/coordinator/shard_group.h"

#include <vector>

namespace latte::coordinator {

ShardGroup::ShardGroup(std::string address, const std::shared_ptr<grpc::Channel>& channel)
    : address_(std::move(address)),
      inference_(latte::v1::Inference::NewStub(channel)),
      health_(grpc::health::v1::Health::NewStub(channel)) {}

bool ShardGroup::record_check_ok() {
  std::lock_guard lock(mu_);
  consecutive_failed_checks_ = 0;
  const bool changed = !healthy_ || !checked_;
  checked_ = true;
  healthy_ = true;
  unhealthy_reason_.clear();
  return changed;
}

bool ShardGroup::record_check_failed(const std::string& why) {
  std::lock_guard lock(mu_);
  ++consecutive_failed_checks_;
  const bool changed = healthy_ || !checked_;
  checked_ = true;
  healthy_ = false;
  unhealthy_reason_ = why;
  return changed;
}

bool ShardGroup::record_call_failed(const std::string& why) {
  std::lock_guard lock(mu_);
  const bool changed = healthy_;
  healthy_ = false;
  unhealthy_reason_ = why;
  return changed;
}

int ShardGroup::consecutive_failed_checks() const {
  std::lock_guard lock(mu_);
  return consecutive_failed_checks_;
}

bool ShardGroup::healthy() const {
  std::lock_guard lock(mu_);
  return healthy_;
}

void ShardGroup::book(int64_t tokens) {
  std::lock_guard lock(mu_);
  outstanding_tokens_ += tokens;
  ++in_flight_;
  ++routed_;
}

void ShardGroup::unbook(int64_t tokens, bool request_done) {
  std::lock_guard lock(mu_);
  outstanding_tokens_ -= tokens;
  if (request_done) --in_flight_;
}

void ShardGroup::count_failed() {
  std::lock_guard lock(mu_);
  ++failed_;
}

void ShardGroup::track(Abortable* key, std::weak_ptr<Abortable> call) {
  std::lock_guard lock(mu_);
  calls_[key] = std::move(call);
}

void ShardGroup::untrack(Abortable* key) {
  std::lock_guard lock(mu_);
  calls_.erase(key);
}

int ShardGroup::abort_all(const std::string& why) {
  std::vector<std::shared_ptr<Abortable>> live;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, weak] : calls_)
      if (auto call = weak.lock()) live.push_back(std::move(call));
  }
  // Outside the lock: cancelling may complete the call on this thread, which untracks it.
  for (auto& call : live) call->abort(why);
  return int(live.size());
}

GroupView ShardGroup::view() const {
  std::lock_guard lock(mu_);
  GroupView v;
  v.address = address_;
  v.healthy = healthy_;
  v.unhealthy_reason = unhealthy_reason_;
  v.outstanding_tokens = outstanding_tokens_;
  v.in_flight = in_flight_;
  return v;
}

GroupSnapshot ShardGroup::snapshot() const {
  std::lock_guard lock(mu_);
  GroupSnapshot s;
  s.address = address_;
  s.healthy = healthy_;
  s.unhealthy_reason = unhealthy_reason_;
  s.consecutive_failed_checks = consecutive_failed_checks_;
  s.outstanding_tokens = outstanding_tokens_;
  s.in_flight = in_flight_;
  s.requests_routed = routed_;
  s.requests_failed = failed_;
  return s;
}

}  // namespace latte::coordinator
