// Periodic grpc.health.v1.Health/Check of every shard group, all groups at once, on its own
// thread. A group is routed to while its last check said SERVING; a group that fails
// dead_after_failed_checks checks in a row has its in-flight calls cut off.
#pragma once
#include <condition_variable>
#include <mutex>
#include <thread>

#include "inference/coordinator/shard_groups.h"

namespace latte::coordinator {

class HealthMonitor {
 public:
  HealthMonitor(ShardGroups& groups, const CoordinatorOptions& options);
  ~HealthMonitor();

  // One round: blocks until every group answered or timed out, then applies the results.
  void check_all();
  // check_all every health interval on a thread, until stop().
  void start();
  void stop();

 private:
  void run();

  ShardGroups& groups_;
  const CoordinatorOptions& options_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace latte::coordinator
