// Stats of a coordinator: every healthy group is asked for its own Stats at once; the answer has
// one ShardGroupStats per group (health, load, its Stats or why they are missing) and, at the top,
// the sums over the groups that answered.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "inference/coordinator/coordinator_state.h"
#include "latte/v1/inference.pb.h"

namespace latte::coordinator {

class StatsFanout : public grpc::ServerUnaryReactor, public std::enable_shared_from_this<StatsFanout> {
 public:
  static grpc::ServerUnaryReactor* start(grpc::CallbackServerContext* context, latte::v1::StatsResponse* response,
                                         CoordinatorState& state);
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Probe {
    grpc::ClientContext context;
    latte::v1::StatsRequest request;
    latte::v1::StatsResponse response;
    grpc::Status status;
    bool asked = false;
  };

  StatsFanout(grpc::CallbackServerContext* context, latte::v1::StatsResponse* response, CoordinatorState& state);
  void ask_all();
  void on_probe_done();
  void answer();

  grpc::CallbackServerContext* const context_;
  latte::v1::StatsResponse* const response_;
  CoordinatorState& state_;
  std::vector<std::unique_ptr<Probe>> probes_;  // one per group, fixed once ask_all starts
  std::shared_ptr<StatsFanout> self_;

  std::mutex mu_;
  int pending_ = 0;
  bool asking_ = false;
  bool cancelled_ = false;
};

// Adds a group's counters into the totals (the top-level fields of the coordinator's answer).
void add_stats(latte::v1::StatsResponse& total, const latte::v1::StatsResponse& group);

}  // namespace latte::coordinator
