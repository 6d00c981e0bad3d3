#include "inference/coordinator/generate_relay.h"

#include <atomic>

#include "inference/coordinator/credentials.h"
#include "inference/coordinator/prefix_affinity.h"
#include "inference/coordinator/request_cost.h"
#include "inference/coordinator/upstream_status.h"

namespace latte::coordinator {

using latte::v1::GenerateRequest;
using latte::v1::GenerateResponse;

// One attempt of a relayed Generate on one group. It holds the relay (and itself) until its
// OnDone. A hold keeps the stream alive between reads, because the next read is started from the
// client side's OnWriteDone, outside this reactor's own reactions.
class UpstreamGenerate : public grpc::ClientReadReactor<GenerateResponse>,
                         public Abortable,
                         public std::enable_shared_from_this<UpstreamGenerate> {
 public:
  UpstreamGenerate(std::shared_ptr<GenerateRelay> relay, Pick pick)
      : relay_(std::move(relay)), group_(pick.group), lease_(std::move(pick.lease)) {}

  void begin(const GenerateRequest& request, const grpc::CallbackServerContext& client,
             const std::string& authorization) {
    self_ = shared_from_this();
    group_->track(this, weak_from_this());
    // The client's deadline travels upstream: the shard stops work nobody will read.
    context_.set_deadline(client.raw_deadline());
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    group_->inference().async()->Generate(&context_, &request, this);
    AddHold();
    StartRead(&in_);
    StartCall();
  }

  void read_next() { StartRead(&in_); }
  void release_hold() {
    if (!hold_released_.exchange(true)) RemoveHold();
  }
  void cancel() { context_.TryCancel(); }

  void abort(const std::string& why) override {
    {
      std::lock_guard lock(abort_mu_);
      abort_reason_ = why;
    }
    context_.TryCancel();
  }
  std::string abort_reason() {
    std::lock_guard lock(abort_mu_);
    return abort_reason_;
  }

  void OnReadDone(bool ok) override { relay_->on_upstream_read(this, ok); }
  void OnDone(const grpc::Status& status) override {
    const auto keep = std::move(self_);  // this may be freed when keep goes, after the last use
    group_->untrack(this);
    relay_->on_upstream_done(this, status);
  }

  ShardGroup& group() { return *group_; }
  LoadLease& lease() { return lease_; }
  GenerateResponse& message() { return in_; }

 private:
  std::shared_ptr<GenerateRelay> relay_;
  ShardGroup* group_;
  LoadLease lease_;
  grpc::ClientContext context_;
  GenerateResponse in_;
  std::atomic<bool> hold_released_{false};
  std::mutex abort_mu_;
  std::string abort_reason_;
  std::shared_ptr<UpstreamGenerate> self_;
};

namespace {

// A final message that carries nothing generated (a shard's ERROR ending before any token).
bool empty_final(const GenerateResponse& m) {
  return m.token_ids_size() == 0 && m.text().empty() &&
         m.finish_reason() != latte::v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

GenerateRelay::GenerateRelay(grpc::CallbackServerContext* context, const GenerateRequest* request,
                             CoordinatorState& state)
    : context_(context),
      request_(request),
      state_(state),
      slot_(state),
      cost_(request_cost(*request, state.options.default_max_new_tokens)),
      affinity_key_(affinity_key(*request, state.options.affinity_prefix_tokens)),
      authorization_(upstream_authorization(*context, state.options)) {}

GenerateRelay::~GenerateRelay() = default;

grpc::ServerWriteReactor<GenerateResponse>* GenerateRelay::start(grpc::CallbackServerContext* context,
                                                                 const GenerateRequest* request,
                                                                 CoordinatorState& state) {
  std::shared_ptr<GenerateRelay> relay(new GenerateRelay(context, request, state));
  relay->self_ = relay;
  grpc::Status refusal = check_bearer(*context, state.options.auth_token);
  if (refusal.ok() && !relay->slot_.taken())
    refusal = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "the coordinator already relays " + std::to_string(state.options.max_concurrent_streams) +
                               " Generate streams (its --max-concurrent-streams limit); retry later");
  std::shared_ptr<UpstreamGenerate> first;
  if (refusal.ok()) {
    std::lock_guard lock(relay->mu_);
    first = relay->next_attempt(&refusal);
  }
  if (first)
    relay->launch(first);
  else
    relay->Finish(refusal);
  return relay.get();
}

std::shared_ptr<UpstreamGenerate> GenerateRelay::next_attempt(grpc::Status* refusal) {
  Pick pick = state_.groups.pick(cost_, affinity_key_, tried_);
  if (!pick.group) {
    *refusal = pick.refusal;
    if (!tried_.empty() && all_tried_exhausted_)
      *refusal = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, refusal->error_message());
    return nullptr;
  }
  current_ = std::make_shared<UpstreamGenerate>(shared_from_this(), std::move(pick));
  return current_;
}

void GenerateRelay::launch(const std::shared_ptr<UpstreamGenerate>& attempt) {
  attempt->begin(*request_, *context_, authorization_);
  bool cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled = client_cancelled_;
  }
  // OnCancel may have run before this attempt was current; it could not cancel it then.
  if (cancelled) attempt->cancel();
}

