// latte shard: serves one model over gRPC (latte.v1.Inference, health, reflection), alone or as a
// tensor-parallel group under mpirun. Every rank loads its shard and builds the serving Engine on
// the TP communicator; rank 0 runs the gRPC server and the engine thread, the other ranks follow
// rank 0's steps (Engine::follow). SIGINT or SIGTERM on rank 0 stops the server cleanly: open
// streams end with UNAVAILABLE, the followers are released, every rank exits 0.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/base/error.h"
#include "core/base/file_io.h"
#include "inference/engine/engine.h"
#include "inference/engine/loaded_model.h"
#include "inference/server/bearer_token.h"
#include "inference/server/inference_server.h"
#include "parallel/job.h"

namespace latte::cli {
namespace {

struct ShardOptions {
  ModelLoadRequest load;
  std::string name;  // empty: the model path's last component
  std::string device = "cpu";
  std::string listen = "127.0.0.1:50051";
  int64_t tp = 1;
  double cache_gib = 1.0;
  std::string cache_dtype = "f32";
  int32_t block_size = 16;
  int32_t max_running = 64;
  int64_t max_step_tokens = 512;
  int threads = 0;
  std::string tls_cert, tls_key, auth_token_file;
  server::ServerLimits limits;
  double shutdown_grace_s = 5;
};

void add_options(CLI::App& cmd, ShardOptions& o) {
  cmd.add_option("-m,--model", o.load.model_path, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd.add_option("-z,--tokenizer", o.load.tokenizer_path, "tokenizer.bin or tokenizer.json (default: the model's own)");
  cmd.add_option("--name", o.name, "model name ModelInfo reports (default: the --model file or folder name)");
  cmd.add_option("--listen", o.listen, "host:port to serve on (port 0: any free port; 0.0.0.0: every interface)");
  cmd.add_option("--tp", o.tp, "tensor-parallel ranks (run under mpirun -np N)")->check(CLI::PositiveNumber);
  cmd.add_option("--cache-gib", o.cache_gib, "KV cache per rank, GiB")->check(CLI::Range(1e-6, 1e6));
  cmd.add_option("--cache-dtype", o.cache_dtype, "KV cache storage: f32, bf16, or i8 (MLA latent only)")
      ->check(CLI::IsMember({"f32", "bf16", "i8"}));
  cmd.add_option("--block-size", o.block_size, "tokens per KV cache block")->check(CLI::Range(1, 4096));
  cmd.add_option("--max-running", o.max_running, "sequences decoded together at most")->check(CLI::Range(1, 1 << 20));
  cmd.add_option("--max-step-tokens", o.max_step_tokens, "tokens per engine step at most (prefill chunks included)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  add_device_option(cmd, o.device);
  add_threads_option(cmd, o.threads);
  cmd.add_option("--tls-cert", o.tls_cert, "PEM certificate chain: serve over TLS (with --tls-key)");
  cmd.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
  cmd.add_option("--auth-token-file", o.auth_token_file,
                 "file holding a bearer token that every Inference call must send (authorization: Bearer <token>)");
  server::ServerLimits& l = o.limits;
  cmd.add_option("--max-message-bytes", l.max_message_bytes, "largest request accepted")
      ->check(CLI::Range(int64_t(1024), int64_t(INT32_MAX)));
  cmd.add_option("--max-prompt-tokens", l.max_prompt_tokens, "longest prompt accepted (0: the context length)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--max-new-tokens", l.max_new_tokens, "most tokens a request may ask for (0: the context length)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--default-max-new-tokens", l.default_max_new_tokens,
                 "tokens generated when a request does not say")->check(CLI::PositiveNumber);
  cmd.add_option("--max-queued-requests", l.max_queued_requests,
                 "requests held at once, waiting or running; more get RESOURCE_EXHAUSTED")->check(CLI::PositiveNumber);
  cmd.add_option("--shutdown-grace-s", o.shutdown_grace_s, "seconds calls get to end once stopping")
      ->check(CLI::Range(0.0, 3600.0));
}

std::string default_name(const std::string& model_path) {
  std::filesystem::path p(model_path);
  if (p.filename().empty()) p = p.parent_path();  // "models/smollm2/" names the folder
  return p.filename().string();
}

// SIGINT and SIGTERM are blocked in every thread (the mask is inherited, so this runs before MPI,
// OpenMP or gRPC start theirs) and taken synchronously by rank 0's main thread with sigtimedwait:
// no handler runs in a random thread in the middle of a collective. On the followers they stay
// blocked: a follower stops when rank 0 tells it to, so it never leaves a collective half-done.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

void block_stop_signals() {
  const sigset_t set = stop_signals();
  const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  LATTE_REQUIRE(rc == 0, ErrorCode::io, "pthread_sigmask: ", std::strerror(rc));
}

// Waits for SIGINT/SIGTERM or an engine failure; says which.
std::string wait_for_stop(const server::InferenceServer& server, bool& engine_failed) {
  const sigset_t set = stop_signals();
  const timespec tick{0, 200 * 1000 * 1000};
  for (;;) {
    const int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) return sig == SIGINT ? "SIGINT" : "SIGTERM";
    LATTE_REQUIRE(sig >= 0 || errno == EAGAIN || errno == EINTR, ErrorCode::io, "sigtimedwait: ",
                  std::strerror(errno));
    if (std::string failure = server.engine_failure(); !failure.empty()) {
      engine_failed = true;
      return failure;
    }
  }
}

EngineConfig engine_config(const ShardOptions& o) {
  EngineConfig c;
  c.cache_bytes = int64_t(o.cache_gib * double(int64_t(1) << 30));
  c.block_size = o.block_size;
  c.cache_dtype = dtype_from_name(o.cache_dtype);
  c.max_tokens_per_step = o.max_step_tokens;
  c.max_running = o.max_running;
  return c;
}

server::ServerOptions server_options(const ShardOptions& o, int tp_size, double watchdog_s) {
  server::ServerOptions s;
  s.listen = o.listen;
  s.model_name = o.name.empty() ? default_name(o.load.model_path) : o.name;
  LATTE_REQUIRE(o.tls_cert.empty() == o.tls_key.empty(), ErrorCode::invalid_argument,
                "--tls-cert and --tls-key go together (got only ", o.tls_cert.empty() ? "--tls-key" : "--tls-cert", ")");
  if (!o.tls_cert.empty()) {
    s.tls_cert_pem = read_text_file(o.tls_cert);
    s.tls_key_pem = read_text_file(o.tls_key);
  }
  if (!o.auth_token_file.empty())
    s.auth_token = server::token_from_file_text(read_text_file(o.auth_token_file), o.auth_token_file);
  s.limits = o.limits;
  s.tp_size = tp_size;
  // Followers wait in a collective between requests: ping them well within the watchdog's limit.
  s.ping_interval_s = tp_size > 1 && watchdog_s > 0 ? watchdog_s / 4 : 0;
  const int threads = o.threads;
  s.engine_thread_init = [threads] { apply_threads(threads); };  // OpenMP's thread count is per thread
  return s;
}

bool is_loopback(const std::string& listen) {
  for (const char* prefix : {"127.0.0.1:", "localhost:", "[::1]:", "unix:"})
    if (listen.rfind(prefix, 0) == 0) return true;
  return false;
}

// Rank 0: serves until a stop signal or an engine failure, then shuts down and releases the
// followers.
void serve(Engine& engine, const LoadedModel& m, const server::ServerOptions& so,
           std::chrono::milliseconds grace) {
  server::InferenceServer server(engine, m.model->config(), m.tokenizer.get(), so);
  std::printf("latte shard: serving %s on %s (tp %d)\n", so.model_name.c_str(), server.address().c_str(), so.tp_size);
  std::fflush(stdout);
  std::fprintf(stderr, "latte shard: pid %d; SIGINT or SIGTERM stops it%s\n", int(getpid()),
               so.auth_token.empty() && !is_loopback(so.listen)
                   ? " (warning: no --auth-token-file and not a loopback address: anyone who can reach it can use it)"
                   : "");
  bool engine_failed = false;
  const std::string why = wait_for_stop(server, engine_failed);
  std::fprintf(stderr, "latte shard: stopping (%s)\n", why.c_str());
  server.begin_shutdown();  // open streams end, the engine thread stops: the engine is ours again
  // Release the followers before gRPC's grace period: they wait in a collective, watched by the
  // watchdog, until told. After an engine failure they may be inside another collective: leave
  // them to the job's teardown (a rank exiting with an error ends the whole mpirun job).
  if (!engine_failed) engine.stop_followers();
  server.shutdown(grace);
  LATTE_REQUIRE(!engine_failed, ErrorCode::internal, "the engine failed: ", why);
  std::fprintf(stderr, "latte shard: stopped\n");
}

}  // namespace

void add_shard(CLI::App& app) {
  auto o = std::make_shared<ShardOptions>();
  CLI::App* cmd = app.add_subcommand("shard", "Serve a model over gRPC (latte.v1.Inference); TP under mpirun");
  add_options(*cmd, *o);
  cmd->callback([o] {
    block_stop_signals();
    apply_threads(o->threads);
    resolve_device(o->device, false);  // an unusable --device fails here, before any rank starts
    std::unique_ptr<ParallelJob> job;
    ModelLoadRequest load = o->load;
    if (o->tp > 1) {
      job = start_parallel_job(o->tp, false);
      LATTE_REQUIRE(job->dp().size() == 1, ErrorCode::invalid_argument, "shard --tp ", o->tp, " runs on exactly ",
                    o->tp, " ranks, not ", job->world().size());
      load.tp = &job->tp();
    }
    const bool driver = !job || job->tp().rank() == 0;
    // Rank 0 reads its files first: a missing certificate fails before minutes of model loading.
    server::ServerOptions so;
    if (driver) so = server_options(*o, int(o->tp), job ? job->collective_timeout_s() : 0);
    load.backend = &resolve_device(o->device, driver);
    LoadedModel m = load_model(load);
    Engine engine(*m.model, m.tokenizer.get(), engine_config(*o), load.tp);
    if (!engine.is_driver()) {
      engine.follow();
      return;
    }
    serve(engine, m, so, std::chrono::milliseconds(int64_t(o->shutdown_grace_s * 1000)));
  });
}

}  // namespace latte::cli
