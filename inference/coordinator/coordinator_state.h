// What every call handler of one coordinator shares: its options, its groups and its counters.
#pragma once
#include <atomic>
#include <chrono>

#include "inference/coordinator/options.h"
#include "inference/coordinator/shard_groups.h"

namespace latte::coordinator {

struct CoordinatorState {
  explicit CoordinatorState(CoordinatorOptions o) : options(std::move(o)), groups(options) {}

  const CoordinatorOptions options;
  ShardGroups groups;
  std::atomic<int> streams_in_flight{0};
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// One Generate stream's place under max_concurrent_streams, given back on destruction.
class StreamSlot {
 public:
  // Empty (taken() false) when the limit is reached.
  explicit StreamSlot(CoordinatorState& state) : state_(&state) {
    const int limit = state.options.max_concurrent_streams;
    if (state.streams_in_flight.fetch_add(1) >= limit && limit > 0) {
      state.streams_in_flight.fetch_sub(1);
      state_ = nullptr;
    }
  }
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;
  ~StreamSlot() {
    if (state_) state_->streams_in_flight.fetch_sub(1);
  }
  bool taken() const { return state_ != nullptr; }

 private:
  CoordinatorState* state_;
};

}  // namespace latte::coordinator
