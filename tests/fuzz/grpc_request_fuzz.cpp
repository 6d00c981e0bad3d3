// A latte.v1.GenerateRequest as `latte shard` receives it off the wire: protobuf's decoding of the
// bytes (what gRPC runs on every request message), then the server's own handling of a decoded
// request: prepare_generate (chat template, tokenization, defaults and limits) and Engine::submit
// (the engine's checks and the scheduler's admission) against stories260K and its tokenizer, the
// model the shipped quickstart serves. An accepted request is cancelled and the engine stepped, so
// its blocks return to the pool; no forward pass runs. A refusal must be a gRPC status or an
// engine message; anything escaping as an exception, a crash, a leak or a hang is a finding.
#include <memory>

#include "inference/engine/engine.h"
#include "inference/engine/loaded_model.h"
#include "inference/server/generate_request.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

struct Served {
  latte::LoadedModel loaded;
  std::unique_ptr<latte::Engine> engine;
  latte::server::ServedModel model;
  latte::server::ServerLimits limits;
};

Served& served() {
  static Served s = [] {
    Served v;
    v.loaded = latte::load_model({std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin",
                                  std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin", nullptr, true});
    latte::EngineConfig config;
    config.cache_bytes = 4 << 20;  // a few hundred blocks: admission can refuse a long request
    v.engine = std::make_unique<latte::Engine>(*v.loaded.model, v.loaded.tokenizer.get(), config);
    v.model = {&v.loaded.model->config(), v.loaded.tokenizer.get(), false};
    v.limits.max_prompt_tokens = 256;
    v.limits.max_new_tokens = 128;
    return v;
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Served& s = served();
  latte::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, int(size))) return 0;  // gRPC answers INTERNAL for undecodable bytes
  latte::fuzz::parse_or_reject([&] {
    latte::server::PreparedGenerate prepared;
    const grpc::Status status = latte::server::prepare_generate(request, s.model, s.limits, 42, prepared);
    if (!status.ok()) {
      if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT || status.error_message().empty()) {
        std::fprintf(stderr, "latte fuzz: prepare_generate answered code %d with '%s'\n", int(status.error_code()),
                     status.error_message().c_str());
        std::abort();
      }
      return;
    }
    const latte::SubmitResult r = s.engine->submit(std::move(prepared.request));
    if (r.id == 0) {
      if (r.error.empty()) {
        std::fprintf(stderr, "latte fuzz: the engine refused a request without saying why\n");
        std::abort();
      }
      return;
    }
    s.engine->cancel(r.id);
    while (s.engine->has_work()) (void)s.engine->step();
  });
  return 0;
}
