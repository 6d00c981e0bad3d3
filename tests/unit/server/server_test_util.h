// What the server tests share: the models (stories260K and its MLA conversion, made in-process as
// tests/unit/engine does), an in-process InferenceServer on 127.0.0.1:0 with a client stub, and a
// Generate client that gathers a whole stream.
#pragma once
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/backend/registry.h"
#include "core/checkpoint/checkpoint.h"
#include "inference/engine/engine.h"
#include "inference/engine/generate.h"
#include "inference/engine/loaded_model.h"
#include "inference/server/inference_server.h"
#include "latte/v1/inference.grpc.pb.h"
#include "trainer/mha2mla/convert.h"

namespace latte::test {

inline const std::string kModels = LATTE_MODELS_DIR;
inline const std::string kStories = kModels + "/stories260K/stories260K.bin";
inline const std::string kStoriesTok = kModels + "/stories260K/tok512.bin";

struct TestModel {
  std::string name;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tok;
};

inline TestModel& stories() {
  static TestModel m = [] {
    LoadedModel l = load_model({kStories, kStoriesTok, nullptr, true});
    return TestModel{"stories260K", std::move(l.model), std::move(l.tokenizer)};
  }();
  return m;
}

inline TestModel& stories_mla() {
  static TestModel m = [] {
    Checkpoint src = load_checkpoint(kStories);
    ConvertOptions o;
    o.strategy = RopeStrategy::high;  // no calibration text needed
    Checkpoint mla = convert_to_mla(src, o, nullptr);
    TestModel t{"stories260K-mla", nullptr, load_llama2c_tokenizer(kStoriesTok, mla.config.vocab_size)};
    t.model = std::make_unique<Transformer>(mla.config, weights_from_store(mla.config, mla.tensors), cpu_backend());
    return t;
  }();
  return m;
}

inline std::vector<TestModel*> stories_models() { return {&stories(), &stories_mla()}; }

// What generate() gives for `prompt` alone, greedy, stopping where the engine stops (EOS, BOS):
// the generated tokens and the text they add (the echoed prompt left out).
struct Expected {
  std::vector<int32_t> tokens;
  std::string text;
  int64_t prompt_tokens = 0;
};

inline Expected greedy_alone(TestModel& m, const std::string& prompt, int64_t max_new) {
  const std::vector<int32_t> ids = m.tok->encode(prompt, m.tok->adds_bos_to_prompts());
  GenerateParams p;
  p.prompt = prompt;
  p.steps = int64_t(ids.size()) + max_new - 1;  // its last step samples token max_new
  p.sampling.temperature = 0;
  p.stop_at_eos = true;
  std::vector<std::string> pieces;
  GenerateResult g = generate(*m.model, *m.tok, p, [&](const std::string& s) { pieces.push_back(s); });
  Expected e;
  e.tokens.assign(g.tokens.begin() + g.prompt_tokens, g.tokens.end());
  const size_t echoed = ids.size() - (ids[0] == m.tok->bos_id() ? 1 : 0);
  for (size_t i = echoed; i < pieces.size(); ++i) e.text += pieces[i];
  e.prompt_tokens = int64_t(ids.size());
  return e;
}

// An engine with a small cache (64 blocks of 16 tokens: every test request fits many times over).
inline EngineConfig small_engine_config(const Transformer& model, int32_t max_running = 8, int64_t blocks = 64) {
  EngineConfig c;
  c.block_size = 16;
  c.cache_bytes = blocks * PagedKvCache::bytes_per_block(model.config(), c.block_size, DType::f32, model.tp());
  c.max_tokens_per_step = 128;
  c.max_running = max_running;
  return c;
}

inline server::ServerOptions loopback_options() {
  server::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.model_name = "test-model";
  return o;
}

// An in-process server over one model, and a client stub connected to it.
struct Served {
  TestModel& m;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<server::InferenceServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Inference::Stub> stub;

  explicit Served(TestModel& model, server::ServerOptions o = loopback_options(), std::optional<EngineConfig> c = {},
                  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials())
      : m(model) {
    engine = std::make_unique<Engine>(*m.model, m.tok.get(), c ? *c : small_engine_config(*m.model));
    server = std::make_unique<server::InferenceServer>(*engine, m.model->config(), m.tok.get(), std::move(o));
    channel = grpc::CreateChannel(server->address(), creds);
    stub = v1::Inference::NewStub(channel);
  }
  ~Served() { server.reset(); }  // before the engine it drives
};

// A whole Generate stream as the client saw it.
struct Streamed {
  std::vector<int32_t> tokens;
  std::string text;
  int messages = 0;
  v1::GenerateResponse last;
  grpc::Status status;
};

using ContextSetup = std::function<void(grpc::ClientContext&)>;
// Called after each message; returning false stops reading (the caller may then cancel).
using OnMessage = std::function<bool(const v1::GenerateResponse&, grpc::ClientContext&)>;

inline Streamed run_generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                             const ContextSetup& setup = {}, const OnMessage& on_message = {}) {
  grpc::ClientContext context;
  if (setup) setup(context);
  Streamed out;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    ++out.messages;
    out.tokens.insert(out.tokens.end(), r.token_ids().begin(), r.token_ids().end());
    out.text += r.text();
    out.last = r;
    if (on_message && !on_message(r, context)) {
      context.TryCancel();
      while (reader->Read(&r)) {
      }
      break;
    }
  }
  out.status = reader->Finish();
  return out;
}

inline v1::GenerateRequest text_request(const std::string& text, int32_t max_new) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_new_tokens(max_new);
  return r;  // empty sampling: greedy
}

// Polls `done` every 5 ms for at most `limit`; whether it became true.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

inline v1::StatsResponse stats_of(v1::Inference::Stub& stub) {
  grpc::ClientContext context;
  v1::StatsResponse s;
  const grpc::Status st = stub.Stats(&context, v1::StatsRequest(), &s);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return s;
}

}  // namespace latte::test
