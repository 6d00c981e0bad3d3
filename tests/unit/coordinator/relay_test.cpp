// Generate through the coordinator against scripted shards on real gRPC: the relayed stream, its
// endings (shard death, retry, cancellation, deadline) and the limits.
#include <google/protobuf/util/message_differencer.h>

#include <atomic>
#include <set>
#include <thread>

#include "tests/unit/coordinator/coordinator_test_util.h"

namespace latte::test {
namespace {

using google::protobuf::util::MessageDifferencer;
using Mode = ShardScript::Mode;

ShardScript script(Mode mode, int tokens, int first_token = 1000, int delay_ms = 0) {
  ShardScript s;
  s.mode = mode;
  s.tokens = tokens;
  s.first_token = first_token;
  s.delay_ms = delay_ms;
  return s;
}

TEST(CoordinatorRelay, StreamEqualsTheShardsStream) {
  ScriptedShard shard(script(Mode::stream, 6, 1000, 5));
  auto coord = start_coordinator(test_options({&shard}));
  auto stub = client(coord->address());
  GenerateRequest req;
  req.set_request_id("req-7");
  req.set_text("Once upon a time");
  req.set_max_new_tokens(6);
  req.mutable_sampling()->set_temperature(0.5f);
  req.set_seed(42);
  req.add_stop("The end");
  const StreamResult r = generate(*stub, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(shard.generate_calls(), 1);
  const SeenCall seen = shard.calls()[0];
  EXPECT_TRUE(MessageDifferencer::Equals(seen.request, req)) << seen.request.DebugString();
  ASSERT_EQ(r.messages.size(), seen.sent.size());
  ASSERT_EQ(r.messages.size(), 7u);  // 6 tokens + the final message
  for (size_t i = 0; i < r.messages.size(); ++i)
    EXPECT_TRUE(MessageDifferencer::Equals(r.messages[i], seen.sent[i])) << "message " << i;
  EXPECT_EQ(r.messages.back().finish_reason(), latte::v1::FINISH_REASON_LENGTH);
}

TEST(CoordinatorRelay, RoutesToTheGroupWithTheLeastOutstandingTokens) {
  ScriptedShard a(script(Mode::stall, 1, 1000)), b(script(Mode::stall, 1, 2000));
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  // Each stream stays in flight (the shards stall after one token), so every booking stays.
  // Prompts are 4 token ids, so a request costs 4 + max_new_tokens, less 1 per token received.
  std::vector<std::unique_ptr<OpenStream>> open;
  std::vector<int> served_by;  // 1 = a, 2 = b, from the token id received
  for (int max_new : {1000, 10, 10, 2000, 10}) {
    open.push_back(std::make_unique<OpenStream>(*stub, token_request(4, max_new)));
    GenerateResponse m;
    ASSERT_TRUE(open.back()->read(&m));
    ASSERT_EQ(m.token_ids_size(), 1);
    served_by.push_back(m.token_ids(0) / 1000);
  }
  // 1000 goes to one group (X); 10 to the other (Y: 14); 10 to Y (28 < 1004); 2000 to Y (28 <
  // 1004); 10 to X (1004 < 2032).
  const int x = served_by[0], y = 3 - x;
  EXPECT_EQ(served_by, (std::vector<int>{x, y, y, y, x}));
  const latte::v1::StatsResponse s = stats(*stub);
  ASSERT_EQ(s.shard_groups_size(), 2);
  const auto& gx = s.shard_groups(x - 1);
  const auto& gy = s.shard_groups(y - 1);
  EXPECT_EQ(gx.in_flight(), 2);
  EXPECT_EQ(gy.in_flight(), 3);
  EXPECT_EQ(gx.outstanding_tokens(), (4 + 1000 - 1) + (4 + 10 - 1));
  EXPECT_EQ(gy.outstanding_tokens(), (4 + 10 - 1) * 2 + (4 + 2000 - 1));
  for (auto& o : open) o->cancel();
  open.clear();
  ASSERT_TRUE(wait_until([&] {
    const auto t = stats(*stub);
    return t.shard_groups(0).outstanding_tokens() == 0 && t.shard_groups(1).outstanding_tokens() == 0 &&
           t.shard_groups(0).in_flight() == 0 && t.shard_groups(1).in_flight() == 0;
  })) << "bookings not given back after the streams ended";
}

TEST(CoordinatorRelay, PrefixAffinityKeepsASharedPrefixOnOneGroupWithinTheMargin) {
  ScriptedShard a(script(Mode::stream, 1, 1000)), b(script(Mode::stream, 1, 2000));
  CoordinatorOptions o = test_options({&a, &b});
  o.affinity_prefix_tokens = 8;
  o.affinity_margin_tokens = 100;
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  const std::string prefix = "You are a helpful assistant. Answer briefly.";  // > 32 bytes
  int group = 0;
  for (int i = 0; i < 6; ++i) {
    GenerateRequest req;
    req.set_text(prefix + " Question " + std::to_string(i));
    req.set_max_new_tokens(5);
    const StreamResult r = generate(*stub, req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    const int g = r.messages[0].token_ids(0) / 1000;
    if (i == 0) group = g;
    EXPECT_EQ(g, group) << "request " << i << " left the prefix's group";
  }
  // Different prefixes spread over both groups.
  std::set<int> used;
  for (int i = 0; i < 16; ++i) {
    GenerateRequest req;
    req.set_text("prefix number " + std::to_string(i) + " and some more text to pass 32 bytes");
    req.set_max_new_tokens(5);
    const StreamResult r = generate(*stub, req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    used.insert(r.messages[0].token_ids(0) / 1000);
  }
  EXPECT_EQ(used.size(), 2u);
  // The preferred group more than the margin busier than the other: the other takes it.
  ScriptedShard& preferred = group == 1 ? a : b;
  preferred.set_script(script(Mode::stall, 1, group * 1000));
  GenerateRequest busy = token_request(4, 500, 7000);  // another prefix; pin it to the preferred group
  std::unique_ptr<OpenStream> hold;
  for (int tries = 0; tries < 64 && !hold; ++tries) {
    busy.mutable_token_ids()->set_ids(0, 7000 + tries);
    auto s = std::make_unique<OpenStream>(*stub, busy);
    GenerateResponse m;
    ASSERT_TRUE(s->read(&m));
    if (m.token_ids(0) / 1000 == group) hold = std::move(s);
  }
  ASSERT_TRUE(hold) << "no prompt went to the preferred group";
  GenerateRequest req;
  req.set_text(prefix + " Question 99");
  req.set_max_new_tokens(5);
  const StreamResult r = generate(*stub, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_NE(r.messages[0].token_ids(0) / 1000, group) << "affinity ignored the margin";
}

TEST(CoordinatorRelay, AGroupDyingMidStreamEndsTheCallUnavailableAndTheCoordinatorServesOn) {
  ScriptedShard a(script(Mode::die, 2, 1000)), b(script(Mode::stream, 3, 2000));
  b.set_serving(false);  // the request must go to a
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 50));
  EXPECT_EQ(token_ids(r), (std::vector<int>{1000, 1001}));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(r.status.error_message().find(a.address()), std::string::npos) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("after 2 streamed messages"), std::string::npos)
      << r.status.error_message();
  EXPECT_EQ(a.generate_calls(), 1) << "a request that had tokens must not be retried";
  ASSERT_TRUE(wait_until([&] { return !a.running(); }));
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), group_health(a)); }));
  b.set_serving(true);
  ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), ""); }));
  const StreamResult again = generate(*stub, token_request(4, 50));
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(token_ids(again), (std::vector<int>{2000, 2001, 2002}));
}

