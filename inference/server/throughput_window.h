// Tokens per second "over the last few seconds", from the engine's cumulative counters: the engine
// thread records (time, total prompt tokens, total generated tokens) as it goes; a reader asks for
// the rates at its own `now`, so an idle server shows its rates falling to zero instead of
// freezing at the last busy figure. Not thread-safe: the owner locks.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>

namespace latte::server {

using ThroughputClock = std::chrono::steady_clock;

struct TokenRates {
  double prompt_tokens_per_s = 0;
  double generated_tokens_per_s = 0;
};

class ThroughputWindow {
 public:
  explicit ThroughputWindow(std::chrono::duration<double> window = std::chrono::seconds(5)) : window_(window) {}

  // Counters are cumulative (never decrease); times are non-decreasing.
  void record(ThroughputClock::time_point t, int64_t prompt_tokens, int64_t generated_tokens);

  // Tokens counted within (now - window, now], divided by the window, or by the time since the
  // first record when that is shorter (a server that just started). Zero before two records.
  TokenRates rates(ThroughputClock::time_point now) const;

 private:
  struct Sample {
    ThroughputClock::time_point t;
    int64_t prompt, generated;
  };
  // The counters as they stood at time t: the last sample at or before t (the first one if none).
  const Sample& at(ThroughputClock::time_point t) const;

  std::chrono::duration<double> window_;
  std::deque<Sample> samples_;  // oldest first; one sample older than the window is kept as a base
};

}  // namespace latte::server
