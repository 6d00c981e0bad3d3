// A unary Inference call (Tokenize, ModelInfo) forwarded to one healthy group, and to the next
// one when that group turns out to be down. The answer does not depend on the group: every group
// serves the same model.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "inference/coordinator/coordinator_state.h"
#include "inference/coordinator/credentials.h"
#include "inference/coordinator/upstream_status.h"

namespace latte::coordinator {

template <class Request, class Response>
class UnaryForward : public grpc::ServerUnaryReactor,
                     public std::enable_shared_from_this<UnaryForward<Request, Response>> {
 public:
  // Starts the upstream call of one attempt; done is called once with its status.
  using Method = std::function<void(latte::v1::Inference::Stub&, grpc::ClientContext*, const Request*, Response*,
                                    std::function<void(grpc::Status)> done)>;

  static grpc::ServerUnaryReactor* start(grpc::CallbackServerContext* context, const Request* request,
                                         Response* response, CoordinatorState& state, Method method) {
    std::shared_ptr<UnaryForward> f(new UnaryForward(context, request, response, state, std::move(method)));
    f->self_ = f;
    const grpc::Status auth = check_bearer(*context, state.options.auth_token);
    if (!auth.ok())
      f->Finish(auth);
    else
      f->next();
    return f.get();
  }

  void OnCancel() override {
    std::shared_ptr<Attempt> a;
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
      a = current_;
    }
    if (a) a->context.TryCancel();
  }

  void OnDone() override {
    std::shared_ptr<UnaryForward> keep;
    std::lock_guard lock(mu_);
    keep = std::move(self_);
  }

 private:
  struct Attempt : Abortable {
    ShardGroup* group = nullptr;
    LoadLease lease;
    grpc::ClientContext context;
    Response response;
    std::mutex mu;
    std::string abort_reason;
    void abort(const std::string& why) override {
      {
        std::lock_guard lock(mu);
        abort_reason = why;
      }
      context.TryCancel();
    }
  };

  UnaryForward(grpc::CallbackServerContext* context, const Request* request, Response* response,
               CoordinatorState& state, Method method)
      : context_(context), request_(request), response_(response), state_(state), method_(std::move(method)) {}

  // Sends the request to the least loaded healthy group not tried yet, or finishes with why none.
  void next() {
    auto a = std::make_shared<Attempt>();
    grpc::Status refusal;
    {
      std::lock_guard lock(mu_);
      Pick pick = state_.groups.pick(0, std::nullopt, tried_);
      if (pick.group) {
        a->group = pick.group;
        a->lease = std::move(pick.lease);
        current_ = a;
      } else {
        refusal = pick.refusal;
      }
    }
    if (!a->group) {
      Finish(refusal);
      return;
    }
    a->group->track(a.get(), a);
    a->context.set_deadline(context_->raw_deadline());
    const std::string authorization = upstream_authorization(*context_, state_.options);
    if (!authorization.empty()) a->context.AddMetadata("authorization", authorization);
    auto self = this->shared_from_this();
    method_(a->group->inference(), &a->context, request_, &a->response,
            [self, a](grpc::Status status) { self->on_done(a, std::move(status)); });
    bool cancelled;
    {
      std::lock_guard lock(mu_);
      cancelled = cancelled_;
    }
    if (cancelled) a->context.TryCancel();
  }

  void on_done(const std::shared_ptr<Attempt>& a, grpc::Status status) {
    a->group->untrack(a.get());
    a->lease.release();
    UpstreamEnding ending{status, a->group->address(), 0, {}};
    {
      std::lock_guard lock(a->mu);
      ending.abort_reason = a->abort_reason;
    }
    bool again = false, cancelled;
    {
      std::lock_guard lock(mu_);
      current_.reset();
      cancelled = cancelled_;
      if (!cancelled && !status.ok() && says_group_down(ending)) {
        tried_.push_back({a->group, describe(ending)});
        again = true;
      }
    }
    if (!status.ok() && !cancelled) a->group->count_failed();
    if (again) {
      state_.groups.report_down(*a->group, "call failed: " + describe(ending));
      next();
    } else if (cancelled) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
    } else {
      if (status.ok()) *response_ = std::move(a->response);
      Finish(client_status(ending));
    }
  }

  grpc::CallbackServerContext* const context_;
  const Request* const request_;
  Response* const response_;
  CoordinatorState& state_;
  const Method method_;
  std::shared_ptr<UnaryForward> self_;

  std::mutex mu_;
  std::shared_ptr<Attempt> current_;
  std::vector<Tried> tried_;
  bool cancelled_ = false;
};

}  // namespace latte::coordinator