TEST(CoordinatorRelay, ARequestWithoutATokenYetIsRetriedOnAnotherGroup) {
  ScriptedShard a(script(Mode::unavailable, 0, 1000)), b(script(Mode::stream, 3, 2000));
  CoordinatorOptions o = test_options({&a, &b});
  o.health_interval_ms = 50;  // a is re-admitted between requests: it keeps failing and retrying
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  for (int i = 0; i < 6; ++i) {
    const StreamResult r = generate(*stub, token_request(4, 3));
    ASSERT_TRUE(r.status.ok()) << "request " << i << ": " << r.status.error_message();
    EXPECT_EQ(token_ids(r), (std::vector<int>{2000, 2001, 2002}));
    ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), group_health(a)); }));
  }
  EXPECT_GE(a.generate_calls(), 1);
  EXPECT_EQ(b.generate_calls(), 6);
}

TEST(CoordinatorRelay, AnEmptyErrorEndingBeforeAnyTokenIsRetriedAndNotShown) {
  ScriptedShard a(script(Mode::error_final, 0, 1000)), b(script(Mode::stream, 2, 2000));
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 2));  // the first pick is group 0: a
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(a.generate_calls(), 1);
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(token_ids(r), (std::vector<int>{2000, 2001}));
  EXPECT_EQ(r.messages.back().finish_reason(), latte::v1::FINISH_REASON_LENGTH);
}

