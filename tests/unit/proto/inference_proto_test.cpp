// latte.v1 serving API: the generated messages round-trip through the wire format and the service
// exposes the methods the server implements.
#include <gtest/gtest.h>

#include <string>

#include "latte/v1/inference.grpc.pb.h"
#include "latte/v1/inference.pb.h"

namespace {

using latte::v1::GenerateRequest;

GenerateRequest roundtrip(const GenerateRequest& req) {
  std::string wire;
  EXPECT_TRUE(req.SerializeToString(&wire));
  GenerateRequest back;
  EXPECT_TRUE(back.ParseFromString(wire));
  return back;
}

TEST(InferenceProto, GenerateRequestTextPromptRoundTrips) {
  GenerateRequest req;
  req.set_request_id("req-1");
  req.set_text("Once upon a time");
  req.set_max_new_tokens(64);
  req.mutable_sampling()->set_temperature(0.8f);
  req.mutable_sampling()->set_top_k(40);
  req.mutable_sampling()->set_top_p(0.95f);
  req.mutable_sampling()->set_repetition_penalty(1.1f);
  req.set_seed(1234);
  req.add_stop("The end.");
  req.add_stop("\n\n");
  req.set_chat_template(true);

  const GenerateRequest back = roundtrip(req);
  EXPECT_EQ(back.prompt_case(), GenerateRequest::kText);
  EXPECT_FALSE(back.has_token_ids());
  EXPECT_EQ(back.text(), "Once upon a time");
  EXPECT_EQ(back.request_id(), "req-1");
  EXPECT_EQ(back.max_new_tokens(), 64);
  EXPECT_FLOAT_EQ(back.sampling().temperature(), 0.8f);
  EXPECT_EQ(back.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(back.sampling().top_p(), 0.95f);
  EXPECT_FLOAT_EQ(back.sampling().repetition_penalty(), 1.1f);
  ASSERT_TRUE(back.has_seed());
  EXPECT_EQ(back.seed(), 1234u);
  ASSERT_EQ(back.stop_size(), 2);
  EXPECT_EQ(back.stop(0), "The end.");
  EXPECT_EQ(back.stop(1), "\n\n");
  EXPECT_TRUE(back.chat_template());
  EXPECT_FALSE(back.ignore_eos());
}

TEST(InferenceProto, GenerateRequestTokenIdsPromptRoundTrips) {
  GenerateRequest req;
  req.set_text("replaced by the token ids below");  // setting the other branch clears this one
  for (int id : {1, 410, 259, 511}) req.mutable_token_ids()->add_ids(id);
  req.set_max_new_tokens(8);

  const GenerateRequest back = roundtrip(req);
  EXPECT_EQ(back.prompt_case(), GenerateRequest::kTokenIds);
  EXPECT_TRUE(back.text().empty());
  ASSERT_EQ(back.token_ids().ids_size(), 4);
  EXPECT_EQ(back.token_ids().ids(0), 1);
  EXPECT_EQ(back.token_ids().ids(1), 410);
  EXPECT_EQ(back.token_ids().ids(3), 511);
  EXPECT_EQ(back.max_new_tokens(), 8);
  EXPECT_FALSE(back.has_seed());  // optional: unset stays unset
  EXPECT_FALSE(back.has_sampling());
  EXPECT_EQ(back.sampling().temperature(), 0.0f);  // greedy by default
}

TEST(InferenceProto, EmptyRequestHasNoPrompt) {
  const GenerateRequest back = roundtrip(GenerateRequest());
  EXPECT_EQ(back.prompt_case(), GenerateRequest::PROMPT_NOT_SET);
  EXPECT_FALSE(back.has_max_new_tokens());  // unset: the server's default
}

// max_new_tokens has presence: an explicit 0 (a bad request) is not the same as unset.
TEST(InferenceProto, ExplicitZeroMaxNewTokensIsKept) {
  GenerateRequest req;
  req.set_max_new_tokens(0);
  const GenerateRequest back = roundtrip(req);
  EXPECT_TRUE(back.has_max_new_tokens());
  EXPECT_EQ(back.max_new_tokens(), 0);
}

TEST(InferenceProto, FinalGenerateResponseCarriesFinishReasonAndUsage) {
  latte::v1::GenerateResponse resp;
  resp.add_token_ids(2);
  resp.set_finish_reason(latte::v1::FINISH_REASON_EOS);
  resp.mutable_usage()->set_prompt_tokens(5);
  resp.mutable_usage()->set_completion_tokens(17);
  resp.mutable_usage()->set_prefix_cached_tokens(4);
  resp.mutable_usage()->set_time_to_first_token_s(0.25);
  std::string wire;
  ASSERT_TRUE(resp.SerializeToString(&wire));
  latte::v1::GenerateResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.finish_reason(), latte::v1::FINISH_REASON_EOS);
  EXPECT_EQ(back.usage().prompt_tokens(), 5);
  EXPECT_EQ(back.usage().completion_tokens(), 17);
  EXPECT_EQ(back.usage().prefix_cached_tokens(), 4);
  EXPECT_DOUBLE_EQ(back.usage().time_to_first_token_s(), 0.25);
  EXPECT_EQ(latte::v1::FinishReason_Name(latte::v1::FINISH_REASON_STOP_STRING),
            "FINISH_REASON_STOP_STRING");
}

TEST(InferenceProto, CoordinatorStatsCarryOneEntryPerShardGroup) {
  latte::v1::StatsResponse s;
  s.set_running(3);
  latte::v1::ShardGroupStats* g = s.add_shard_groups();
  g->set_address("10.0.0.2:50052");
  g->set_healthy(false);
  g->set_unhealthy_reason("health check: NOT_SERVING");
  g->set_outstanding_tokens(1234);
  g->mutable_stats()->set_blocks_free(7);
  std::string wire;
  ASSERT_TRUE(s.SerializeToString(&wire));
  latte::v1::StatsResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.shard_groups_size(), 1);
  EXPECT_EQ(back.shard_groups(0).address(), "10.0.0.2:50052");
  EXPECT_FALSE(back.shard_groups(0).healthy());
  EXPECT_EQ(back.shard_groups(0).outstanding_tokens(), 1234);
  EXPECT_EQ(back.shard_groups(0).stats().blocks_free(), 7);
  // Numbered apart from the shard's own fields, so that those can grow without colliding.
  EXPECT_EQ(latte::v1::StatsResponse::descriptor()->FindFieldByName("shard_groups")->number(), 100);
  // A shard's answer (no groups) is byte for byte what it was before the field existed.
  latte::v1::StatsResponse shard;
  shard.set_running(3);
  std::string shard_wire;
  ASSERT_TRUE(shard.SerializeToString(&shard_wire));
  EXPECT_EQ(shard_wire, "\x08\x03");
}

