// A running coordinator: the gRPC listener with latte.v1.Inference, grpc.health.v1 and server
// reflection, plus the health monitor of the shard groups.
//
// Health it reports: service "" and "latte.v1.Inference" are SERVING while at least one group is
// healthy; "shard:<address>" is each group's own state (address as normalize_address writes it).
#pragma once
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "inference/coordinator/coordinator_service.h"
#include "inference/coordinator/health_monitor.h"

namespace latte::coordinator {

class CoordinatorServer {
 public:
  // Validates the options (CoordinatorError naming the bad one); starts nothing.
  explicit CoordinatorServer(CoordinatorOptions options);
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // Runs one health round, binds the listener and starts the monitor. CoordinatorError (startup)
  // when the address cannot be bound or the TLS pair is unusable.
  void start();
  // Stops taking calls, gives calls in flight shutdown_grace_ms, then cancels them. Idempotent.
  void shutdown();

  // The bound address, with the port chosen for port 0 ("127.0.0.1:43121").
  const std::string& address() const { return address_; }
  size_t group_count() const { return state_.groups.size(); }
  size_t healthy_group_count();

  static std::string health_service_name(const std::string& group_address) { return "shard:" + group_address; }

 private:
  void publish_health();

  CoordinatorState state_;
  CoordinatorService service_;
  HealthMonitor monitor_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::mutex publish_mu_;
  bool stopped_ = false;
};

}  // namespace latte::coordinator