bool GenerateRelay::finish_locked(grpc::Status status) {
  if (write_pending_) {
    pending_finish_ = std::move(status);
    return false;
  }
  pending_finish_ = std::move(status);
  return true;
}

void GenerateRelay::on_upstream_read(UpstreamGenerate* attempt, bool ok) {
  enum class Next { stop, cancel, write, read } next;
  {
    std::lock_guard lock(mu_);
    if (!ok) {
      next = Next::stop;  // the stream is over; its status comes in OnDone
    } else {
      GenerateResponse& m = attempt->message();
      attempt->lease().consume(m.token_ids_size());
      if (client_cancelled_ || client_broken_) {
        next = Next::cancel;
      } else if (relayed_ == 0 && empty_final(m)) {
        held_ = std::move(m);
        next = Next::read;
      } else {
        out_ = std::move(m);
        ++relayed_;
        write_pending_ = true;
        next = Next::write;
      }
    }
  }
  switch (next) {
    case Next::stop: attempt->release_hold(); break;
    case Next::cancel: attempt->cancel(); attempt->release_hold(); break;
    case Next::write: StartWrite(&out_); break;
    case Next::read: attempt->read_next(); break;
  }
}

void GenerateRelay::OnWriteDone(bool ok) {
  std::shared_ptr<UpstreamGenerate> attempt;
  std::optional<grpc::Status> finish;
  {
    std::lock_guard lock(mu_);
    write_pending_ = false;
    if (!ok) client_broken_ = true;
    if (pending_finish_) {
      finish = std::move(pending_finish_);
      pending_finish_.reset();
    } else {
      attempt = current_;
    }
  }
  if (finish) {
    Finish(*finish);
  } else if (attempt && ok) {
    attempt->read_next();
  } else if (attempt) {  // the client is gone: stop the shard's work
    attempt->cancel();
    attempt->release_hold();
  }
}

void GenerateRelay::on_upstream_done(UpstreamGenerate* attempt, const grpc::Status& status) {
  ShardGroup& group = attempt->group();
  attempt->lease().release();
  UpstreamEnding ending{status, group.address(), 0, attempt->abort_reason()};
  std::shared_ptr<UpstreamGenerate> retry;
  std::optional<grpc::Status> finish;
  bool write_held = false, down = false;
  {
    std::lock_guard lock(mu_);
    current_.reset();
    ending.messages_relayed = relayed_;
    grpc::Status final_status;
    bool have_final = true;
    if (client_cancelled_) {
      final_status = grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
    } else if (client_broken_) {
      final_status = grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped receiving the stream");
    } else if (status.ok()) {
      final_status = status;
    } else {
      group.count_failed();
      down = says_group_down(ending);
      if (retryable(ending)) {
        tried_.push_back({&group, "failed before the first token (" + describe(ending) + ")"});
        all_tried_exhausted_ = all_tried_exhausted_ && status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
        held_.reset();  // another group answers; this one's empty ending is not the answer
        retry = next_attempt(&final_status);
        have_final = retry == nullptr;
      } else {
        final_status = client_status(ending);
      }
    }
    if (have_final) {
      if (held_ && !client_cancelled_ && !client_broken_) {
        out_ = std::move(*held_);
        held_.reset();
        write_pending_ = true;
        write_held = true;
      }
      if (finish_locked(final_status)) {
        finish = std::move(pending_finish_);
        pending_finish_.reset();
      }
    }
  }
  if (down) state_.groups.report_down(group, "Generate failed: " + describe(ending));
  if (write_held) StartWrite(&out_);
  if (finish) Finish(*finish);
  if (retry) launch(retry);
}

void GenerateRelay::OnCancel() {
  std::shared_ptr<UpstreamGenerate> attempt;
  {
    std::lock_guard lock(mu_);
    client_cancelled_ = true;
    attempt = current_;
  }
  if (attempt) attempt->cancel();
}

void GenerateRelay::OnDone() {
  std::shared_ptr<GenerateRelay> keep;
  {
    std::lock_guard lock(mu_);
    keep = std::move(self_);
  }
}

}  // namespace latte::coordinator