TEST(InferenceProto, ServiceMethods) {
  EXPECT_STREQ(latte::v1::Inference::service_full_name(), "latte.v1.Inference");
  const google::protobuf::ServiceDescriptor* svc =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("latte.v1.Inference");
  ASSERT_NE(svc, nullptr);
  ASSERT_EQ(svc->method_count(), 4);

  const auto* generate = svc->FindMethodByName("Generate");
  ASSERT_NE(generate, nullptr);
  EXPECT_FALSE(generate->client_streaming());
  EXPECT_TRUE(generate->server_streaming());
  EXPECT_EQ(generate->input_type()->full_name(), "latte.v1.GenerateRequest");
  EXPECT_EQ(generate->output_type()->full_name(), "latte.v1.GenerateResponse");

  for (const char* name : {"Tokenize", "ModelInfo", "Stats"}) {
    const auto* m = svc->FindMethodByName(name);
    ASSERT_NE(m, nullptr) << name;
    EXPECT_FALSE(m->client_streaming()) << name;
    EXPECT_FALSE(m->server_streaming()) << name;
    EXPECT_EQ(m->input_type()->full_name(), std::string("latte.v1.") + name + "Request");
    EXPECT_EQ(m->output_type()->full_name(), std::string("latte.v1.") + name + "Response");
  }
}

}  // namespace
