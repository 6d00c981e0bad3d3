#include "inference/server/inference_service.h"

#include <exception>
#include <optional>
#include <random>

#include "core/base/error.h"
#include "inference/engine/chat_template.h"
#include "inference/server/bearer_token.h"
#include "inference/server/utf8.h"

namespace latte::server {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The call's gRPC deadline on the engine's clock; none when the client set none (gRPC reports an
// infinitely distant one).
std::optional<EngineClock::time_point> engine_deadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return std::nullopt;
  return EngineClock::now() + std::chrono::duration_cast<EngineClock::duration>(deadline - now);
}

bool deadline_passed(const grpc::ServerContext& context) {
  return std::chrono::system_clock::now() >= context.deadline();
}

// Runs an RPC body and turns any exception into INTERNAL: a failing call never takes the server
// down with it.
template <typename F>
grpc::Status guarded(const char* rpc, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return {grpc::StatusCode::INTERNAL, str_cat(rpc, ": ", e.what())};
  }
}

// splitmix64: spreads consecutive call numbers over the whole seed range.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

v1::FinishReason wire_reason(FinishReason r, const std::string& matched_stop) {
  switch (r) {
    case FinishReason::stopped:
      return matched_stop.empty() ? v1::FINISH_REASON_EOS : v1::FINISH_REASON_STOP_STRING;
    case FinishReason::length:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::cancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::deadline:
      return v1::FINISH_REASON_DEADLINE;
    case FinishReason::failed:
      break;
  }
  return v1::FINISH_REASON_ERROR;
}

// The status a stream's end gives the call, and whether a final message goes out before it.
struct Ending {
  grpc::Status status;
  bool final_message = true;
  v1::FinishReason reason = v1::FINISH_REASON_ERROR;
};

Ending ending_of(const StreamNews& news) {
  switch (news.end) {
    case StreamEnd::finished:
      switch (news.reason) {
        case FinishReason::stopped:
        case FinishReason::length:
          return {grpc::Status::OK, true, wire_reason(news.reason, news.matched_stop)};
        case FinishReason::cancelled:
          return {{grpc::StatusCode::CANCELLED, "cancelled: " + news.message}, false, v1::FINISH_REASON_CANCELLED};
        case FinishReason::deadline:
          return {{grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed: " + news.message}, true,
                  v1::FINISH_REASON_DEADLINE};
        case FinishReason::failed:
          return {{grpc::StatusCode::INTERNAL, "the engine could not serve the request: " + news.message}, true,
                  v1::FINISH_REASON_ERROR};
      }
      break;
    case StreamEnd::refused:
      return {{grpc::StatusCode::INVALID_ARGUMENT, news.message}, false};
    case StreamEnd::shutdown:
      return {{grpc::StatusCode::UNAVAILABLE, news.message}, true};
    case StreamEnd::engine_failed:
      return {{grpc::StatusCode::INTERNAL, news.message}, true};
    case StreamEnd::none:
      break;
  }
  return {{grpc::StatusCode::INTERNAL, "the request's stream ended without a reason"}, true};
}

}  // namespace

struct InferenceService::Call {
  std::string id;
  Clock::time_point received;
  int64_t prompt_tokens = 0;
  std::shared_ptr<RequestStream> stream;
  int64_t completion_tokens = 0;
  double first_token_s = 0;  // 0: no token yet
};

InferenceService::InferenceService(EngineLoop& loop, ServiceConfig config)
    : loop_(loop), config_(std::move(config)), seed_base_(std::random_device{}()) {
  LATTE_REQUIRE(config_.model.config != nullptr, ErrorCode::invalid_argument, "inference service: no model config");
  LATTE_REQUIRE(config_.poll_interval.count() > 0, ErrorCode::invalid_argument,
                "inference service: poll_interval must be positive");
}

grpc::Status InferenceService::admit_call(const grpc::ServerContext& context) const {
  if (grpc::Status s = check_bearer_token(context, config_.auth_token); !s.ok()) return s;
  if (shutting_down_.load()) return {grpc::StatusCode::UNAVAILABLE, "the server is shutting down"};
  return grpc::Status::OK;
}

std::string InferenceService::next_request_id() { return str_cat("latte-", calls_.fetch_add(1) + 1); }

uint64_t InferenceService::next_seed() { return mix(seed_base_ + seeds_.fetch_add(1)); }

grpc::Status InferenceService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  return guarded("Generate", [&] { return generate(*context, *request, *writer); });
}

