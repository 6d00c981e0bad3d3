// latte coordinator: latte.v1.Inference in front of several shard groups (see
// inference/coordinator/README.md). Built only with gRPC.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "core/base/error.h"
#include "inference/coordinator/coordinator_error.h"
#include "inference/coordinator/coordinator_server.h"
#include "inference/coordinator/credentials.h"

namespace latte::cli {
namespace {

using coordinator::CoordinatorError;

struct CoordinatorArgs {
  coordinator::CoordinatorOptions options;
  std::string tls_cert, tls_key, shard_tls_ca, auth_token_file, shard_auth_token_file;
};

// The files named on the command line, read into the options (the library takes contents).
coordinator::CoordinatorOptions resolve_files(const CoordinatorArgs& a) {
  coordinator::CoordinatorOptions o = a.options;
  if (!a.tls_cert.empty()) o.tls_cert_pem = coordinator::read_file(a.tls_cert, "--tls-cert");
  if (!a.tls_key.empty()) o.tls_key_pem = coordinator::read_file(a.tls_key, "--tls-key");
  if (!a.shard_tls_ca.empty()) o.shard_tls_ca_pem = coordinator::read_file(a.shard_tls_ca, "--shard-tls-ca");
  if (!a.auth_token_file.empty()) o.auth_token = coordinator::read_token_file(a.auth_token_file, "--auth-token-file");
  if (!a.shard_auth_token_file.empty())
    o.shard_auth_token = coordinator::read_token_file(a.shard_auth_token_file, "--shard-auth-token-file");
  o.log = [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  };
  return o;
}

ErrorCode error_code_of(const CoordinatorError& e) {
  switch (e.kind()) {
    case CoordinatorError::Kind::invalid_argument: return ErrorCode::invalid_argument;
    case CoordinatorError::Kind::io:
    case CoordinatorError::Kind::startup: return ErrorCode::io;
  }
  return ErrorCode::internal;
}

// SIGINT/SIGTERM reach this thread through a pipe: a handler may run on any thread (OpenBLAS
// starts its threads before main, with the signals unblocked, so blocking them here and using
// sigwait would miss those), and writing a byte is all it may safely do.
int stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(stop_pipe[1], &b, 1);
}

void catch_stop_signals() {
  if (::pipe(stop_pipe) != 0) throw Error(ErrorCode::io, "cannot create the signal pipe");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int wait_for_stop_signal() {
  unsigned char b = SIGTERM;
  ssize_t n;
  do {
    n = ::read(stop_pipe[0], &b, 1);
  } while (n < 0 && errno == EINTR);
  return b;
}

void serve(const CoordinatorArgs& args) {
  catch_stop_signals();
  coordinator::CoordinatorServer server(resolve_files(args));
  server.start();
  std::printf("latte coordinator: serving on %s, %zu shard groups\n", server.address().c_str(), server.group_count());
  std::fflush(stdout);
  const int sig = wait_for_stop_signal();
  std::fprintf(stderr, "latte coordinator: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.shutdown();
}

}  // namespace

void add_coordinator(CLI::App& app) {
  auto a = std::make_shared<CoordinatorArgs>();
  coordinator::CoordinatorOptions& o = a->options;
  CLI::App* cmd = app.add_subcommand(
      "coordinator", "Serve latte.v1.Inference in front of shard groups (latte shard), routing each request to one");
  cmd->add_option("--listen", o.listen, "address for clients: host:port, or a port (binds 127.0.0.1)")->required();
  cmd->add_option("--shard", o.shards, "a shard group's address (its rank-0 latte shard); repeat for each group")
      ->required()
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--health-interval-ms", o.health_interval_ms, "health check of every group this often")
      ->capture_default_str();
  cmd->add_option("--health-timeout-ms", o.health_timeout_ms, "a health check (and a Stats call) may take this long")
      ->capture_default_str();
  cmd->add_option("--tls-cert", a->tls_cert, "PEM certificate chain: serve clients over TLS (with --tls-key)");
  cmd->add_option("--tls-key", a->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--shard-tls-ca", a->shard_tls_ca, "PEM root certificates: connect to the shards over TLS");
  cmd->add_option("--auth-token-file", a->auth_token_file,
                  "clients must send 'authorization: Bearer <the file's token>'");
  cmd->add_option("--shard-auth-token-file", a->shard_auth_token_file,
                  "bearer token for the shards (default: forward the client's authorization header)");
  cmd->add_option("--max-concurrent-streams", o.max_concurrent_streams,
                  "Generate streams relayed at once; more are RESOURCE_EXHAUSTED (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--max-group-outstanding-tokens", o.max_group_outstanding_tokens,
                  "outstanding tokens (prompt + max new) one group may be given (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--max-message-bytes", o.max_message_bytes, "largest gRPC message, in and out")->capture_default_str();
  cmd->add_option("--affinity-prefix-tokens", o.affinity_prefix_tokens,
                  "prompts sharing this many first tokens prefer one group (0: off)")
      ->capture_default_str();
  cmd->add_option("--affinity-margin-tokens", o.affinity_margin_tokens,
                  "how much busier than the least loaded group the preferred group may be")
      ->capture_default_str();
  cmd->add_option("--default-max-new-tokens", o.default_max_new_tokens,
                  "cost counted for a request without max_new_tokens")
      ->capture_default_str();
  cmd->add_option("--shutdown-grace-ms", o.shutdown_grace_ms, "on SIGINT/SIGTERM, time calls in flight get to end")
      ->capture_default_str();
  cmd->callback([a] {
    try {
      serve(*a);
    } catch (const CoordinatorError& e) {
      throw Error(error_code_of(e), e.what());
    }
  });
}

}  // namespace latte::cli