TEST(CoordinatorRelay, WhenEveryGroupFailsTheClientGetsUnavailableNamingThemAll) {
  ScriptedShard a(script(Mode::error_final, 0)), b(script(Mode::unavailable, 0));
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 2));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(r.messages.empty()) << "the held-back ERROR ending of a retried attempt was relayed";
  const std::string& msg = r.status.error_message();
  EXPECT_NE(msg.find(a.address() + ": failed before the first token (UNAVAILABLE: scripted shard: shutting down)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(b.address() + ": failed before the first token (UNAVAILABLE: scripted shard: unavailable)"),
            std::string::npos)
      << msg;
}

TEST(CoordinatorRelay, NoHealthyGroupIsUnavailableNamingTheGroupsAndWhy) {
  ScriptedShard a(script(Mode::stream, 1)), b(script(Mode::stream, 1));
  a.set_serving(false);
  b.stop();
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 2));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  const std::string& msg = r.status.error_message();
  EXPECT_NE(msg.find("no shard group can take the request (2 groups)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(a.address() + ": not serving (health check: NOT_SERVING)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(b.address() + ": not serving (health check: UNAVAILABLE"), std::string::npos) << msg;
  EXPECT_EQ(a.generate_calls(), 0);
  EXPECT_TRUE(is_not_serving(coord->address(), ""));
  EXPECT_TRUE(is_not_serving(coord->address(), "latte.v1.Inference"));
}

TEST(CoordinatorRelay, ClientCancellationReachesTheShard) {
  ScriptedShard a(script(Mode::stall, 1));
  auto coord = start_coordinator(test_options({&a}));
  auto stub = client(coord->address());
  OpenStream s(*stub, token_request(4, 100));
  GenerateResponse m;
  ASSERT_TRUE(s.read(&m));
  EXPECT_FALSE(a.calls()[0].cancelled);
  s.cancel();
  EXPECT_EQ(s.finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(a.wait_cancelled(0, 10000)) << "the shard never saw the client's cancellation";
  ASSERT_TRUE(wait_until([&] { return stats(*stub).shard_groups(0).in_flight() == 0; }));
  EXPECT_TRUE(is_serving(coord->address(), group_health(a))) << "a client's cancellation is no group failure";
}

TEST(CoordinatorRelay, TheClientsDeadlineTravelsUpstreamAndEndsTheCall) {
  ScriptedShard a(script(Mode::stall, 0));  // no token at all: the shard waits
  auto coord = start_coordinator(test_options({&a}));
  auto stub = client(coord->address());
  const auto t0 = std::chrono::steady_clock::now();
  const StreamResult r = generate(*stub, token_request(4, 100), "", 400);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(took, 5.0);
  ASSERT_EQ(a.generate_calls(), 1);
  const double d = a.calls()[0].deadline_s;
  EXPECT_GT(d, 0.0) << "no deadline reached the shard";
  EXPECT_LE(d, 0.45);  // the client's 0.4 s; the grpc-timeout header rounds up by a little
  EXPECT_TRUE(a.wait_cancelled(0, 10000)) << "the shard kept working past the deadline";
}

TEST(CoordinatorRelay, StreamsBeyondTheConcurrencyLimitAreResourceExhausted) {
  ScriptedShard a(script(Mode::stall, 1));
  CoordinatorOptions o = test_options({&a});
  o.max_concurrent_streams = 1;
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  {
    OpenStream first(*stub, token_request(4, 100));
    GenerateResponse m;
    ASSERT_TRUE(first.read(&m));
    const StreamResult second = generate(*stub, token_request(4, 100));
    EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(second.status.error_message().find("--max-concurrent-streams"), std::string::npos);
    first.cancel();
  }
  a.set_script(script(Mode::stream, 1));
  // The slot comes back when the cancelled relay is gone.
  ASSERT_TRUE(wait_until([&] { return generate(*stub, token_request(4, 1)).status.ok(); }));
}

TEST(CoordinatorRelay, ARequestNoGroupHasRoomForIsResourceExhausted) {
  ScriptedShard a(script(Mode::stream, 1));
  CoordinatorOptions o = test_options({&a});
  o.max_group_outstanding_tokens = 100;
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 200));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("full (0 outstanding + 204 tokens > limit 100)"), std::string::npos)
      << r.status.error_message();
  EXPECT_TRUE(generate(*stub, token_request(4, 50)).status.ok());
}

