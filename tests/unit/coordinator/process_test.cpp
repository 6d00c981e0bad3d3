// Shards and the coordinator as processes: a shard killed with SIGKILL mid-stream (the kernel
// closes its sockets, nothing is said on the wire) and restarted on its port; `latte coordinator`
// started, used and stopped with SIGTERM and SIGINT; its command-line errors.
#include "tests/unit/coordinator/child_process.h"
#include "tests/unit/coordinator/coordinator_test_util.h"
#include "tests/unit/latte_cli.h"

namespace latte::test {
namespace {

// "scripted shard: ready on 127.0.0.1:PORT" -> "127.0.0.1:PORT"
std::string ready_address(ChildProcess& p, const std::string& prefix) {
  const std::string line = p.read_line(20000);
  EXPECT_EQ(line.rfind(prefix, 0), 0u) << "got '" << line << "'; stderr: " << p.stderr_text();
  return line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : "";
}

std::vector<std::string> shard_command(const std::string& mode, int first_token, int port = 0) {
  return {LATTE_SCRIPTED_SHARD, "--mode", mode, "--tokens", "2", "--first-token", std::to_string(first_token),
          "--port", std::to_string(port)};
}

TEST(CoordinatorProcess, AShardKilledMidStreamIsUnavailableAndIsUsedAgainAfterARestart) {
  auto killed = std::make_unique<ChildProcess>(shard_command("stall", 5000));
  const std::string address = ready_address(*killed, "scripted shard: ready on ");
  ASSERT_FALSE(address.empty());
  ScriptedShard other(ShardScript{});
  other.set_serving(false);  // every request goes to the child until the end
  CoordinatorOptions o = test_options({&other});
  o.shards.insert(o.shards.begin(), address);
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());

  OpenStream s(*stub, token_request(4, 100));
  GenerateResponse m;
  ASSERT_TRUE(s.read(&m));
  ASSERT_TRUE(s.read(&m));
  EXPECT_EQ(m.token_ids(0), 5001);
  killed->signal(SIGKILL);
  EXPECT_EQ(killed->wait(10000), 128 + SIGKILL);
  const grpc::Status st = s.finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("shard group " + address + " failed after 2 streamed messages"),
            std::string::npos)
      << st.error_message();
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), "shard:" + address); }));
  EXPECT_TRUE(is_not_serving(coord->address(), "")) << "no group is healthy; the coordinator still answers";
  const StreamResult none = generate(*stub, token_request(4, 2));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAVAILABLE);

  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  killed.reset();
  ChildProcess restarted(shard_command("stream", 6000, port));
  ASSERT_EQ(ready_address(restarted, "scripted shard: ready on "), address);
  ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), "shard:" + address); }));
  const StreamResult r = generate(*stub, token_request(4, 2));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(token_ids(r), (std::vector<int>{6000, 6001}));
}

std::vector<std::string> coordinator_command(const std::vector<std::string>& shards) {
  std::vector<std::string> c = {latte_binary(), "coordinator", "--listen", "127.0.0.1:0", "--health-interval-ms", "100"};
  for (const std::string& s : shards) c.insert(c.end(), {"--shard", s});
  return c;
}

TEST(CoordinatorCli, ServesPrintsItsAddressAndStopsCleanlyOnSigtermAndSigint) {
  ScriptedShard a(ShardScript{}), b(ShardScript{});
  for (int sig : {SIGTERM, SIGINT}) {
    ChildProcess coord(coordinator_command({a.address(), b.address()}));
    const std::string line = coord.read_line(20000);
    const std::string prefix = "latte coordinator: serving on 127.0.0.1:";
    ASSERT_EQ(line.rfind(prefix, 0), 0u) << line << "\nstderr: " << coord.stderr_text();
    ASSERT_NE(line.find(", 2 shard groups"), std::string::npos) << line;
    const std::string address = line.substr(std::string("latte coordinator: serving on ").size(),
                                            line.find(',') - std::string("latte coordinator: serving on ").size());
    auto stub = client(address);
    const StreamResult r = generate(*stub, token_request(4, 5));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.messages.size(), 6u);
    coord.signal(sig);
    EXPECT_EQ(coord.wait(20000), 0) << coord.stderr_text();
    const std::string err = coord.stderr_text();
    EXPECT_NE(err.find(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + " received, shutting down"),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("shard group " + a.address() + " is SERVING"), std::string::npos) << err;
  }
}

TEST(CoordinatorCli, RefusesBadOptionsWithAMessageNamingThem) {
  CliRun r = run_latte("coordinator --listen 127.0.0.1:0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--shard is required"), std::string::npos) << r.err;
  r = run_latte("coordinator --listen 127.0.0.1:0 --shard nohost");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("latte: invalid argument: --shard 'nohost' is not host:port"), std::string::npos) << r.err;
  r = run_latte("coordinator --listen 127.0.0.1:0 --shard 127.0.0.1:1 --auth-token-file /nonexistent/token");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("latte: i/o error: cannot read --auth-token-file '/nonexistent/token'"), std::string::npos) << r.err;
  r = run_latte("coordinator --listen 127.0.0.1:0 --shard 127.0.0.1:1 --tls-key /nonexistent/key");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot read --tls-key"), std::string::npos) << r.err;
  ScriptedShard taken(ShardScript{});
  r = run_latte("coordinator --listen " + taken.address() + " --shard 127.0.0.1:1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("latte: i/o error: cannot listen on " + taken.address() + " (address in use"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace latte::test
