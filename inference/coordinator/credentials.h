// TLS and bearer tokens: the listener's credentials, the shard channels' credentials, and the
// per-call token check.
#pragma once
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "inference/coordinator/options.h"

namespace latte::coordinator {

// The whole file; CoordinatorError (io) naming the file and the reason when it cannot be read.
std::string read_file(const std::string& path, const std::string& what);
// A token file: its content without surrounding whitespace (editors add a final newline);
// CoordinatorError when empty.
std::string read_token_file(const std::string& path, const std::string& what);

std::shared_ptr<grpc::ServerCredentials> listener_credentials(const CoordinatorOptions& options);
std::shared_ptr<grpc::ChannelCredentials> shard_channel_credentials(const CoordinatorOptions& options);
grpc::ChannelArguments shard_channel_arguments(const CoordinatorOptions& options);

// OK when no token is required or the call carries "authorization: Bearer <token>";
// UNAUTHENTICATED otherwise, saying what was wrong (never echoing what was sent).
grpc::Status check_bearer(const grpc::ServerContextBase& context, const std::string& token);

// What to send upstream as "authorization": the shard token, or else the client's own header.
std::string upstream_authorization(const grpc::ServerContextBase& context, const CoordinatorOptions& options);

}  // namespace latte::coordinator