TEST(CoordinatorRelay, ShardErrorsPassThroughNamingTheGroup) {
  ScriptedShard a(script(Mode::stream, 1));
  ShardScript s = script(Mode::stream, 1);
  s.required_token = "shard-secret";  // the coordinator forwards no token: the shard refuses
  a.set_script(s);
  auto coord = start_coordinator(test_options({&a}));
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 2));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(r.status.error_message(), "shard group " + a.address() + ": scripted shard: wrong token");
  EXPECT_TRUE(is_serving(coord->address(), group_health(a))) << "a refused request is no group failure";
}

}  // namespace
}  // namespace latte::test

namespace latte::test {
namespace {

TEST(CoordinatorShutdown, StreamsInFlightGetTheGraceThenAreCancelledUpstreamToo) {
  ShardScript s;
  s.mode = ShardScript::Mode::stall;
  s.tokens = 1;
  ScriptedShard a(s);
  CoordinatorOptions o = test_options({&a});
  o.shutdown_grace_ms = 300;
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  OpenStream stream(*stub, token_request(4, 100));
  GenerateResponse m;
  ASSERT_TRUE(stream.read(&m));
  const auto t0 = std::chrono::steady_clock::now();
  coord->shutdown();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.25);
  EXPECT_LT(took, 5.0);
  EXPECT_FALSE(stream.finish().ok());
  EXPECT_TRUE(a.wait_cancelled(0, 5000)) << "the shard's stream outlived the coordinator";
}

}  // namespace
}  // namespace latte::test

namespace latte::test {
namespace {

// Many streams at once while a group dies and comes back: every call ends (OK with a whole
// stream, or UNAVAILABLE), the coordinator survives, and no booking is left behind.
TEST(CoordinatorStress, ConcurrentStreamsThroughAGroupDeathAndRestart) {
  ShardScript s;
  s.tokens = 20;
  s.delay_ms = 1;
  s.first_token = 1000;
  ScriptedShard a(s);
  s.first_token = 2000;
  ScriptedShard b(s);
  CoordinatorOptions o = test_options({&a, &b});
  o.health_interval_ms = 50;
  auto coord = start_coordinator(o);
  std::atomic<int> ok{0}, unavailable{0}, other{0}, torn{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 16; ++t)
    clients.emplace_back([&, t] {
      auto stub = client(coord->address());
      for (int i = 0; i < 6; ++i) {
        const StreamResult r = generate(*stub, token_request(4 + t % 3, 20), "", 20000);
        if (r.status.ok()) {
          ++ok;
          const std::vector<int> ids = token_ids(r);
          if (ids.size() != 20 || (ids[0] != 1000 && ids[0] != 2000) || ids.back() != ids[0] + 19) ++torn;
        } else if (r.status.error_code() == grpc::StatusCode::UNAVAILABLE) {
          ++unavailable;
        } else {
          ++other;
          ADD_FAILURE() << r.status.error_code() << ": " << r.status.error_message();
        }
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  a.stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  a.start();
  for (auto& c : clients) c.join();
  std::printf("streams ended OK: %d, UNAVAILABLE (a died under them): %d\n", ok.load(), unavailable.load());
  EXPECT_EQ(ok + unavailable + other, 16 * 6);
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(torn.load(), 0) << "an OK stream was missing tokens or mixed two groups";
  auto stub = client(coord->address());
  ASSERT_TRUE(wait_until([&] {
    const auto st = stats(*stub);
    return st.shard_groups(0).in_flight() == 0 && st.shard_groups(1).in_flight() == 0 &&
           st.shard_groups(0).outstanding_tokens() == 0 && st.shard_groups(1).outstanding_tokens() == 0;
  })) << "bookings left behind";
  ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), group_health(a)); }));
  EXPECT_TRUE(generate(*stub, token_request(4, 20)).status.ok());
}

}  // namespace
}  // namespace latte::test
