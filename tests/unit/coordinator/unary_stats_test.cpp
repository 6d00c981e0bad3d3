// Tokenize and ModelInfo forwarded to a healthy group; Stats gathered from every group.
#include "tests/unit/coordinator/coordinator_test_util.h"

namespace latte::test {
namespace {

ShardScript named(const std::string& name, ShardScript::Mode mode = ShardScript::Mode::stream) {
  ShardScript s;
  s.model_name = name;
  s.mode = mode;
  s.tokens = 3;
  return s;
}

TEST(CoordinatorUnary, TokenizeAndModelInfoAreAnsweredByAGroup) {
  ScriptedShard a(named("model-a"));
  auto coord = start_coordinator(test_options({&a}));
  auto stub = client(coord->address());
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 5000);
  latte::v1::TokenizeRequest req;
  req.set_text("hi");
  req.set_add_bos(true);
  latte::v1::TokenizeResponse tok;
  ASSERT_TRUE(stub->Tokenize(&ctx, req, &tok).ok());
  EXPECT_EQ(std::vector<int>(tok.ids().begin(), tok.ids().end()), (std::vector<int>{1, 'h', 'i'}));
  EXPECT_EQ(tok.pieces_size(), 3);

  grpc::ClientContext ctx2;
  set_deadline_ms(ctx2, 5000);
  latte::v1::ModelInfoResponse info;
  ASSERT_TRUE(stub->ModelInfo(&ctx2, latte::v1::ModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_name(), "model-a");
  EXPECT_EQ(info.tp_size(), 2);
}

TEST(CoordinatorUnary, ACallOnADeadGroupIsRetriedOnAHealthyOne) {
  ScriptedShard a(named("model-a")), b(named("model-b"));
  CoordinatorOptions o = test_options({&a, &b});
  o.health_interval_ms = 600'000;  // the coordinator learns of a's death from the calls alone
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  a.stop();
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext ctx;
    set_deadline_ms(ctx, 5000);
    latte::v1::ModelInfoResponse info;
    const grpc::Status s = stub->ModelInfo(&ctx, latte::v1::ModelInfoRequest(), &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.model_name(), "model-b");
  }
  b.stop();
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 5000);
  latte::v1::ModelInfoResponse info;
  const grpc::Status s = stub->ModelInfo(&ctx, latte::v1::ModelInfoRequest(), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find(a.address()), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find(b.address()), std::string::npos) << s.error_message();
}

TEST(CoordinatorStats, SumsTheGroupsAndListsEachWithItsHealth) {
  ScriptedShard a(named("a")), b(named("b")), c(named("c"));
  auto coord = start_coordinator(test_options({&a, &b, &c}));
  auto stub = client(coord->address());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(generate(*stub, token_request(4, 3)).status.ok());
  c.stop();
  ASSERT_TRUE(wait_until([&] { return is_not_serving(coord->address(), group_health(c)); }));
  const latte::v1::StatsResponse s = stats(*stub);
  ASSERT_EQ(s.shard_groups_size(), 3);
  EXPECT_EQ(s.shard_groups(0).address(), a.address());
  EXPECT_EQ(s.shard_groups(1).address(), b.address());
  EXPECT_EQ(s.shard_groups(2).address(), c.address());
  const int calls_ab = a.generate_calls() + b.generate_calls();
  int64_t routed = 0;
  for (const auto& g : s.shard_groups()) routed += g.requests_routed();
  EXPECT_EQ(routed, 4);
  EXPECT_TRUE(s.shard_groups(0).has_stats());
  EXPECT_TRUE(s.shard_groups(1).has_stats());
  EXPECT_FALSE(s.shard_groups(2).has_stats());
  EXPECT_FALSE(s.shard_groups(2).healthy());
  // Sums over the groups that answered (a and b): the scripted shards report 100 free blocks,
  // their generated tokens and their Generate calls as finished requests.
  EXPECT_EQ(s.blocks_free(), 200);
  EXPECT_EQ(s.generated_tokens(), 3 * calls_ab);
  EXPECT_EQ(s.requests_finished(), calls_ab);
  EXPECT_LT(s.uptime_s(), 1000) << "uptime is the coordinator's, not a sum of the shards'";
}

}  // namespace
}  // namespace latte::test
