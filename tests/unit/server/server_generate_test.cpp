// The server against the engine and generate(): streamed greedy text and tokens equal generate()'s
// for the same prompt alone, whether the requests come one at a time or all at once; Tokenize,
// ModelInfo and Stats answer from the tokenizer, the model and the engine.
#include <map>
#include <set>

#include "core/model/model_tensors.h"
#include "core/model/paged_kv_cache.h"
#include "inference/server/model_info.h"
#include "tests/unit/server/server_test_util.h"

namespace latte::test {
namespace {

const std::vector<std::string> kPrompts = {"Once upon a time", "Lily wanted to", "The big dog ran to the park and",
                                           "One day"};

void expect_equals_generate(TestModel& m, const std::string& prompt, int32_t max_new, const Streamed& got) {
  SCOPED_TRACE(m.name + " prompt \"" + prompt + "\"");
  const Expected want = greedy_alone(m, prompt, max_new);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_GE(got.messages, 2) << "tokens should stream in more than the final message";
  const v1::GenerateResponse& fin = got.last;
  const bool eos = int64_t(want.tokens.size()) < max_new;
  EXPECT_EQ(fin.finish_reason(), eos ? v1::FINISH_REASON_EOS : v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(fin.usage().prompt_tokens(), want.prompt_tokens);
  EXPECT_EQ(fin.usage().completion_tokens(), int32_t(want.tokens.size()) + (eos ? 1 : 0));
  EXPECT_GT(fin.usage().time_to_first_token_s(), 0);
  EXPECT_GE(fin.usage().total_time_s(), fin.usage().time_to_first_token_s());
}

TEST(ServerGenerate, StreamedGreedyTextEqualsGenerateOneAtATime) {
  for (TestModel* m : stories_models()) {
    Served s(*m);
    for (const std::string& p : kPrompts) {
      const Streamed got = run_generate(*s.stub, text_request(p, 60));
      expect_equals_generate(*m, p, 60, got);
      EXPECT_FALSE(got.last.request_id().empty());
    }
  }
}

TEST(ServerGenerate, ConcurrentStreamsEachEqualGenerateAlone) {
  for (TestModel* m : stories_models()) {
    Served s(*m);
    std::vector<Streamed> got(kPrompts.size());
    std::vector<std::thread> clients;
    for (size_t i = 0; i < kPrompts.size(); ++i)
      clients.emplace_back([&, i] {
        v1::GenerateRequest r = text_request(kPrompts[i], int32_t(40 + 10 * i));
        r.set_request_id("client-" + std::to_string(i));
        got[i] = run_generate(*s.stub, r);
      });
    for (std::thread& t : clients) t.join();
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      expect_equals_generate(*m, kPrompts[i], int32_t(40 + 10 * i), got[i]);
      EXPECT_EQ(got[i].last.request_id(), "client-" + std::to_string(i));
    }
  }
}

// A token-id prompt is used verbatim; a stop string cuts the text and is reported.
TEST(ServerGenerate, TokenIdPromptAndStopString) {
  TestModel& m = stories();
  Served s(m);
  const Expected want = greedy_alone(m, "Once upon a time", 60);
  v1::GenerateRequest r;
  for (int32_t id : m.tok->encode("Once upon a time", true)) r.mutable_token_ids()->add_ids(id);
  r.set_max_new_tokens(60);
  Streamed got = run_generate(*s.stub, r);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.text, want.text);

  ASSERT_GT(want.text.size(), 40u);
  const std::string stop = want.text.substr(25, 5);
  r.add_stop(stop);
  got = run_generate(*s.stub, r);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.text, want.text.substr(0, want.text.find(stop)));
  EXPECT_EQ(got.last.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(got.last.matched_stop(), stop);
}

// A seeded sampled request is generate() with the same sampling (top_p 0 on the wire: no nucleus
// cut); requests that set no seed get different seeds, even when their clients name them.
TEST(ServerGenerate, SeededSamplingEqualsGenerateAndUnseededRequestsDiffer) {
  TestModel& m = stories();
  Served s(m);
  v1::GenerateRequest r = text_request("Once upon a time", 50);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_top_k(40);
  r.set_seed(1234);
  GenerateParams p;
  p.prompt = "Once upon a time";
  p.steps = int64_t(m.tok->encode(p.prompt, true).size()) + 50 - 1;
  p.sampling = {1.0f, 1.0f, 40, 1234};
  const GenerateResult g = generate(*m.model, *m.tok, p, [](const std::string&) {});
  const std::vector<int32_t> want(g.tokens.begin() + g.prompt_tokens, g.tokens.end());
  for (int i = 0; i < 2; ++i) {
    const Streamed got = run_generate(*s.stub, r);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.tokens, want);
  }
  r.clear_seed();
  std::set<std::vector<int32_t>> outputs;
  for (int i = 0; i < 3; ++i) {
    r.set_request_id("same-client");
    const Streamed got = run_generate(*s.stub, r);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    outputs.insert(got.tokens);
  }
  EXPECT_GE(outputs.size(), 2u) << "three unseeded requests sampled the same text";
}