grpc::Status InferenceService::generate(grpc::ServerContext& context, const v1::GenerateRequest& request,
                                        grpc::ServerWriter<v1::GenerateResponse>& writer) {
  Call call;
  call.received = Clock::now();
  if (grpc::Status s = admit_call(context); !s.ok()) return s;
  call.id = request.request_id().empty() ? next_request_id() : request.request_id();
  PreparedGenerate prepared;
  if (grpc::Status s = prepare_generate(request, config_.model, config_.limits, next_seed(), prepared); !s.ok())
    return s;
  prepared.request.deadline = engine_deadline(context);
  call.prompt_tokens = prepared.prompt_tokens;
  EngineLoop::Admission admission = loop_.submit(std::move(prepared.request));
  switch (admission.result) {
    case EngineLoop::Admit::full:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, admission.message};
    case EngineLoop::Admit::stopping:
      return {grpc::StatusCode::UNAVAILABLE, admission.message};
    case EngineLoop::Admit::accepted:
      break;
  }
  call.stream = std::move(admission.stream);
  return relay(call, context, writer);
}

grpc::Status InferenceService::relay(Call& call, grpc::ServerContext& context,
                                     grpc::ServerWriter<v1::GenerateResponse>& writer) {
  StreamNews news;
  for (;;) {
    if (context.IsCancelled()) {
      loop_.cancel(call.stream);
      return deadline_passed(context) ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed")
                                      : grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
    }
    if (!call.stream->take(news, config_.poll_interval)) continue;
    if (!news.tokens.empty() && call.first_token_s == 0) call.first_token_s = seconds_since(call.received);
    call.completion_tokens += int64_t(news.tokens.size());
    const Ending ending = ending_of(news);
    v1::GenerateResponse out;
    out.set_request_id(call.id);
    out.mutable_token_ids()->Add(news.tokens.begin(), news.tokens.end());
    out.set_text(to_valid_utf8(news.text));
    const bool ended = news.end != StreamEnd::none;
    if (ended && ending.final_message) {
      // The EOS token ends the output without being part of it, but the model did generate it.
      const bool eos = ending.reason == v1::FINISH_REASON_EOS;
      out.set_finish_reason(ending.reason);
      out.set_matched_stop(news.matched_stop);
      v1::Usage& u = *out.mutable_usage();
      u.set_prompt_tokens(int32_t(call.prompt_tokens));
      u.set_completion_tokens(int32_t(call.completion_tokens + (eos ? 1 : 0)));
      u.set_prefix_cached_tokens(int32_t(news.prefix_cached_tokens));
      u.set_time_to_first_token_s(call.first_token_s);
      u.set_total_time_s(seconds_since(call.received));
    }
    const bool send = (ended && ending.final_message) || out.token_ids_size() > 0 || !out.text().empty();
    if (send && !writer.Write(out)) {
      if (!ended) loop_.cancel(call.stream);
      return {grpc::StatusCode::CANCELLED, "the client went away"};
    }
    if (ended) return ending.status;
  }
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  return guarded("Tokenize", [&] {
    if (grpc::Status s = admit_call(*context); !s.ok()) return s;
    return tokenize(*request, *response);
  });
}

grpc::Status InferenceService::tokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse& response) const {
  const Tokenizer* tok = config_.model.tokenizer;
  if (!tok) return {grpc::StatusCode::FAILED_PRECONDITION, "this server has no tokenizer"};
  if (request.chat_template() && !config_.model.has_chat_template)
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "chat_template: this model has no chat template (its tokenizer has no <|im_start|> and <|im_end|> tokens)"};
  const std::string text = request.chat_template() ? chatml_user_turn(request.text()) : request.text();
  for (int32_t id : tok->encode(text, request.add_bos())) {
    response.add_ids(id);
    response.add_pieces(to_valid_utf8(tok->piece(id)));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelInfo(grpc::ServerContext* context, const v1::ModelInfoRequest*,
                                         v1::ModelInfoResponse* response) {
  return guarded("ModelInfo", [&] {
    if (grpc::Status s = admit_call(*context); !s.ok()) return s;
    *response = config_.info;
    return grpc::Status::OK;
  });
}

grpc::Status InferenceService::Stats(grpc::ServerContext* context, const v1::StatsRequest*,
                                     v1::StatsResponse* response) {
  return guarded("Stats", [&] {
    if (grpc::Status s = admit_call(*context); !s.ok()) return s;
    const LoopStats s = loop_.stats();
    const EngineStats& e = s.engine;
    v1::StatsResponse& r = *response;
    r.set_running(int32_t(e.running));
    r.set_waiting(int32_t(e.waiting + s.queued));  // queued requests wait too, just not yet in the engine
    r.set_preempted(int32_t(e.preempted));
    r.set_blocks_used(e.blocks_used);
    r.set_blocks_free(e.blocks_free);
    r.set_prefix_cache_queries(e.prefix_queries);
    r.set_prefix_cache_hits(e.prefix_hits);
    r.set_prefix_cached_tokens(e.prefix_hits * config_.info.block_size());  // only whole blocks are reused
    r.set_prompt_tokens_per_s(s.rates.prompt_tokens_per_s);
    r.set_generated_tokens_per_s(s.rates.generated_tokens_per_s);
    r.set_requests_finished(s.requests_finished);
    r.set_uptime_s(s.uptime_s);
    r.set_steps(e.steps);
    r.set_generated_tokens(e.generated_tokens);
    return grpc::Status::OK;
  });
}

}  // namespace latte::server
