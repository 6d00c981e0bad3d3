// `latte shard` as a user meets it: --help, and every bad flag or file an error naming it before
// (or instead of) serving. Serving itself is tested end to end by tests/server/shard_e2e.sh.
#include <filesystem>
#include <fstream>

#include "tests/unit/latte_cli.h"

namespace latte::test {
namespace {

const std::string kModel = std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin";

std::string shard(const std::string& flags) { return "shard --model " + kModel + " --listen 127.0.0.1:0 " + flags; }

TEST(ShardCli, Help) {
  const CliRun r = run_latte("shard --help");
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--model", "--listen", "--tp", "--cache-gib", "--cache-dtype", "--tls-cert", "--tls-key",
                           "--auth-token-file", "--max-queued-requests", "--max-new-tokens", "--max-prompt-tokens",
                           "--max-message-bytes", "--threads"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

TEST(ShardCli, BadFlagsAndFilesGiveOneLine) {
  const std::string dir = std::filesystem::temp_directory_path() / ("latte_shard_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/empty_token.txt") << "\n";
  expect_one_line_error("shard --listen 127.0.0.1:0", "--model");
  expect_one_line_error(shard("--cache-dtype q4_0"), "--cache-dtype");
  expect_one_line_error(shard("--cache-gib 0"), "--cache-gib");
  expect_one_line_error(shard("--max-queued-requests 0"), "--max-queued-requests");
  expect_one_line_error(shard("--tls-cert " + dir + "/cert.pem"), "--tls-cert and --tls-key go together");
  expect_one_line_error(shard("--tls-cert /nonexistent/cert.pem --tls-key /nonexistent/key.pem"), "/nonexistent/cert.pem");
  expect_one_line_error(shard("--auth-token-file /nonexistent/token"), "/nonexistent/token");
  expect_one_line_error(shard("--auth-token-file " + dir + "/empty_token.txt"), "empty_token.txt is empty");
  expect_one_line_error(shard("--cache-dtype i8"), "an i8 cache quantizes the MLA latent");
  expect_one_line_error(shard("--cache-gib 0.000001"), "smaller than one block");
  expect_one_line_error(shard("--tp 2"), "--tp 2 does not divide the 1 MPI ranks");  // not under mpirun
  std::filesystem::remove_all(dir);
}

// gRPC adds its own log lines about the failed bind; the last line is Latte's.
TEST(ShardCli, AnAddressItCannotListenOnIsAnError) {
  const CliRun r = run_latte("shard --model " + kModel + " --listen not-an-address");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("cannot listen on not-an-address"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("serving"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace latte::test
