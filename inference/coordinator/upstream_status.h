// What an upstream (shard) call's ending means for the coordinator: retry elsewhere, mark the
// group down, and which status the client gets.
#pragma once
#include <string>

#include <grpcpp/support/status.h>

namespace latte::coordinator {

// How an upstream call ended, with what the coordinator knows beyond the status.
struct UpstreamEnding {
  grpc::Status status;
  std::string group;         // the group's address
  int messages_relayed = 0;  // messages the client already received from this request
  std::string abort_reason;  // set when the coordinator cut the call off (group declared dead)
};

// The group is down or going down: UNAVAILABLE, or a CANCELLED the client did not ask for (the
// shard shutting down, or the coordinator cutting a dead group off).
bool says_group_down(const UpstreamEnding& e);

// Nothing reached the client and another group may well succeed: down, or RESOURCE_EXHAUSTED.
bool retryable(const UpstreamEnding& e);

// One line for logs, retry lists and messages: "UNAVAILABLE: connection reset".
std::string describe(const UpstreamEnding& e);

// The status the client gets for an upstream ending that is not retried. A group that went down
// mid-request is UNAVAILABLE naming the group and how far the request got; other codes pass
// through with the group named.
grpc::Status client_status(const UpstreamEnding& e);

const char* code_name(grpc::StatusCode code);

}  // namespace latte::coordinator
