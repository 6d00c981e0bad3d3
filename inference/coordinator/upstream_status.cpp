#include "inference/coordinator/upstream_status.h"

namespace latte::coordinator {

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN_CODE";
  }
}

bool says_group_down(const UpstreamEnding& e) {
  const auto c = e.status.error_code();
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::CANCELLED;
}

bool retryable(const UpstreamEnding& e) {
  return e.messages_relayed == 0 &&
         (says_group_down(e) || e.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
}

std::string describe(const UpstreamEnding& e) {
  if (!e.abort_reason.empty()) return "cut off by the coordinator: " + e.abort_reason;
  std::string s = code_name(e.status.error_code());
  if (!e.status.error_message().empty()) s += ": " + e.status.error_message();
  return s;
}

grpc::Status client_status(const UpstreamEnding& e) {
  if (e.status.ok()) return e.status;
  if (says_group_down(e))
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "shard group " + e.group + " failed after " + std::to_string(e.messages_relayed) +
                            " streamed messages (" + describe(e) + "); the request was not retried because the " +
                            "client already received part of the output");
  return grpc::Status(e.status.error_code(), "shard group " + e.group + ": " + e.status.error_message());
}

}  // namespace latte::coordinator
