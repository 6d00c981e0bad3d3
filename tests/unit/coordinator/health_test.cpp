// The coordinator's grpc.health.v1 service and its view of each group: a group that goes away is
// NOT_SERVING and not routed to; restarted on its port it is SERVING and used again.
#include "tests/unit/coordinator/coordinator_test_util.h"

namespace latte::test {
namespace {

ShardScript stream_script(int first_token) {
  ShardScript s;
  s.tokens = 2;
  s.first_token = first_token;
  return s;
}

TEST(CoordinatorHealth, ReportsTheCoordinatorAndEveryGroup) {
  ScriptedShard a(stream_script(1000)), b(stream_script(2000));
  auto coord = start_coordinator(test_options({&a, &b}));
  EXPECT_TRUE(is_serving(coord->address(), ""));
  EXPECT_TRUE(is_serving(coord->address(), "latte.v1.Inference"));
  EXPECT_TRUE(is_serving(coord->address(), "shard:" + a.address()));
  EXPECT_TRUE(is_serving(coord->address(), "shard:" + b.address()));
  EXPECT_EQ(health(coord->address(), "shard:127.0.0.1:1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(coord->healthy_group_count(), 2u);
}

TEST(CoordinatorHealth, ADeadGroupIsNotServingAndIsUsedAgainAfterARestartOnItsPort) {
  ScriptedShard a(stream_script(1000)), b(stream_script(2000));
  auto coord = start_coordinator(test_options({&a, &b}));
  auto stub = client(coord->address());
  a.stop();
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), group_health(a)); }));
  EXPECT_TRUE(is_serving(coord->address(), "")) << "b still serves";
  const latte::v1::StatsResponse s = stats(*stub);
  EXPECT_FALSE(s.shard_groups(0).healthy());
  EXPECT_NE(s.shard_groups(0).unhealthy_reason().find("health check: UNAVAILABLE"), std::string::npos)
      << s.shard_groups(0).unhealthy_reason();
  EXPECT_GE(s.shard_groups(0).consecutive_failed_checks(), 1);
  EXPECT_EQ(s.shard_groups(0).stats_error(), "not asked: the group is not healthy");
  for (int i = 0; i < 4; ++i) {  // all to b while a is down
    const StreamResult r = generate(*stub, token_request(4, 2));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(token_ids(r)[0], 2000);
  }
  EXPECT_EQ(a.generate_calls(), 0);

  a.start();  // same port
  ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), group_health(a)); }));
  b.set_serving(false);
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), group_health(b)); }));
  const StreamResult r = generate(*stub, token_request(4, 2));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(token_ids(r), (std::vector<int>{1000, 1001}));
  EXPECT_EQ(a.generate_calls(), 1);
}

TEST(CoordinatorHealth, TheCoordinatorIsNotServingWhileNoGroupIsAndServingWhenOneReturns) {
  ScriptedShard a(stream_script(1000));
  auto coord = start_coordinator(test_options({&a}));
  a.set_serving(false);
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), ""); }));
  EXPECT_TRUE(is_not_serving(coord->address(), group_health(a)));
  a.set_serving(true);
  ASSERT_TRUE(wait_until([&] { return is_serving(coord->address(), ""); }));
}

TEST(CoordinatorHealth, AFailedCallMarksItsGroupDownBeforeTheNextHealthCheck) {
  ScriptedShard a(stream_script(1000)), b(stream_script(2000));
  CoordinatorOptions o = test_options({&a, &b});
  o.health_interval_ms = 600'000;  // no health check after the first: only calls can tell
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  a.stop();
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext ctx;
    set_deadline_ms(ctx, 5000);
    latte::v1::ModelInfoResponse info;
    const grpc::Status s = stub->ModelInfo(&ctx, latte::v1::ModelInfoRequest(), &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(is_not_serving(coord->address(), group_health(a)));
  const latte::v1::StatsResponse s = stats(*stub);
  EXPECT_FALSE(s.shard_groups(0).healthy());
  EXPECT_NE(s.shard_groups(0).unhealthy_reason().find("call failed: UNAVAILABLE"), std::string::npos)
      << s.shard_groups(0).unhealthy_reason();
  EXPECT_GE(s.shard_groups(0).requests_failed(), 1);
}

TEST(CoordinatorHealth, AGroupThatStopsAnsweringHasItsStreamsCutOff) {
  // A shard that accepts connections but never answers its health checks stands for a host
  // that vanished without closing its sockets: its streams must not hang forever.
  ShardScript s = stream_script(1000);
  s.mode = ShardScript::Mode::stall;
  s.tokens = 1;
  ScriptedShard a(s);
  CoordinatorOptions o = test_options({&a});
  o.health_timeout_ms = 200;
  o.dead_after_failed_checks = 2;
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  OpenStream stream(*stub, token_request(4, 100));
  GenerateResponse m;
  ASSERT_TRUE(stream.read(&m));
  a.set_serving(false);  // the checks fail; the stream stays open on the shard's side
  const auto t0 = std::chrono::steady_clock::now();
  const grpc::Status st = stream.finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("failed 2 health checks in a row"), std::string::npos) << st.error_message();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_TRUE(a.wait_cancelled(0, 5000));
}

}  // namespace
}  // namespace latte::test
