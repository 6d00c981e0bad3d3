#include "inference/server/generate_request.h"

#include <algorithm>

#include "core/base/error.h"
#include "inference/engine/chat_template.h"

namespace latte::server {
namespace {

grpc::Status invalid(const std::string& message) { return {grpc::StatusCode::INVALID_ARGUMENT, message}; }

// The prompt's token ids (empty for an empty text: the engine reports the empty prompt).
grpc::Status prompt_tokens(const v1::GenerateRequest& in, const ServedModel& model, std::vector<int32_t>& out) {
  switch (in.prompt_case()) {
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return invalid("the request has no prompt: set text or token_ids");
    case v1::GenerateRequest::kTokenIds:
      if (in.chat_template()) return invalid("chat_template applies to a text prompt, not to token_ids");
      out.assign(in.token_ids().ids().begin(), in.token_ids().ids().end());
      return grpc::Status::OK;
    case v1::GenerateRequest::kText:
      break;
  }
  if (!model.tokenizer) return invalid("this server has no tokenizer: send the prompt as token_ids");
  if (in.chat_template() && !model.has_chat_template)
    return invalid("chat_template: this model has no chat template (its tokenizer has no <|im_start|> and "
                   "<|im_end|> tokens)");
  if (in.text().empty()) return grpc::Status::OK;
  const std::string text = in.chat_template() ? chatml_user_turn(in.text()) : in.text();
  out = model.tokenizer->encode(text, model.tokenizer->adds_bos_to_prompts());
  return grpc::Status::OK;
}

// max_new_tokens after the default and the limit, cut to what the context leaves after the prompt
// (the proto promises a LENGTH finish at the context, not a refusal). A prompt that fills the
// context is left for the engine to refuse, naming both lengths.
grpc::Status new_token_budget(const v1::GenerateRequest& in, const ModelConfig& config, const ServerLimits& limits,
                              int64_t prompt_len, int64_t& out) {
  const int64_t limit = limits.max_new_tokens > 0 ? limits.max_new_tokens : config.max_seq_len;
  if (!in.has_max_new_tokens()) {
    out = std::min(limits.default_max_new_tokens, limit);
  } else {
    out = in.max_new_tokens();
    if (out > limit)
      return invalid(str_cat("max_new_tokens ", out, " is above this server's limit of ", limit));
    if (out < 1) return grpc::Status::OK;  // the engine names the problem
  }
  if (prompt_len >= 1 && prompt_len < config.max_seq_len) out = std::min(out, config.max_seq_len - prompt_len);
  return grpc::Status::OK;
}

grpc::Status sampling_params(const v1::SamplingParams& in, uint64_t seed, SamplingParams& out) {
  // Neither 0 (the server default) nor 1 asks for a penalty; the sampler has none to apply.
  if (in.repetition_penalty() != 0 && in.repetition_penalty() != 1)
    return invalid(str_cat("repetition_penalty ", in.repetition_penalty(),
                           " is not supported: this server applies no penalty (use 0 or 1)"));
  out.temperature = in.temperature();
  out.top_k = in.top_k();
  out.top_p = in.top_p() == 0 ? 1.0f : in.top_p();  // 0: no nucleus cut
  out.seed = seed;
  return grpc::Status::OK;
}

}  // namespace

grpc::Status prepare_generate(const v1::GenerateRequest& in, const ServedModel& model, const ServerLimits& limits,
                              uint64_t seed, PreparedGenerate& out) {
  EngineRequest& r = out.request;
  if (grpc::Status s = prompt_tokens(in, model, r.prompt); !s.ok()) return s;
  out.prompt_tokens = int64_t(r.prompt.size());
  const int64_t prompt_limit = limits.max_prompt_tokens > 0 ? limits.max_prompt_tokens : model.config->max_seq_len;
  if (out.prompt_tokens > prompt_limit)
    return invalid(str_cat("the prompt has ", out.prompt_tokens, " tokens; this server accepts at most ", prompt_limit));
  if (grpc::Status s = new_token_budget(in, *model.config, limits, out.prompt_tokens, r.max_new_tokens); !s.ok())
    return s;
  if (grpc::Status s = sampling_params(in.sampling(), in.has_seed() ? in.seed() : seed, r.sampling); !s.ok())
    return s;
  r.stop_strings.assign(in.stop().begin(), in.stop().end());
  r.stop_at_eos = !in.ignore_eos();
  return grpc::Status::OK;
}

}  // namespace latte::server
