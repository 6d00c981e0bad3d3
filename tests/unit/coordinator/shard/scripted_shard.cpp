#include "tests/unit/coordinator/shard/scripted_shard.h"

#include <chrono>

#include <grpcpp/health_check_service_interface.h>

namespace latte::test {

using latte::v1::GenerateRequest;
using latte::v1::GenerateResponse;
using namespace std::chrono_literals;

namespace {

std::string header(const grpc::ServerContext& ctx, const std::string& key) {
  const auto it = ctx.client_metadata().find(key);
  return it == ctx.client_metadata().end() ? "" : std::string(it->second.data(), it->second.size());
}

// Polls for cancellation (the sync API has no notification); gives up after 30 s so that a test
// whose coordinator never cancels fails instead of hanging.
bool wait_for_cancel(grpc::ServerContext& ctx) {
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!ctx.IsCancelled()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Sleeps delay_ms unless the call is cancelled first; false when it was.
bool pause(grpc::ServerContext& ctx, int delay_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (ctx.IsCancelled()) return false;
    std::this_thread::sleep_for(2ms);
  }
  return !ctx.IsCancelled();
}

int prompt_tokens(const GenerateRequest& r) {
  return r.has_token_ids() ? r.token_ids().ids_size() : int(r.text().size());
}

}  // namespace

class ScriptedShard::Service final : public latte::v1::Inference::Service {
 public:
  explicit Service(ScriptedShard& shard) : shard_(shard) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const GenerateRequest* req,
                        grpc::ServerWriter<GenerateResponse>* writer) override {
    const ShardScript s = shard_.script();
    SeenCall seen;
    seen.request = *req;
    seen.authorization = header(*ctx, "authorization");
    if (ctx->deadline() != std::chrono::system_clock::time_point::max())
      seen.deadline_s = std::chrono::duration<double>(ctx->deadline() - std::chrono::system_clock::now()).count();
    const size_t index = shard_.record(std::move(seen));
    if (!s.required_token.empty() && header(*ctx, "authorization") != "Bearer " + s.required_token)
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "scripted shard: wrong token");
    ++shard_.in_flight_;
    const grpc::Status status = run(*ctx, *req, s, index, *writer);
    --shard_.in_flight_;
    return status;
  }

  grpc::Status Tokenize(grpc::ServerContext* ctx, const latte::v1::TokenizeRequest* req,
                        latte::v1::TokenizeResponse* resp) override {
    ++shard_.unary_calls_;
    if (grpc::Status a = auth(*ctx); !a.ok()) return a;
    if (req->add_bos()) resp->add_ids(1), resp->add_pieces("<s>");
    for (unsigned char c : req->text()) resp->add_ids(c), resp->add_pieces(std::string(1, char(c)));
    return grpc::Status::OK;
  }

  grpc::Status ModelInfo(grpc::ServerContext* ctx, const latte::v1::ModelInfoRequest*,
                         latte::v1::ModelInfoResponse* resp) override {
    ++shard_.unary_calls_;
    if (grpc::Status a = auth(*ctx); !a.ok()) return a;
    resp->set_model_name(shard_.script().model_name);
    resp->set_vocab_size(256);
    resp->set_context_length(512);
    resp->set_tp_size(2);
    return grpc::Status::OK;
  }

  grpc::Status Stats(grpc::ServerContext* ctx, const latte::v1::StatsRequest*, latte::v1::StatsResponse* resp) override {
    ++shard_.unary_calls_;
    if (grpc::Status a = auth(*ctx); !a.ok()) return a;
    resp->set_running(shard_.in_flight_.load());
    resp->set_generated_tokens(shard_.generated_.load());
    resp->set_requests_finished(shard_.generate_calls());
    resp->set_blocks_free(100);
    resp->set_uptime_s(1234);
    return grpc::Status::OK;
  }

 private:
  grpc::Status auth(const grpc::ServerContext& ctx) {
    const ShardScript s = shard_.script();
    if (!s.required_token.empty() && header(ctx, "authorization") != "Bearer " + s.required_token)
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "scripted shard: wrong token");
    return grpc::Status::OK;
  }

  grpc::Status cancelled(size_t index) {
    shard_.update(index, [](SeenCall& c) { c.cancelled = true; });
    return grpc::Status(grpc::StatusCode::CANCELLED, "scripted shard: cancelled");
  }

  bool send(size_t index, grpc::ServerWriter<GenerateResponse>& writer, const GenerateResponse& m) {
    shard_.update(index, [&](SeenCall& c) { c.sent.push_back(m); });
    shard_.generated_ += m.token_ids_size();
    return writer.Write(m);
  }

  grpc::Status run(grpc::ServerContext& ctx, const GenerateRequest& req, const ShardScript& s, size_t index,
                   grpc::ServerWriter<GenerateResponse>& writer) {
    GenerateResponse final_message;
    final_message.set_request_id(req.request_id());
    final_message.mutable_usage()->set_prompt_tokens(prompt_tokens(req));
    if (s.mode == ShardScript::Mode::unavailable)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted shard: unavailable");
    if (s.mode == ShardScript::Mode::error_final) {
      final_message.set_finish_reason(latte::v1::FINISH_REASON_ERROR);
      send(index, writer, final_message);
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted shard: shutting down");
    }
    for (int i = 0; i < s.tokens; ++i) {
      if (!pause(ctx, s.delay_ms)) return cancelled(index);
      GenerateResponse m;
      m.set_request_id(req.request_id());
      m.add_token_ids(s.first_token + i);
      // Appended, not "t" + ... + " ": GCC 12 warns falsely (-Wrestrict) about that expression.
      std::string text = "t";
      text += std::to_string(i);
      text += ' ';
      m.set_text(text);
      if (!send(index, writer, m)) return cancelled(index);
    }
    if (s.mode == ShardScript::Mode::stall || s.mode == ShardScript::Mode::die) {
      if (s.mode == ShardScript::Mode::die) shard_.die_soon();
      if (wait_for_cancel(ctx)) return cancelled(index);
      return grpc::Status(grpc::StatusCode::INTERNAL, "scripted shard: never cancelled");
    }
    final_message.set_finish_reason(latte::v1::FINISH_REASON_LENGTH);
    final_message.mutable_usage()->set_completion_tokens(s.tokens);
    send(index, writer, final_message);
    return grpc::Status::OK;
  }

  ScriptedShard& shard_;
};

