#include "inference/coordinator/shard_groups.h"

#include <algorithm>

#include "inference/coordinator/credentials.h"

namespace latte::coordinator {

LoadLease::LoadLease(ShardGroup* group, int64_t tokens) : group_(group), remaining_(tokens) {
  group_->book(tokens);
}

LoadLease::LoadLease(LoadLease&& other) noexcept : group_(other.group_), remaining_(other.remaining_) {
  other.group_ = nullptr;
}

LoadLease& LoadLease::operator=(LoadLease&& other) noexcept {
  if (this != &other) {
    release();
    group_ = other.group_;
    remaining_ = other.remaining_;
    other.group_ = nullptr;
  }
  return *this;
}

void LoadLease::consume(int64_t generated_tokens) {
  if (!group_) return;
  const int64_t n = std::min(std::max<int64_t>(generated_tokens, 0), remaining_);
  remaining_ -= n;
  group_->unbook(n, false);
}

void LoadLease::release() {
  if (!group_) return;
  group_->unbook(remaining_, true);
  group_ = nullptr;
  remaining_ = 0;
}

ShardGroups::ShardGroups(const CoordinatorOptions& options) : options_(options) {
  const auto creds = shard_channel_credentials(options);
  for (const std::string& s : options.shards) {
    const std::string address = normalize_address(s, 1, "--shard");
    groups_.push_back(std::make_unique<ShardGroup>(
        address, grpc::CreateCustomChannel(address, creds, shard_channel_arguments(options))));
  }
}

Pick ShardGroups::pick(int64_t cost, std::optional<uint64_t> affinity_key, const std::vector<Tried>& tried) {
  std::lock_guard lock(route_mu_);
  std::vector<GroupView> views;
  views.reserve(groups_.size());
  for (const auto& g : groups_) {
    views.push_back(g->view());
    for (const Tried& t : tried)
      if (t.group == g.get()) views.back().excluded_reason = t.reason;
  }
  RoutePolicy policy;
  policy.max_group_outstanding_tokens = options_.max_group_outstanding_tokens;
  policy.affinity_margin_tokens = options_.affinity_margin_tokens;
  const RouteDecision d = choose_group(views, cost, affinity_key, policy, rotation_++);
  Pick p;
  if (d.group < 0) {
    p.refusal = d.refusal;
    return p;
  }
  p.group = groups_[size_t(d.group)].get();
  p.lease = LoadLease(p.group, cost);
  return p;
}

bool ShardGroups::any_healthy() const {
  return std::any_of(groups_.begin(), groups_.end(), [](const auto& g) { return g->healthy(); });
}

void ShardGroups::report_down(ShardGroup& group, const std::string& why) {
  if (!group.record_call_failed(why)) return;
  log("shard group " + group.address() + " is NOT_SERVING: " + why);
  health_changed();
}

void ShardGroups::set_health_listener(std::function<void()> listener) {
  std::lock_guard lock(listener_mu_);
  listener_ = std::move(listener);
}

void ShardGroups::health_changed() {
  std::function<void()> listener;
  {
    std::lock_guard lock(listener_mu_);
    listener = listener_;
  }
  if (listener) listener();
}

void ShardGroups::log(const std::string& line) const {
  if (options_.log) options_.log("latte coordinator: " + line);
}

}  // namespace latte::coordinator
