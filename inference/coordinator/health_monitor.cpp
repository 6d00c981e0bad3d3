#include "inference/coordinator/health_monitor.h"

#include <chrono>
#include <memory>
#include <vector>

#include "inference/coordinator/upstream_status.h"

namespace latte::coordinator {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

struct Probe {
  grpc::ClientContext context;
  HealthCheckRequest request;  // service "": the server as a whole
  HealthCheckResponse response;
  grpc::Status status;
};

// Why a probe does not count as SERVING; empty when it does.
std::string failure(const Probe& p) {
  if (p.status.error_code() == grpc::StatusCode::UNIMPLEMENTED)
    return "health check: the server does not implement grpc.health.v1.Health";
  if (!p.status.ok())
    return std::string("health check: ") + code_name(p.status.error_code()) + ": " + p.status.error_message();
  if (p.response.status() != HealthCheckResponse::SERVING)
    return "health check: " + HealthCheckResponse::ServingStatus_Name(p.response.status());
  return "";
}

}  // namespace

HealthMonitor::HealthMonitor(ShardGroups& groups, const CoordinatorOptions& options)
    : groups_(groups), options_(options) {}

HealthMonitor::~HealthMonitor() { stop(); }

void HealthMonitor::check_all() {
  std::vector<std::unique_ptr<Probe>> probes;
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t pending = groups_.size();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(options_.health_timeout_ms);
  for (size_t i = 0; i < groups_.size(); ++i) {
    probes.push_back(std::make_unique<Probe>());
    Probe* p = probes.back().get();
    p->context.set_deadline(deadline);
    if (!options_.shard_auth_token.empty())
      p->context.AddMetadata("authorization", "Bearer " + options_.shard_auth_token);
    groups_.at(i).health().async()->Check(&p->context, &p->request, &p->response, [&, p](grpc::Status s) {
      p->status = std::move(s);
      std::lock_guard lock(done_mu);
      if (--pending == 0) done_cv.notify_all();
    });
  }
  {
    std::unique_lock lock(done_mu);
    done_cv.wait(lock, [&] { return pending == 0; });
  }
  bool changed = false;
  for (size_t i = 0; i < groups_.size(); ++i) {
    ShardGroup& g = groups_.at(i);
    const std::string why = failure(*probes[i]);
    if (why.empty()) {
      if (g.record_check_ok()) {
        changed = true;
        groups_.log("shard group " + g.address() + " is SERVING");
      }
      continue;
    }
    if (g.record_check_failed(why)) {
      changed = true;
      groups_.log("shard group " + g.address() + " is NOT_SERVING: " + why);
    }
    const int failed = g.consecutive_failed_checks();
    if (failed >= options_.dead_after_failed_checks) {
      const int cut = g.abort_all("shard group " + g.address() + " failed " + std::to_string(failed) +
                                  " health checks in a row (" + why + ")");
      if (cut > 0) groups_.log("cut off " + std::to_string(cut) + " calls on shard group " + g.address());
    }
  }
  if (changed) groups_.health_changed();
}

void HealthMonitor::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void HealthMonitor::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HealthMonitor::run() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (wake_.wait_for(lock, std::chrono::milliseconds(options_.health_interval_ms), [this] { return stopping_; }))
        return;
    }
    check_all();
  }
}

}  // namespace latte::coordinator