TEST(ServerGenerate, TokenizeAnswersFromTheTokenizer) {
  TestModel& m = stories();
  Served s(m);
  for (bool bos : {false, true}) {
    grpc::ClientContext c;
    v1::TokenizeRequest req;
    req.set_text("Once upon a time, Lily\nsaw <0x41> a cat");
    req.set_add_bos(bos);
    v1::TokenizeResponse resp;
    ASSERT_TRUE(s.stub->Tokenize(&c, req, &resp).ok());
    const std::vector<int32_t> want = m.tok->encode(req.text(), bos);
    ASSERT_EQ(std::vector<int32_t>(resp.ids().begin(), resp.ids().end()), want);
    ASSERT_EQ(resp.pieces_size(), resp.ids_size());
    for (int i = 0; i < resp.ids_size(); ++i) EXPECT_EQ(resp.pieces(i), m.tok->piece(resp.ids(i)));
    EXPECT_EQ(resp.ids(0) == m.tok->bos_id(), bos);
  }
  grpc::ClientContext c;
  v1::TokenizeRequest chat;
  chat.set_text("hi");
  chat.set_chat_template(true);
  v1::TokenizeResponse resp;
  const grpc::Status st = s.stub->Tokenize(&c, chat, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("no chat template"), std::string::npos) << st.error_message();
}

TEST(ServerGenerate, ModelInfoDescribesModelAndCache) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Served s(*m);
    grpc::ClientContext c;
    v1::ModelInfoResponse info;
    ASSERT_TRUE(s.stub->ModelInfo(&c, v1::ModelInfoRequest(), &info).ok());
    const ModelConfig& cfg = m->model->config();
    EXPECT_EQ(info.model_name(), "test-model");
    EXPECT_EQ(info.architecture(), "llama");
    EXPECT_EQ(info.attention(), cfg.is_mla() ? v1::ATTENTION_KIND_MLA : v1::ATTENTION_KIND_LLAMA);
    EXPECT_EQ(info.n_layers(), cfg.n_layers);
    EXPECT_EQ(info.n_heads(), cfg.n_heads);
    EXPECT_EQ(info.n_kv_heads(), cfg.n_kv_heads);
    EXPECT_EQ(info.dim(), cfg.dim);
    EXPECT_EQ(info.head_dim(), cfg.head_dim);
    EXPECT_EQ(info.vocab_size(), 512);
    EXPECT_EQ(info.context_length(), 512);
    EXPECT_EQ(info.tp_size(), 1);
    EXPECT_EQ(info.block_size(), 16);
    EXPECT_EQ(info.kv_dtype(), "f32");
    EXPECT_EQ(info.bos_id(), 1);
    EXPECT_EQ(info.eos_id(), 2);
    // The cache's own figure: one block's bytes over its tokens; by hand, 4 bytes per element.
    EXPECT_EQ(info.kv_bytes_per_token(), PagedKvCache::bytes_per_block(cfg, 16, DType::f32, m->model->tp()) / 16);
    EXPECT_EQ(info.kv_bytes_per_token(), 4 * cfg.kv_cache_elements_per_token());
    if (cfg.is_mla()) {
      EXPECT_EQ(info.kv_latent_rank(), cfg.kv_lora_rank());
      EXPECT_EQ(info.rope_dim(), cfg.rope_dim());
      EXPECT_GT(info.kv_latent_rank(), 0);
    } else {
      EXPECT_EQ(info.kv_latent_rank(), 0);
      EXPECT_EQ(info.rope_dim(), 0);
    }
  }
}

// Under TP the MLA latent is on every rank; Llama KV heads are split.
TEST(ServerGenerate, KvBytesPerTokenSumsOverRanks) {
  const ModelConfig& llama = stories().model->config();
  const ModelConfig& mla = stories_mla().model->config();
  EXPECT_EQ(server::kv_bytes_per_token(llama, DType::f32, 2), server::kv_bytes_per_token(llama, DType::f32, 1));
  const int64_t latent = 4 * mla.n_layers * mla.kv_lora_rank();
  EXPECT_EQ(server::kv_bytes_per_token(mla, DType::f32, 2), server::kv_bytes_per_token(mla, DType::f32, 1) + latent);
  EXPECT_EQ(server::kv_bytes_per_token(llama, DType::bf16, 1) * 2, server::kv_bytes_per_token(llama, DType::f32, 1));
}

TEST(ServerGenerate, StatsFollowTheEngine) {
  TestModel& m = stories();
  Served s(m);
  const v1::StatsResponse before = stats_of(*s.stub);
  EXPECT_EQ(before.blocks_used(), 0);
  EXPECT_EQ(before.blocks_free(), 64);
  EXPECT_EQ(before.requests_finished(), 0);
  EXPECT_EQ(before.running() + before.waiting() + before.preempted(), 0);
  int64_t generated = 0;
  for (int round = 0; round < 2; ++round) {  // the same prompt twice: the second reuses its prefix
    const Streamed got = run_generate(*s.stub, text_request(kPrompts[2] + kPrompts[2] + kPrompts[2], 30));
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    generated += int64_t(got.tokens.size());
    if (round == 1) {
      EXPECT_GE(got.last.usage().prefix_cached_tokens(), 16);
    }
  }
  const v1::StatsResponse after = stats_of(*s.stub);
  EXPECT_EQ(after.requests_finished(), 2);
  EXPECT_EQ(after.generated_tokens(), generated);
  EXPECT_GT(after.steps(), 0);
  EXPECT_EQ(after.blocks_used(), 0);
  EXPECT_EQ(after.blocks_free(), 64);
  EXPECT_GT(after.prefix_cache_hits(), 0);
  EXPECT_EQ(after.prefix_cached_tokens(), 16 * after.prefix_cache_hits());
  EXPECT_GT(after.generated_tokens_per_s(), 0);
  EXPECT_GT(after.prompt_tokens_per_s(), 0);
  EXPECT_GT(after.uptime_s(), 0);
}

}  // namespace
}  // namespace latte::test
