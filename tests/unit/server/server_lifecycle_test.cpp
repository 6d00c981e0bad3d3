// A request's life beyond the happy path: a client that cancels (its KV blocks are freed at once,
// its generation stops), a deadline that passes while the request waits (DEADLINE_EXCEEDED, and it
// never runs), and the server's shutdown (health NOT_SERVING, open streams ended with UNAVAILABLE,
// new calls refused), all seen from a client.
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/unit/server/server_test_util.h"

namespace latte::test {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

v1::GenerateRequest long_request() {
  v1::GenerateRequest r = text_request("Once upon a time", 480);
  r.set_ignore_eos(true);  // 480 tokens whatever the model writes
  return r;
}

HealthCheckResponse::ServingStatus health(grpc::Channel& channel, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext c;
  HealthCheckRequest req;
  req.set_service(service);
  HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&c, req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.status();
}

TEST(ServerLifecycle, ClientCancellationFreesTheRequestsBlocksAndStopsIt) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Served s(*m);
    const v1::StatsResponse start = stats_of(*s.stub);
    int64_t blocks_while_running = 0;
    const Streamed got = run_generate(*s.stub, long_request(), {}, [&](const v1::GenerateResponse&, grpc::ClientContext&) {
      blocks_while_running = stats_of(*s.stub).blocks_used();
      return false;  // cancel after the first message
    });
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::CANCELLED) << got.status.error_message();
    EXPECT_GT(blocks_while_running, 0);
    // The engine thread cancels before its next step, which frees the blocks: Stats shows the
    // starting count as soon as the server has noticed the client left.
    ASSERT_TRUE(eventually([&] {
      const v1::StatsResponse now = stats_of(*s.stub);
      return now.blocks_used() == start.blocks_used() && now.blocks_free() == start.blocks_free() &&
             now.running() == 0 && now.requests_finished() == 1;
    })) << "blocks used " << stats_of(*s.stub).blocks_used();
    const int64_t generated = stats_of(*s.stub).generated_tokens();
    EXPECT_LT(generated, 480) << "the request ran to its end instead of being cancelled";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(stats_of(*s.stub).generated_tokens(), generated) << "generation went on after the cancellation";
    // The server serves on.
    EXPECT_TRUE(run_generate(*s.stub, text_request("Once upon a time", 10)).status.ok());
  }
}

// max_running 1: the deadline request waits behind two long ones; its deadline passes long before
// they finish, and it is dropped without ever running.
TEST(ServerLifecycle, DeadlinePassingWhileWaitingGivesDeadlineExceeded) {
  TestModel& m = stories();
  Served s(m, loopback_options(), small_engine_config(*m.model, /*max_running=*/1));
  std::vector<Streamed> blockers(2);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i)
    clients.emplace_back([&, i] { blockers[size_t(i)] = run_generate(*s.stub, long_request()); });
  ASSERT_TRUE(eventually([&] { return stats_of(*s.stub).running() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  const Streamed late = run_generate(*s.stub, text_request("One day", 20), [](grpc::ClientContext& c) {
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(150));
  });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << late.status.error_message();
  EXPECT_EQ(late.tokens.size(), 0u);
  EXPECT_LT(waited, 2.0) << "the call should end at its deadline, not when the engine gets to it";
  for (std::thread& t : clients) t.join();
  int64_t blocker_tokens = 0;
  for (const Streamed& b : blockers) {
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    blocker_tokens += int64_t(b.tokens.size());
  }
  ASSERT_TRUE(eventually([&] { return stats_of(*s.stub).requests_finished() == 3; }));
  const v1::StatsResponse end = stats_of(*s.stub);
  EXPECT_EQ(end.generated_tokens(), blocker_tokens) << "the late request generated tokens";
  EXPECT_EQ(end.blocks_used(), 0);
  EXPECT_EQ(end.waiting(), 0);
}

TEST(ServerLifecycle, HealthAndShutdown) {
  TestModel& m = stories();
  Served s(m);
  EXPECT_EQ(health(*s.channel, ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(health(*s.channel, "latte.v1.Inference"), HealthCheckResponse::SERVING);

  // A stream open when shutdown begins ends with UNAVAILABLE, after a final message with its usage.
  std::atomic<bool> first_message{false};
  Streamed open;
  std::thread client([&] {
    grpc::ClientContext c;
    auto reader = s.stub->Generate(&c, long_request());
    v1::GenerateResponse r;
    while (reader->Read(&r)) {
      ++open.messages;
      open.tokens.insert(open.tokens.end(), r.token_ids().begin(), r.token_ids().end());
      open.last = r;
      first_message = true;
    }
    open.status = reader->Finish();
  });
  ASSERT_TRUE(eventually([&] { return first_message.load(); }));
  s.server->begin_shutdown();
  client.join();
  EXPECT_EQ(open.status.error_code(), grpc::StatusCode::UNAVAILABLE) << open.status.error_message();
  EXPECT_NE(open.status.error_message().find("shutting down"), std::string::npos) << open.status.error_message();
  EXPECT_EQ(open.last.finish_reason(), v1::FINISH_REASON_ERROR);
  EXPECT_EQ(open.last.usage().completion_tokens(), int32_t(open.tokens.size()));
  EXPECT_LT(open.tokens.size(), 480u);

  EXPECT_EQ(health(*s.channel, ""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(health(*s.channel, "latte.v1.Inference"), HealthCheckResponse::NOT_SERVING);
  const Streamed refused = run_generate(*s.stub, text_request("Once upon a time", 5));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.status.error_message();
  grpc::ClientContext c;
  v1::StatsResponse st;
  EXPECT_EQ(s.stub->Stats(&c, v1::StatsRequest(), &st).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The engine holds nothing: every block is back.
  EXPECT_EQ(s.engine->stats().blocks_used, 0);
  EXPECT_FALSE(s.engine->has_work());

  s.server->shutdown(std::chrono::seconds(2));
  s.server->shutdown(std::chrono::seconds(2));  // idempotent
}

}  // namespace
}  // namespace latte::test
