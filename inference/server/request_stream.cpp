#include "inference/server/request_stream.h"

namespace latte::server {

void RequestStream::push(EngineEvent&& event) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ended_) return;
    if (event.token >= 0) pending_.tokens.push_back(event.token);
    pending_.text += event.text;
    if (event.finished) {
      ended_ = true;
      pending_.end = StreamEnd::finished;
      pending_.reason = event.reason;
      pending_.message = std::move(event.message);
      pending_.matched_stop = std::move(event.matched_stop);
      pending_.prefix_cached_tokens = event.prefix_cached_tokens;
    }
    news_ = true;
  }
  ready_.notify_one();
}

void RequestStream::end(StreamEnd how, std::string message, FinishReason reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ended_) return;
    ended_ = true;
    pending_.end = how;
    pending_.reason = reason;
    pending_.message = std::move(message);
    news_ = true;
  }
  ready_.notify_one();
}

bool RequestStream::take(StreamNews& out, std::chrono::milliseconds timeout) {
  out = StreamNews{};
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return news_; })) return false;
  out = std::move(pending_);
  pending_ = StreamNews{};
  news_ = false;
  return true;
}

}  // namespace latte::server
