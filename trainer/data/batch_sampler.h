// Training batches drawn deterministically from (seed, step, micro-step, DP rank, row): a resumed
// run, or a rerun with the same seed, sees exactly the same tokens at the same step, with no
// sampler state to save. Each DP rank draws windows from its own contiguous slice of the training
// region; the last `val_tokens` of the shard are held out for evaluation and never trained on.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/data/token_shard.h"

namespace latte {

struct Batch {
  std::vector<int32_t> tokens, targets;  // [rows * seq]; targets are tokens shifted by one
  int64_t rows = 0, seq = 0;
};

class BatchSampler {
 public:
  // Throws invalid_argument when the shard is too small for the layout (naming the sizes).
  BatchSampler(const TokenShard& shard, int64_t seq, int64_t val_tokens, int64_t dp_rank, int64_t dp_size,
               uint64_t seed);
  Batch train_batch(int64_t step, int64_t micro, int64_t rows) const;
  // The held-out windows in order, cut into batches of `rows` windows; index < val_batches().
  Batch val_batch(int64_t index, int64_t rows) const;
  int64_t val_batches(int64_t rows) const;
  int64_t train_tokens() const { return train_end_; }

 private:
  Batch window_batch(const std::vector<int64_t>& starts) const;
  const TokenShard& shard_;
  int64_t seq_, train_end_, slice_begin_, slice_size_;
  uint64_t seed_;
};

}  // namespace latte
