#include "inference/coordinator/credentials.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "inference/coordinator/coordinator_error.h"

namespace latte::coordinator {
namespace {

// Same time whatever the first differing byte: the comparison does not leak the token's prefix.
bool equal_constant_time(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string header(const grpc::ServerContextBase& context, const std::string& key) {
  const auto& md = context.client_metadata();
  const auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

}  // namespace

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw CoordinatorError(CoordinatorError::Kind::io,
                           "cannot read " + what + " '" + path + "': " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string read_token_file(const std::string& path, const std::string& what) {
  std::string token = read_file(path, what);
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  token.erase(token.begin(), std::find_if(token.begin(), token.end(), not_space));
  token.erase(std::find_if(token.rbegin(), token.rend(), not_space).base(), token.end());
  if (token.empty())
    throw CoordinatorError(CoordinatorError::Kind::invalid_argument, what + " '" + path + "' is empty");
  return token;
}

std::shared_ptr<grpc::ServerCredentials> listener_credentials(const CoordinatorOptions& options) {
  if (options.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
  return grpc::SslServerCredentials(ssl);
}

std::shared_ptr<grpc::ChannelCredentials> shard_channel_credentials(const CoordinatorOptions& options) {
  if (options.shard_tls_ca_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.shard_tls_ca_pem;
  return grpc::SslCredentials(ssl);
}

grpc::ChannelArguments shard_channel_arguments(const CoordinatorOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // gRPC's reconnect backoff grows to 120 s; a group restarted on its port would then stay
  // unreachable long after it is back. Capped near the health interval, it is re-admitted within
  // about two health checks.
  const int cap = std::clamp(options.health_interval_ms, 100, 10'000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(100, cap));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(100, cap));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, cap);
  // One subchannel pool per channel: a group's connection state is its own, never shared with
  // another channel to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return args;
}

grpc::Status check_bearer(const grpc::ServerContextBase& context, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const std::string got = header(context, "authorization");
  if (got.empty())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this coordinator requires a bearer token: send metadata 'authorization: Bearer <token>'");
  static const std::string kScheme = "Bearer ";
  if (got.size() <= kScheme.size() || !std::equal(kScheme.begin(), kScheme.end(), got.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
      }))
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata is not of the form 'Bearer <token>'");
  if (!equal_constant_time(got.substr(kScheme.size()), token))
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  return grpc::Status::OK;
}

std::string upstream_authorization(const grpc::ServerContextBase& context, const CoordinatorOptions& options) {
  if (!options.shard_auth_token.empty()) return "Bearer " + options.shard_auth_token;
  return header(context, "authorization");
}

}  // namespace latte::coordinator
