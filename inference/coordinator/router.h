// The routing policy, as a pure function of what each group looks like right now: the least
// outstanding tokens wins, unless the prompt's preferred group (prefix affinity) is within a
// margin of it. ShardGroups takes the snapshots and books the chosen group.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

namespace latte::coordinator {

struct GroupView {
  std::string address;
  bool healthy = false;
  std::string unhealthy_reason;   // why not healthy, for the refusal message
  std::string excluded_reason;    // non-empty: this request already failed there
  int64_t outstanding_tokens = 0;
  int in_flight = 0;
};

struct RoutePolicy {
  int64_t max_group_outstanding_tokens = 0;  // 0: no limit
  int64_t affinity_margin_tokens = 0;
};

struct RouteDecision {
  int group = -1;           // index into the views; -1: refused
  bool by_affinity = false;  // the preferred group won over a less loaded one or a tie
  grpc::Status refusal;      // when group is -1: UNAVAILABLE or RESOURCE_EXHAUSTED naming every group
};

// rotation breaks ties between equally loaded groups (a counter the caller increments), so that
// idle groups take turns instead of the first one taking everything.
RouteDecision choose_group(const std::vector<GroupView>& groups, int64_t cost, std::optional<uint64_t> affinity_key,
                           const RoutePolicy& policy, uint64_t rotation);

}  // namespace latte::coordinator
