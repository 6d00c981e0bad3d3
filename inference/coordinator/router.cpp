#include "inference/coordinator/router.h"

#include "inference/coordinator/prefix_affinity.h"

namespace latte::coordinator {
namespace {

bool fits(const GroupView& g, int64_t cost, const RoutePolicy& policy) {
  return policy.max_group_outstanding_tokens <= 0 || g.outstanding_tokens + cost <= policy.max_group_outstanding_tokens;
}

bool less_loaded(const GroupView& a, const GroupView& b) {
  if (a.outstanding_tokens != b.outstanding_tokens) return a.outstanding_tokens < b.outstanding_tokens;
  return a.in_flight < b.in_flight;
}

// Every group and why it cannot take the request: the message an operator needs to act on.
grpc::Status refusal(const std::vector<GroupView>& groups, int64_t cost, const RoutePolicy& policy) {
  std::string why;
  bool any_full = false;
  for (const GroupView& g : groups) {
    why += why.empty() ? "" : "; ";
    why += g.address + ": ";
    if (!g.excluded_reason.empty()) {
      why += g.excluded_reason;
    } else if (!g.healthy) {
      why += "not serving (" + (g.unhealthy_reason.empty() ? std::string("no health check yet") : g.unhealthy_reason) +
             ")";
    } else {
      any_full = true;
      why += "full (" + std::to_string(g.outstanding_tokens) + " outstanding + " + std::to_string(cost) +
             " tokens > limit " + std::to_string(policy.max_group_outstanding_tokens) + ")";
    }
  }
  const std::string head = "no shard group can take the request (" + std::to_string(groups.size()) + " groups): ";
  return grpc::Status(any_full ? grpc::StatusCode::RESOURCE_EXHAUSTED : grpc::StatusCode::UNAVAILABLE, head + why);
}

}  // namespace

RouteDecision choose_group(const std::vector<GroupView>& groups, int64_t cost, std::optional<uint64_t> affinity_key,
                           const RoutePolicy& policy, uint64_t rotation) {
  RouteDecision d;
  const size_t n = groups.size();
  int least = -1, preferred = -1;
  uint64_t best_weight = 0;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (rotation + k) % (n ? n : 1);
    const GroupView& g = groups[i];
    if (!g.healthy || !g.excluded_reason.empty() || !fits(g, cost, policy)) continue;
    if (least < 0 || less_loaded(g, groups[size_t(least)])) least = int(i);
    if (affinity_key) {
      const uint64_t w = affinity_weight(*affinity_key, g.address);
      if (preferred < 0 || w > best_weight) preferred = int(i), best_weight = w;
    }
  }
  if (least < 0) {
    d.refusal = refusal(groups, cost, policy);
    return d;
  }
  d.group = least;
  if (preferred >= 0 && groups[size_t(preferred)].outstanding_tokens <=
                            groups[size_t(least)].outstanding_tokens + policy.affinity_margin_tokens) {
    d.group = preferred;
    d.by_affinity = true;
  }
  return d;
}

}  // namespace latte::coordinator
