#include "inference/coordinator/stats_fanout.h"

#include <algorithm>
#include <chrono>

#include "inference/coordinator/credentials.h"
#include "inference/coordinator/upstream_status.h"

namespace latte::coordinator {

using latte::v1::StatsResponse;

void add_stats(StatsResponse& t, const StatsResponse& g) {
  t.set_running(t.running() + g.running());
  t.set_waiting(t.waiting() + g.waiting());
  t.set_preempted(t.preempted() + g.preempted());
  t.set_blocks_used(t.blocks_used() + g.blocks_used());
  t.set_blocks_free(t.blocks_free() + g.blocks_free());
  t.set_prefix_cache_queries(t.prefix_cache_queries() + g.prefix_cache_queries());
  t.set_prefix_cache_hits(t.prefix_cache_hits() + g.prefix_cache_hits());
  t.set_prefix_cached_tokens(t.prefix_cached_tokens() + g.prefix_cached_tokens());
  t.set_prompt_tokens_per_s(t.prompt_tokens_per_s() + g.prompt_tokens_per_s());
  t.set_generated_tokens_per_s(t.generated_tokens_per_s() + g.generated_tokens_per_s());
  t.set_requests_finished(t.requests_finished() + g.requests_finished());
  t.set_steps(t.steps() + g.steps());
  t.set_generated_tokens(t.generated_tokens() + g.generated_tokens());
}

StatsFanout::StatsFanout(grpc::CallbackServerContext* context, StatsResponse* response, CoordinatorState& state)
    : context_(context), response_(response), state_(state) {}

grpc::ServerUnaryReactor* StatsFanout::start(grpc::CallbackServerContext* context, StatsResponse* response,
                                             CoordinatorState& state) {
  std::shared_ptr<StatsFanout> f(new StatsFanout(context, response, state));
  f->self_ = f;
  const grpc::Status auth = check_bearer(*context, state.options.auth_token);
  if (!auth.ok())
    f->Finish(auth);
  else
    f->ask_all();
  return f.get();
}

void StatsFanout::ask_all() {
  const auto limit = std::chrono::system_clock::now() + std::chrono::milliseconds(state_.options.health_timeout_ms);
  const std::string authorization = upstream_authorization(*context_, state_.options);
  for (size_t i = 0; i < state_.groups.size(); ++i) {
    auto p = std::make_unique<Probe>();
    // A slow group must not hold up the answer about the others.
    p->context.set_deadline(std::min(limit, context_->deadline()));
    if (!authorization.empty()) p->context.AddMetadata("authorization", authorization);
    p->asked = state_.groups.at(i).healthy();
    probes_.push_back(std::move(p));
  }
  {
    std::lock_guard lock(mu_);
    pending_ = 1;  // this function's own share: answer() cannot run before every probe is sent
    for (const auto& p : probes_) pending_ += p->asked ? 1 : 0;
    asking_ = true;
  }
  auto self = shared_from_this();
  for (size_t i = 0; i < probes_.size(); ++i) {
    Probe* p = probes_[i].get();
    if (!p->asked) continue;
    state_.groups.at(i).inference().async()->Stats(&p->context, &p->request, &p->response,
                                                    [self, p](grpc::Status s) {
                                                      p->status = std::move(s);
                                                      self->on_probe_done();
                                                    });
  }
  bool cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled = cancelled_;
  }
  if (cancelled) OnCancel();
  on_probe_done();
}

void StatsFanout::on_probe_done() {
  {
    std::lock_guard lock(mu_);
    if (--pending_ > 0) return;
  }
  answer();
}

void StatsFanout::answer() {
  StatsResponse& r = *response_;
  for (size_t i = 0; i < probes_.size(); ++i) {
    const GroupSnapshot s = state_.groups.at(i).snapshot();
    latte::v1::ShardGroupStats* g = r.add_shard_groups();
    g->set_address(s.address);
    g->set_healthy(s.healthy);
    g->set_unhealthy_reason(s.unhealthy_reason);
    g->set_consecutive_failed_checks(s.consecutive_failed_checks);
    g->set_in_flight(s.in_flight);
    g->set_outstanding_tokens(s.outstanding_tokens);
    g->set_requests_routed(s.requests_routed);
    g->set_requests_failed(s.requests_failed);
    const Probe& p = *probes_[i];
    if (!p.asked) {
      g->set_stats_error("not asked: the group is not healthy");
    } else if (!p.status.ok()) {
      g->set_stats_error(std::string("Stats failed: ") + code_name(p.status.error_code()) + ": " +
                         p.status.error_message());
    } else {
      *g->mutable_stats() = p.response;
      add_stats(r, p.response);
    }
  }
  r.set_uptime_s(std::chrono::duration<double>(std::chrono::steady_clock::now() - state_.started).count());
  bool cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled = cancelled_;
  }
  Finish(cancelled ? grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call") : grpc::Status::OK);
}

void StatsFanout::OnCancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    if (!asking_) return;  // ask_all sees the flag and comes back here
  }
  for (const auto& p : probes_)
    if (p->asked) p->context.TryCancel();
}

void StatsFanout::OnDone() {
  std::shared_ptr<StatsFanout> keep;
  std::lock_guard lock(mu_);
  keep = std::move(self_);
}

}  // namespace latte::coordinator
