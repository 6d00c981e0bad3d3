#include "inference/coordinator/coordinator_server.h"

#include <chrono>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "inference/coordinator/coordinator_error.h"
#include "inference/coordinator/credentials.h"

namespace latte::coordinator {
namespace {

CoordinatorOptions validated(CoordinatorOptions o) {
  validate(o);
  return o;
}

}  // namespace

CoordinatorServer::CoordinatorServer(CoordinatorOptions options)
    : state_(validated(std::move(options))), service_(state_), monitor_(state_.groups, state_.options) {}

CoordinatorServer::~CoordinatorServer() { shutdown(); }

void CoordinatorServer::start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // The groups' state is known before the first client arrives: no request is refused for want
  // of a health check that simply has not run yet.
  monitor_.check_all();

  const std::string listen = normalize_address(state_.options.listen, 0, "--listen");
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, listener_credentials(state_.options), &port);
  // Without this a second process could bind the same port and take half of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(state_.options.max_message_bytes);
  builder.SetMaxSendMessageSize(state_.options.max_message_bytes);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  const bool unix_socket = listen.rfind("unix:", 0) == 0;
  if (!server_ || (!unix_socket && port == 0)) {
    server_.reset();
    throw CoordinatorError(CoordinatorError::Kind::startup,
                           "cannot listen on " + listen +
                               (state_.options.tls_cert_pem.empty()
                                    ? std::string(" (address in use, or not an address of this machine?)")
                                    : std::string(" (address in use, or the TLS certificate and key do not match?)")));
  }
  address_ = unix_socket ? listen : listen.substr(0, listen.rfind(':') + 1) + std::to_string(port);
  state_.groups.set_health_listener([this] { publish_health(); });
  publish_health();
  monitor_.start();
}

size_t CoordinatorServer::healthy_group_count() {
  size_t n = 0;
  for (size_t i = 0; i < state_.groups.size(); ++i) n += state_.groups.at(i).healthy() ? 1 : 0;
  return n;
}

void CoordinatorServer::publish_health() {
  std::lock_guard lock(publish_mu_);
  if (stopped_ || !server_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (!health) return;
  bool any = false;
  for (size_t i = 0; i < state_.groups.size(); ++i) {
    ShardGroup& g = state_.groups.at(i);
    const bool ok = g.healthy();
    any = any || ok;
    health->SetServingStatus(health_service_name(g.address()), ok);
  }
  health->SetServingStatus("", any);
  health->SetServingStatus("latte.v1.Inference", any);
}

void CoordinatorServer::shutdown() {
  {
    std::lock_guard lock(publish_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  state_.groups.set_health_listener(nullptr);
  monitor_.stop();
  if (!server_) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) health->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(state_.options.shutdown_grace_ms));
  server_->Wait();
}

}  // namespace latte::coordinator
