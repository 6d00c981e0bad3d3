// The coordinator's shard groups: one channel each, routing (pick + book, atomically) and the
// single place health changes are announced from.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "inference/coordinator/options.h"
#include "inference/coordinator/shard_group.h"

namespace latte::coordinator {

// Tokens booked on a group for one call: what is still outstanding shrinks as tokens are
// generated; the rest is given back when the lease ends.
class LoadLease {
 public:
  LoadLease() = default;
  LoadLease(ShardGroup* group, int64_t tokens);
  LoadLease(LoadLease&& other) noexcept;
  LoadLease& operator=(LoadLease&& other) noexcept;
  LoadLease(const LoadLease&) = delete;
  LoadLease& operator=(const LoadLease&) = delete;
  ~LoadLease() { release(); }

  void consume(int64_t generated_tokens);
  void release();
  ShardGroup* group() const { return group_; }

 private:
  ShardGroup* group_ = nullptr;
  int64_t remaining_ = 0;
};

// A group this request already failed on, and how (for the retry and the final message).
struct Tried {
  const ShardGroup* group;
  std::string reason;
};

struct Pick {
  ShardGroup* group = nullptr;  // null: refused
  LoadLease lease;
  grpc::Status refusal;
};

class ShardGroups {
 public:
  explicit ShardGroups(const CoordinatorOptions& options);

  size_t size() const { return groups_.size(); }
  ShardGroup& at(size_t i) { return *groups_[i]; }

  // Chooses a healthy group not in tried (router.h) and books cost tokens on it.
  Pick pick(int64_t cost, std::optional<uint64_t> affinity_key, const std::vector<Tried>& tried);
  bool any_healthy() const;

  // A failed call that says its group is down: stop routing there, announce it.
  void report_down(ShardGroup& group, const std::string& why);
  // Called (from the health monitor or report_down) after any group's healthy flag changed.
  void set_health_listener(std::function<void()> listener);
  void health_changed();

  void log(const std::string& line) const;

 private:
  const CoordinatorOptions& options_;
  std::vector<std::unique_ptr<ShardGroup>> groups_;
  std::mutex route_mu_;  // pick + book as one step, so two requests never both see an idle group
  uint64_t rotation_ = 0;
  std::mutex listener_mu_;
  std::function<void()> listener_;
};

}  // namespace latte::coordinator