ScriptedShard::ScriptedShard(ShardScript script, int port)
    : service_(std::make_unique<Service>(*this)), port_(port), script_(std::move(script)) {
  start();
}

ScriptedShard::~ScriptedShard() {
  stop();
  if (killer_.joinable()) killer_.join();
}

void ScriptedShard::start() {
  std::lock_guard lock(server_mu_);
  if (server_) return;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port_), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) throw std::runtime_error("scripted shard: cannot listen on port " + std::to_string(port_));
  port_ = port;
  server_->GetHealthCheckService()->SetServingStatus(serving_);
}

void ScriptedShard::stop() {
  std::lock_guard lock(server_mu_);
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
}

bool ScriptedShard::running() {
  std::lock_guard lock(server_mu_);
  return server_ != nullptr;
}

void ScriptedShard::set_serving(bool serving) {
  std::lock_guard lock(server_mu_);
  serving_ = serving;
  if (server_) server_->GetHealthCheckService()->SetServingStatus(serving);
}

void ScriptedShard::set_script(const ShardScript& script) {
  std::lock_guard lock(mu_);
  script_ = script;
}

ShardScript ScriptedShard::script() {
  std::lock_guard lock(mu_);
  return script_;
}

size_t ScriptedShard::record(SeenCall call) {
  std::lock_guard lock(mu_);
  calls_.push_back(std::move(call));
  changed_.notify_all();
  return calls_.size() - 1;
}

void ScriptedShard::update(size_t index, const std::function<void(SeenCall&)>& f) {
  std::lock_guard lock(mu_);
  f(calls_[index]);
  changed_.notify_all();
}

int ScriptedShard::generate_calls() {
  std::lock_guard lock(mu_);
  return int(calls_.size());
}

std::vector<SeenCall> ScriptedShard::calls() {
  std::lock_guard lock(mu_);
  return calls_;
}

bool ScriptedShard::wait_cancelled(size_t n, int timeout_ms) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                           [&] { return calls_.size() > n && calls_[n].cancelled; });
}

void ScriptedShard::die_soon() {
  std::lock_guard lock(killer_mu_);
  if (killer_.joinable()) killer_.join();
  // Not from the handler's thread: Shutdown waits for every handler, this one included.
  killer_ = std::thread([this] { stop(); });
}

}  // namespace latte::test
