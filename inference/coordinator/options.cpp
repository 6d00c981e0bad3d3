#include "inference/coordinator/options.h"

#include <cctype>
#include <set>

#include "inference/coordinator/coordinator_error.h"

namespace latte::coordinator {
namespace {

[[noreturn]] void bad(const std::string& message) {
  throw CoordinatorError(CoordinatorError::Kind::invalid_argument, message);
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 5) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

void require_range(int64_t value, int64_t lo, int64_t hi, const std::string& name) {
  if (value < lo || value > hi)
    bad(name + " is " + std::to_string(value) + ", must be in [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "]");
}

}  // namespace

std::string normalize_address(const std::string& address, int min_port, const std::string& what) {
  if (address.rfind("unix:", 0) == 0) {
    if (address.size() == 5) bad(what + " '" + address + "' has no socket path after unix:");
    return address;
  }
  std::string host, port;
  if (all_digits(address)) {
    host = "127.0.0.1";
    port = address;
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0)
      bad(what + " '" + address + "' is not host:port, [ipv6]:port, a port number or unix:/path");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    // An IPv6 literal must be bracketed, otherwise its last group would be read as the port.
    if (host.find(':') != std::string::npos && (host.front() != '[' || host.back() != ']'))
      bad(what + " '" + address + "': write an IPv6 host in brackets, e.g. [::1]:50051");
  }
  if (!all_digits(port) || std::stoi(port) < min_port || std::stoi(port) > 65535)
    bad(what + " '" + address + "' has port '" + port + "', expected a number in [" + std::to_string(min_port) +
        ", 65535]");
  return host + ":" + port;
}

void validate(const CoordinatorOptions& o) {
  normalize_address(o.listen, 0, "--listen");
  if (o.shards.empty()) bad("no shard group: give at least one --shard ADDR");
  std::set<std::string> seen;
  for (const std::string& s : o.shards) {
    const std::string a = normalize_address(s, 1, "--shard");
    if (!seen.insert(a).second) bad("--shard " + a + " is given twice");
  }
  require_range(o.health_interval_ms, 10, 3'600'000, "--health-interval-ms");
  require_range(o.health_timeout_ms, 10, 600'000, "--health-timeout-ms");
  require_range(o.dead_after_failed_checks, 1, 1'000'000, "dead_after_failed_checks");
  if (o.tls_cert_pem.empty() != o.tls_key_pem.empty())
    bad("TLS needs both a certificate and a private key (--tls-cert and --tls-key)");
  require_range(o.max_concurrent_streams, 0, 1'000'000, "--max-concurrent-streams");
  require_range(o.max_group_outstanding_tokens, 0, int64_t(1) << 40, "--max-group-outstanding-tokens");
  require_range(o.max_message_bytes, 1024, 1 << 30, "--max-message-bytes");
  require_range(o.affinity_prefix_tokens, 0, 1 << 20, "--affinity-prefix-tokens");
  require_range(o.affinity_margin_tokens, 0, int64_t(1) << 40, "--affinity-margin-tokens");
  require_range(o.default_max_new_tokens, 1, 1 << 24, "--default-max-new-tokens");
  require_range(o.shutdown_grace_ms, 0, 600'000, "shutdown_grace_ms");
  for (char c : o.auth_token + o.shard_auth_token)
    if (std::isspace(static_cast<unsigned char>(c)) || !std::isprint(static_cast<unsigned char>(c)))
      bad("a bearer token may contain only printable characters without spaces");
}

}  // namespace latte::coordinator
