// A latte.v1.GenerateRequest turned into an EngineRequest: the chat template, tokenization, the
// server's defaults and limits. It runs on the gRPC handler's thread, so encoding long prompts
// does not hold up the engine. What the engine itself checks (an empty prompt, token ids outside
// the vocabulary, sampling values out of range, empty stop strings, prompt + output longer than the
// context) is left to Engine::submit(), whose message the client gets unchanged, so each rule
// lives in one place.
#pragma once
#include <grpcpp/grpcpp.h>

#include <cstdint>

#include "core/model/config.h"
#include "core/tokenizer/tokenizer.h"
#include "inference/engine/engine.h"
#include "inference/server/server_limits.h"
#include "latte/v1/inference.pb.h"

namespace latte::server {

struct ServedModel {
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;  // may be null: token-id prompts only
  bool has_chat_template = false;
};

struct PreparedGenerate {
  EngineRequest request;  // deadline not set (the handler knows it)
  int64_t prompt_tokens = 0;
};

// OK and `out` filled, or INVALID_ARGUMENT with a message naming the field and the problem.
// `seed` is used when the request sets none.
grpc::Status prepare_generate(const v1::GenerateRequest& in, const ServedModel& model, const ServerLimits& limits,
                              uint64_t seed, PreparedGenerate& out);

}  // namespace latte::server
