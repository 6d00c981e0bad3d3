// The scripted shard as a process of its own, so that tests can kill it with SIGKILL (a real
// death: its sockets closed by the kernel, nothing said on the wire) and restart it on its port.
//   scripted_shard [--port N] [--mode stream|unavailable|error_final|stall|die] [--tokens N]
//                  [--delay-ms N] [--first-token N] [--model-name S] [--token T]
// Prints "scripted shard: ready on 127.0.0.1:PORT" when serving; SIGINT/SIGTERM stop it.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/unit/coordinator/shard/scripted_shard.h"

namespace {

using latte::test::ShardScript;

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "scripted_shard: %s\n", why.c_str());
  std::exit(2);
}

ShardScript::Mode mode_of(const std::string& m) {
  if (m == "stream") return ShardScript::Mode::stream;
  if (m == "unavailable") return ShardScript::Mode::unavailable;
  if (m == "error_final") return ShardScript::Mode::error_final;
  if (m == "stall") return ShardScript::Mode::stall;
  if (m == "die") return ShardScript::Mode::die;
  usage("unknown --mode '" + m + "'");
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  ShardScript script;
  int port = 0;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--port") port = std::atoi(value.c_str());
    else if (flag == "--mode") script.mode = mode_of(value);
    else if (flag == "--tokens") script.tokens = std::atoi(value.c_str());
    else if (flag == "--delay-ms") script.delay_ms = std::atoi(value.c_str());
    else if (flag == "--first-token") script.first_token = std::atoi(value.c_str());
    else if (flag == "--model-name") script.model_name = value;
    else if (flag == "--token") script.required_token = value;
    else usage("unknown flag " + flag);
  }
  latte::test::ScriptedShard shard(script, port);
  std::printf("scripted shard: ready on %s\n", shard.address().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  shard.stop();
  return 0;
}
