#include "inference/server/inference_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "core/base/error.h"
#include "inference/engine/chat_template.h"
#include "inference/server/model_info.h"

namespace latte::server {

const char* const kInferenceServiceName = "latte.v1.Inference";

namespace {

EngineLoopOptions loop_options(const ServerOptions& o) {
  EngineLoopOptions l;
  l.max_requests = o.limits.max_queued_requests;
  l.ping_interval_s = o.ping_interval_s;
  l.thread_init = o.engine_thread_init;
  return l;
}

ServiceConfig service_config(const Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
                             const ServerOptions& o) {
  ServiceConfig c;
  c.model = {&config, tokenizer, tokenizer && has_chatml_tokens(*tokenizer)};
  c.info = describe_model(o.model_name, config, tokenizer, engine, o.tp_size);
  c.limits = o.limits;
  c.auth_token = o.auth_token;
  c.poll_interval = o.poll_interval;
  return c;
}

std::shared_ptr<grpc::ServerCredentials> credentials(const ServerOptions& o) {
  LATTE_REQUIRE(o.tls_cert_pem.empty() == o.tls_key_pem.empty(), ErrorCode::invalid_argument,
                "TLS needs both a certificate and its private key (got only the ",
                o.tls_cert_pem.empty() ? "key" : "certificate", ")");
  if (o.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({o.tls_key_pem, o.tls_cert_pem});
  return grpc::SslServerCredentials(ssl);
}

// The address as bound: a requested port 0 replaced by the one the system picked.
std::string bound_address(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || listen.substr(colon + 1) != "0") return listen;
  return listen.substr(0, colon + 1) + std::to_string(port);
}

void check_limits(const ServerLimits& l) {
  LATTE_REQUIRE(l.max_message_bytes >= 1024 && l.max_message_bytes <= INT32_MAX, ErrorCode::invalid_argument,
                "max message bytes must be in [1024, 2^31 - 1], got ", l.max_message_bytes);
  LATTE_REQUIRE(l.max_prompt_tokens >= 0 && l.max_new_tokens >= 0, ErrorCode::invalid_argument,
                "max prompt tokens and max new tokens must be >= 0 (0: the context length)");
  LATTE_REQUIRE(l.default_max_new_tokens >= 1, ErrorCode::invalid_argument,
                "the default max new tokens must be at least 1, got ", l.default_max_new_tokens);
  LATTE_REQUIRE(l.max_queued_requests >= 1, ErrorCode::invalid_argument,
                "max queued requests must be at least 1, got ", l.max_queued_requests);
}

}  // namespace

InferenceServer::InferenceServer(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
                                 ServerOptions options)
    : options_((check_limits(options.limits), std::move(options))),
      loop_(engine, loop_options(options_)),
      service_(loop_, service_config(engine, config, tokenizer, options_)) {
  // Both are process-wide switches that the builder reads when it builds the server.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials(options_), &port_);
  builder.SetMaxReceiveMessageSize(int(options_.limits.max_message_bytes));
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a port already in use and
  // silently take half its connections; a shard must own its port or fail.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    loop_.stop();
    fail(ErrorCode::io, "cannot listen on ", options_.listen,
         options_.tls_cert_pem.empty() ? "" : " with TLS (is the certificate and key pair valid?)",
         ": the address is in use, not an address of this host, or malformed (gRPC's log above says which)");
  }
  address_ = bound_address(options_.listen, port_);
  set_serving(true);
}

InferenceServer::~InferenceServer() { shutdown(std::chrono::seconds(1)); }

void InferenceServer::set_serving(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kInferenceServiceName, serving);
}

void InferenceServer::begin_shutdown() {
  std::lock_guard<std::mutex> lock(shutdown_mutex_);
  if (shutdown_begun_) return;
  shutdown_begun_ = true;
  set_serving(false);
  service_.begin_shutdown();
  loop_.stop();  // ends every open stream with UNAVAILABLE and joins the engine thread
}

void InferenceServer::shutdown(std::chrono::milliseconds grace) {
  begin_shutdown();
  std::lock_guard<std::mutex> lock(shutdown_mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
}

}  // namespace latte::server
