// Requests the server must refuse, each with its status code and a message naming the problem, and
// the server serving the next good request normally; the bearer token; the request limit; TLS.
#include "core/base/file_io.h"
#include "tests/unit/server/server_test_util.h"

namespace latte::test {
namespace {

struct BadRequest {
  std::string name;
  std::function<void(v1::GenerateRequest&)> make;
  grpc::StatusCode code;
  std::string message;  // a part of the status message
};

v1::GenerateRequest ids_request(const std::vector<int32_t>& ids, int32_t max_new = 8) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.set_max_new_tokens(max_new);
  return r;
}

std::vector<int32_t> repeated_ids(int n) {
  std::vector<int32_t> ids(size_t(n), 300);
  ids[0] = 1;
  return ids;
}

std::vector<BadRequest> bad_requests() {
  using C = grpc::StatusCode;
  return {
      {"no prompt", [](v1::GenerateRequest& r) { r.set_max_new_tokens(4); }, C::INVALID_ARGUMENT, "has no prompt"},
      {"empty text", [](v1::GenerateRequest& r) { r.set_text(""); }, C::INVALID_ARGUMENT, "empty prompt"},
      {"empty token ids", [](v1::GenerateRequest& r) { r.mutable_token_ids(); }, C::INVALID_ARGUMENT, "empty prompt"},
      {"unknown token id", [](v1::GenerateRequest& r) { r = ids_request({1, 300, 512}); }, C::INVALID_ARGUMENT,
       "prompt token 2 is 512, outside the model's vocabulary [0, 512)"},
      {"negative token id", [](v1::GenerateRequest& r) { r = ids_request({1, -7}); }, C::INVALID_ARGUMENT,
       "prompt token 1 is -7, outside"},
      {"prompt over the context", [](v1::GenerateRequest& r) { r = ids_request(repeated_ids(600)); },
       C::INVALID_ARGUMENT, "the prompt has 600 tokens; this server accepts at most 512"},
      {"prompt filling the context", [](v1::GenerateRequest& r) { r = ids_request(repeated_ids(512)); },
       C::INVALID_ARGUMENT, "exceeds the context length 512"},
      {"max new tokens 0", [](v1::GenerateRequest& r) { r = ids_request({1, 300}, 0); }, C::INVALID_ARGUMENT,
       "max_new_tokens must be at least 1, got 0"},
      {"max new tokens -5", [](v1::GenerateRequest& r) { r = ids_request({1, 300}, -5); }, C::INVALID_ARGUMENT,
       "max_new_tokens must be at least 1, got -5"},
      {"max new tokens over the limit", [](v1::GenerateRequest& r) { r = ids_request({1, 300}, 301); },
       C::INVALID_ARGUMENT, "max_new_tokens 301 is above this server's limit of 300"},
      {"top_p 1.5",
       [](v1::GenerateRequest& r) {
         r = ids_request({1, 300});
         r.mutable_sampling()->set_temperature(0.8f);
         r.mutable_sampling()->set_top_p(1.5f);
       },
       C::INVALID_ARGUMENT, "top-p must be in [0, 1], got 1.5"},
      {"negative temperature", [](v1::GenerateRequest& r) { r = ids_request({1, 300}); r.mutable_sampling()->set_temperature(-1); },
       C::INVALID_ARGUMENT, "temperature must be >= 0, got -1"},
      {"negative top_k", [](v1::GenerateRequest& r) { r = ids_request({1, 300}); r.mutable_sampling()->set_top_k(-3); },
       C::INVALID_ARGUMENT, "top-k must be >= 0, got -3"},
      {"repetition penalty",
       [](v1::GenerateRequest& r) { r = ids_request({1, 300}); r.mutable_sampling()->set_repetition_penalty(1.3f); },
       C::INVALID_ARGUMENT, "repetition_penalty 1.3 is not supported"},
      {"empty stop string", [](v1::GenerateRequest& r) { r = ids_request({1, 300}); r.add_stop("x"); r.add_stop(""); },
       C::INVALID_ARGUMENT, "stop string 1 is empty"},
      {"chat template without one", [](v1::GenerateRequest& r) { r.set_text("hi"); r.set_chat_template(true); },
       C::INVALID_ARGUMENT, "this model has no chat template"},
      {"chat template on token ids", [](v1::GenerateRequest& r) { r = ids_request({1, 300}); r.set_chat_template(true); },
       C::INVALID_ARGUMENT, "chat_template applies to a text prompt, not to token_ids"},
      {"oversized message", [](v1::GenerateRequest& r) { r.set_text(std::string(5000, 'a')); },
       C::RESOURCE_EXHAUSTED, "larger than max"},
  };
}

TEST(ServerErrors, EachBadRequestGetsItsStatusAndTheServerGoesOn) {
  TestModel& m = stories();
  server::ServerOptions o = loopback_options();
  o.limits.max_message_bytes = 4096;
  o.limits.max_new_tokens = 300;
  Served s(m, o);
  for (const BadRequest& bad : bad_requests()) {
    SCOPED_TRACE(bad.name);
    v1::GenerateRequest r;
    bad.make(r);
    const Streamed got = run_generate(*s.stub, r);
    EXPECT_EQ(got.status.error_code(), bad.code) << got.status.error_message();
    EXPECT_NE(got.status.error_message().find(bad.message), std::string::npos) << got.status.error_message();
    EXPECT_EQ(got.messages, 0);
    // ...and the next good request is served in full.
    const Streamed good = run_generate(*s.stub, text_request("Once upon a time", 20));
    ASSERT_TRUE(good.status.ok()) << good.status.error_message();
    EXPECT_EQ(good.tokens, greedy_alone(m, "Once upon a time", 20).tokens);
  }
  // A prompt one token short of the context gets the one token left (LENGTH), not a refusal.
  const Streamed edge = run_generate(*s.stub, ids_request(repeated_ids(511), 50));
  ASSERT_TRUE(edge.status.ok()) << edge.status.error_message();
  EXPECT_EQ(edge.last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_LE(edge.last.usage().completion_tokens(), 1);
  const v1::StatsResponse st = stats_of(*s.stub);
  EXPECT_EQ(st.blocks_used(), 0);
  EXPECT_EQ(st.running() + st.waiting(), 0);
}

TEST(ServerErrors, BearerTokenIsRequiredWhenConfigured) {
  TestModel& m = stories();
  server::ServerOptions o = loopback_options();
  o.auth_token = "s3cret-token";
  Served s(m, o);
  struct Case {
    const char* name;
    const char* header;  // null: no authorization metadata
    bool ok;
    const char* message;
  };
  const Case cases[] = {
      {"missing", nullptr, false, "requires a bearer token"},
      {"wrong token", "Bearer s3cret-tokem", false, "the bearer token is not valid"},
      {"token prefix", "Bearer s3cret", false, "the bearer token is not valid"},
      {"token plus more", "Bearer s3cret-token2", false, "the bearer token is not valid"},
      {"other scheme", "Basic s3cret-token", false, "not of the form \"Bearer <token>\""},
      {"right token", "Bearer s3cret-token", true, ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto setup = [&](grpc::ClientContext& ctx) {
      if (c.header) ctx.AddMetadata("authorization", c.header);
    };
    const Streamed got = run_generate(*s.stub, text_request("Once upon a time", 5), setup);
    EXPECT_EQ(got.status.ok(), c.ok) << got.status.error_message();
    if (!c.ok) {
      EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_NE(got.status.error_message().find(c.message), std::string::npos) << got.status.error_message();
      EXPECT_EQ(got.status.error_message().find("s3cret"), std::string::npos) << "the message must not echo tokens";
    }
    // The unary calls are guarded the same way.
    grpc::ClientContext ctx;
    setup(ctx);
    v1::ModelInfoResponse info;
    EXPECT_EQ(s.stub->ModelInfo(&ctx, v1::ModelInfoRequest(), &info).error_code(),
              c.ok ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED);
  }
}

// Two requests held (one running, one waiting: max_running 1); a third is refused, and once the two
// are gone the server takes requests again.
TEST(ServerErrors, FullServerAnswersResourceExhausted) {
  TestModel& m = stories();
  server::ServerOptions o = loopback_options();
  o.limits.max_queued_requests = 2;
  Served s(m, o, small_engine_config(*m.model, /*max_running=*/1));
  v1::GenerateRequest long_request = text_request("Once upon a time", 400);
  long_request.set_ignore_eos(true);
  std::vector<Streamed> held(2);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    clients.emplace_back([&, i] {
      grpc::ClientContext* ctx = contexts[size_t(i)].get();
      auto reader = s.stub->Generate(ctx, long_request);
      v1::GenerateResponse r;
      while (reader->Read(&r)) ++held[size_t(i)].messages;
      held[size_t(i)].status = reader->Finish();
    });
  }
  ASSERT_TRUE(eventually([&] {
    const v1::StatsResponse st = stats_of(*s.stub);
    return st.running() + st.waiting() == 2;
  })) << "the two requests never showed up in Stats";
  const Streamed third = run_generate(*s.stub, text_request("Once upon a time", 5));
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.status.error_message();
  EXPECT_NE(third.status.error_message().find("already holds 2 requests"), std::string::npos)
      << third.status.error_message();
  for (auto& ctx : contexts) ctx->TryCancel();
  for (std::thread& t : clients) t.join();
  for (const Streamed& h : held) EXPECT_EQ(h.status.error_code(), grpc::StatusCode::CANCELLED);
  // Both cancellations reach the engine loop asynchronously; the waiting one holds no blocks, so
  // "no block used" alone can be true while it still holds its place.
  v1::StatsResponse last;
  ASSERT_TRUE(eventually([&] {
    last = stats_of(*s.stub);
    return last.requests_finished() == 2 && last.running() + last.waiting() == 0 && last.blocks_used() == 0;
  })) << "the two cancelled requests never left the server: " << last.ShortDebugString();
  const Streamed after = run_generate(*s.stub, text_request("Once upon a time", 5));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

// TLS with the test certificate (tests/data/tls, for 127.0.0.1 and localhost): a client that
// trusts it is served; a plaintext client is not.
TEST(ServerErrors, TlsServesTrustingClientsOnly) {
  TestModel& m = stories();
  const std::string dir = std::string(LATTE_TEST_DATA_DIR) + "/tls/";
  server::ServerOptions o = loopback_options();
  o.tls_cert_pem = read_text_file(dir + "cert.pem");
  o.tls_key_pem = read_text_file(dir + "key.pem");
  grpc::SslCredentialsOptions trust;
  trust.pem_root_certs = o.tls_cert_pem;
  Served s(m, o, {}, grpc::SslCredentials(trust));
  const Streamed got = run_generate(*s.stub, text_request("Once upon a time", 10));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.tokens, greedy_alone(m, "Once upon a time", 10).tokens);

  auto plain = v1::Inference::NewStub(grpc::CreateChannel(s.server->address(), grpc::InsecureChannelCredentials()));
  const Streamed refused = run_generate(*plain, text_request("Once upon a time", 10),
                                        [](grpc::ClientContext& c) {
                                          c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
                                        });
  EXPECT_FALSE(refused.status.ok());
  EXPECT_EQ(refused.messages, 0);
}

TEST(ServerErrors, BadServerSetupsAreOneLineErrors) {
  TestModel& m = stories();
  Engine engine(*m.model, m.tok.get(), small_engine_config(*m.model));
  server::ServerOptions only_cert = loopback_options();
  only_cert.tls_cert_pem = "x";
  EXPECT_THROW(server::InferenceServer(engine, m.model->config(), m.tok.get(), only_cert), Error);
  server::ServerOptions zero_queue = loopback_options();
  zero_queue.limits.max_queued_requests = 0;
  EXPECT_THROW(server::InferenceServer(engine, m.model->config(), m.tok.get(), zero_queue), Error);
  // A port already taken.
  server::InferenceServer first(engine, m.model->config(), m.tok.get(), loopback_options());
  Engine other(*m.model, m.tok.get(), small_engine_config(*m.model));
  server::ServerOptions taken = loopback_options();
  taken.listen = first.address();
  try {
    server::InferenceServer second(other, m.model->config(), m.tok.get(), taken);
    ADD_FAILURE() << "two servers listened on " << taken.listen;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on " + taken.listen), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace latte::test
