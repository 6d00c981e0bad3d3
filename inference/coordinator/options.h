// Everything a coordinator is started with. Secrets and certificates are held as their contents
// (the CLI reads the files), so tests and embedders need no files.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace latte::coordinator {

struct CoordinatorOptions {
  // Where clients connect: "host:port", "[v6]:port", a bare "port" (= 127.0.0.1:port, the default
  // host, so that nothing is exposed beyond this machine by accident), or "unix:/path". Port 0
  // picks a free port (CoordinatorServer::address() says which).
  std::string listen = "127.0.0.1:0";
  // One latte.v1.Inference address per shard group (a group's rank-0 `latte shard` listener).
  std::vector<std::string> shards;

  // grpc.health.v1.Health/Check of every group, every health_interval_ms, each probe given
  // health_timeout_ms. A group that fails dead_after_failed_checks probes in a row has its
  // in-flight calls cancelled (its host may be gone without closing the connections).
  int health_interval_ms = 1000;
  int health_timeout_ms = 1000;
  int dead_after_failed_checks = 3;

  // TLS on the client listener: PEM certificate chain and private key (both or neither).
  std::string tls_cert_pem, tls_key_pem;
  // TLS to the shards: PEM root certificates to verify them with (empty: plaintext).
  std::string shard_tls_ca_pem;
  // Clients must send "authorization: Bearer <auth_token>" (empty: no check).
  std::string auth_token;
  // Sent to the shards as their bearer token; empty: the client's authorization header is
  // forwarded as it came.
  std::string shard_auth_token;

  // Generate streams in flight at once; one more is RESOURCE_EXHAUSTED (0: no limit).
  int max_concurrent_streams = 256;
  // A group is not given a request that would take its outstanding tokens past this (0: no
  // limit); when every healthy group is full the request is RESOURCE_EXHAUSTED.
  int64_t max_group_outstanding_tokens = 0;
  // Largest message received or sent, on the listener and to the shards.
  int max_message_bytes = 4 << 20;

  // Prefix affinity: prompts whose first affinity_prefix_tokens tokens agree (for text prompts,
  // 4 bytes per token: the coordinator has no tokenizer) prefer the same group, so that its
  // prefix cache is hit, unless that group carries affinity_margin_tokens more outstanding
  // tokens than the least loaded one. 0 turns affinity off.
  int affinity_prefix_tokens = 32;
  int64_t affinity_margin_tokens = 512;
  // The cost of a request without max_new_tokens, which the shard replaces by its own default.
  int default_max_new_tokens = 256;

  // On shutdown, in-flight calls get this long to end before they are cancelled.
  int shutdown_grace_ms = 5000;

  // One line per event worth an operator's attention (a group going down or coming back).
  // Empty: silent.
  std::function<void(const std::string&)> log;
};

// Throws CoordinatorError (invalid_argument) naming the first option that cannot work.
void validate(const CoordinatorOptions& o);

// "5000" -> "127.0.0.1:5000"; "host:port", "[v6]:port" and "unix:..." are kept. Throws
// CoordinatorError when the port is missing or out of range (min_port: 0 for a listener, 1 for a
// shard, which must be a real port).
std::string normalize_address(const std::string& address, int min_port, const std::string& what);

}  // namespace latte::coordinator
