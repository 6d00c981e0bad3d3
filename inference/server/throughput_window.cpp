#include "inference/server/throughput_window.h"

#include <algorithm>

namespace latte::server {

void ThroughputWindow::record(ThroughputClock::time_point t, int64_t prompt_tokens, int64_t generated_tokens) {
  // Unchanged counters add nothing: the last sample already stands for every later time.
  if (samples_.empty() || samples_.back().prompt != prompt_tokens || samples_.back().generated != generated_tokens)
    samples_.push_back({t, prompt_tokens, generated_tokens});
  // Keep one sample at or before (t - window): the base that rates() subtracts.
  const auto horizon = t - std::chrono::duration_cast<ThroughputClock::duration>(window_);
  while (samples_.size() > 2 && samples_[1].t <= horizon) samples_.pop_front();
}

const ThroughputWindow::Sample& ThroughputWindow::at(ThroughputClock::time_point t) const {
  auto it = std::upper_bound(samples_.begin(), samples_.end(), t,
                             [](ThroughputClock::time_point x, const Sample& s) { return x < s.t; });
  return it == samples_.begin() ? samples_.front() : *(it - 1);
}

TokenRates ThroughputWindow::rates(ThroughputClock::time_point now) const {
  if (samples_.size() < 2) return {};
  const auto from = now - std::chrono::duration_cast<ThroughputClock::duration>(window_);
  const Sample& base = at(from);
  const Sample& last = at(now);
  const double seconds = std::chrono::duration<double>(now - std::max(from, samples_.front().t)).count();
  if (seconds <= 0) return {};
  return {double(last.prompt - base.prompt) / seconds, double(last.generated - base.generated) / seconds};
}

}  // namespace latte::server
