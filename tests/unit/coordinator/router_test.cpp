// The routing policy (router.h) and what a request costs, without any server.
#include <gtest/gtest.h>

#include "inference/coordinator/prefix_affinity.h"
#include "inference/coordinator/request_cost.h"
#include "inference/coordinator/router.h"

namespace latte::coordinator {
namespace {

GroupView group(const std::string& address, int64_t outstanding, int in_flight = 0, bool healthy = true) {
  GroupView g;
  g.address = address;
  g.healthy = healthy;
  g.outstanding_tokens = outstanding;
  g.in_flight = in_flight;
  if (!healthy) g.unhealthy_reason = "health check: NOT_SERVING";
  return g;
}

TEST(Router, PicksTheLeastOutstandingTokensThenTheFewestRequests) {
  RoutePolicy p;
  EXPECT_EQ(choose_group({group("a", 50), group("b", 20), group("c", 30)}, 10, std::nullopt, p, 0).group, 1);
  EXPECT_EQ(choose_group({group("a", 20, 3), group("b", 20, 1)}, 10, std::nullopt, p, 0).group, 1);
}

TEST(Router, IdleGroupsTakeTurns) {
  RoutePolicy p;
  const std::vector<GroupView> g = {group("a", 0), group("b", 0), group("c", 0)};
  EXPECT_EQ(choose_group(g, 1, std::nullopt, p, 0).group, 0);
  EXPECT_EQ(choose_group(g, 1, std::nullopt, p, 1).group, 1);
  EXPECT_EQ(choose_group(g, 1, std::nullopt, p, 2).group, 2);
  EXPECT_EQ(choose_group(g, 1, std::nullopt, p, 3).group, 0);
}

TEST(Router, SkipsUnhealthyAndAlreadyTriedGroups) {
  RoutePolicy p;
  std::vector<GroupView> g = {group("a", 0, 0, false), group("b", 90), group("c", 10)};
  g[2].excluded_reason = "failed before the first token (UNAVAILABLE)";
  EXPECT_EQ(choose_group(g, 1, std::nullopt, p, 0).group, 1);
}

TEST(Router, RefusesWithEveryGroupAndItsReason) {
  RoutePolicy p;
  p.max_group_outstanding_tokens = 100;
  std::vector<GroupView> g = {group("a", 0, 0, false), group("b", 10), group("c", 95)};
  g[1].excluded_reason = "failed before the first token (UNAVAILABLE: gone)";
  const RouteDecision d = choose_group(g, 20, std::nullopt, p, 0);
  EXPECT_EQ(d.group, -1);
  EXPECT_EQ(d.refusal.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);  // one group is merely full
  EXPECT_EQ(d.refusal.error_message(),
            "no shard group can take the request (3 groups): a: not serving (health check: NOT_SERVING); "
            "b: failed before the first token (UNAVAILABLE: gone); "
            "c: full (95 outstanding + 20 tokens > limit 100)");
  const RouteDecision down = choose_group({group("a", 0, 0, false)}, 20, std::nullopt, p, 0);
  EXPECT_EQ(down.refusal.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(choose_group({}, 1, std::nullopt, p, 0).refusal.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(Router, AffinityWinsWithinTheMarginOnly) {
  RoutePolicy p;
  p.affinity_margin_tokens = 100;
  const uint64_t key = 12345;
  const std::vector<GroupView> idle = {group("a", 0), group("b", 0)};
  const RouteDecision d = choose_group(idle, 1, key, p, 0);
  ASSERT_GE(d.group, 0);
  const int preferred = d.group;
  for (uint64_t rotation = 0; rotation < 4; ++rotation)
    EXPECT_EQ(choose_group(idle, 1, key, p, rotation).group, preferred) << "affinity must not depend on rotation";
  std::vector<GroupView> loaded = idle;
  loaded[size_t(preferred)].outstanding_tokens = 100;  // exactly the margin: still preferred
  EXPECT_EQ(choose_group(loaded, 1, key, p, 0).group, preferred);
  loaded[size_t(preferred)].outstanding_tokens = 101;
  EXPECT_EQ(choose_group(loaded, 1, key, p, 0).group, 1 - preferred);
}

TEST(Router, AffinityMovesOnlyTheKeysOfAGroupThatLeaves) {
  RoutePolicy p;
  p.affinity_margin_tokens = 1000;
  std::vector<GroupView> three = {group("a", 0), group("b", 0), group("c", 0)};
  int moved = 0, kept = 0;
  for (uint64_t key = 1; key <= 300; ++key) {
    const int before = choose_group(three, 1, key, p, 0).group;
    std::vector<GroupView> without_c = three;
    without_c[2].healthy = false;
    const int after = choose_group(without_c, 1, key, p, 0).group;
    if (before == 2) ++moved;
    else {
      ++kept;
      EXPECT_EQ(after, before) << "key " << key << " moved although its group stayed";
    }
  }
  EXPECT_GT(moved, 50);  // about a third of 300
  EXPECT_GT(kept, 150);
}

TEST(RequestCost, PromptPlusMaxNewTokens) {
  latte::v1::GenerateRequest r;
  for (int i = 0; i < 7; ++i) r.mutable_token_ids()->add_ids(i);
  r.set_max_new_tokens(20);
  EXPECT_EQ(request_cost(r, 256), 27);
  r.clear_max_new_tokens();
  EXPECT_EQ(request_cost(r, 256), 7 + 256);
  latte::v1::GenerateRequest t;
  t.set_text(std::string(41, 'x'));  // 4 bytes a token, rounded up
  t.set_max_new_tokens(1);
  EXPECT_EQ(request_cost(t, 256), 11 + 1);
}

TEST(PrefixAffinity, KeysDependOnThePrefixOnly) {
  latte::v1::GenerateRequest a, b, c;
  a.set_text(std::string(32, 'p') + "first question");
  b.set_text(std::string(32, 'p') + "another one");
  c.set_text(std::string(31, 'p') + "q and more");
  EXPECT_EQ(affinity_key(a, 8), affinity_key(b, 8));  // 8 tokens = the first 32 bytes
  EXPECT_NE(affinity_key(a, 8), affinity_key(c, 8));
  EXPECT_FALSE(affinity_key(a, 0).has_value());
  b.set_chat_template(true);
  EXPECT_NE(affinity_key(a, 8), affinity_key(b, 8)) << "the chat template changes the encoded prefix";
  latte::v1::GenerateRequest t1, t2;
  for (int i = 0; i < 10; ++i) t1.mutable_token_ids()->add_ids(i), t2.mutable_token_ids()->add_ids(i < 4 ? i : 99);
  EXPECT_EQ(affinity_key(t1, 4), affinity_key(t2, 4));
  EXPECT_NE(affinity_key(t1, 5), affinity_key(t2, 5));
}

}  // namespace
}  // namespace latte::coordinator
