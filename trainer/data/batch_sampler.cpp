#include "trainer/data/batch_sampler.h"

#include <algorithm>

#include "core/base/error.h"

namespace latte {

namespace {

// splitmix64: a counter-based mix, so a draw is a pure function of its coordinates.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

BatchSampler::BatchSampler(const TokenShard& shard, int64_t seq, int64_t val_tokens, int64_t dp_rank, int64_t dp_size,
                           uint64_t seed)
    : shard_(shard), seq_(seq), seed_(seed) {
  LATTE_REQUIRE(seq >= 1 && val_tokens >= 0 && dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
                ErrorCode::invalid_argument, "batch sampler: bad seq ", seq, " / val_tokens ", val_tokens, " / dp ",
                dp_rank, " of ", dp_size);
  train_end_ = shard.size() - val_tokens;
  slice_size_ = train_end_ / dp_size;
  slice_begin_ = dp_rank * slice_size_;
  LATTE_REQUIRE(slice_size_ >= seq + 1, ErrorCode::invalid_argument, "token shard ", shard.path(), " has ",
                shard.size(), " tokens: after holding out ", val_tokens, " for evaluation, each of ", dp_size,
                " data-parallel ranks gets ", slice_size_, ", fewer than one window of ", seq + 1);
  LATTE_REQUIRE(val_tokens == 0 || val_tokens >= seq + 1, ErrorCode::invalid_argument, "held-out split of ", val_tokens,
                " tokens is shorter than one window of ", seq + 1);
}

Batch BatchSampler::window_batch(const std::vector<int64_t>& starts) const {
  Batch b;
  b.rows = int64_t(starts.size());
  b.seq = seq_;
  b.tokens.resize(size_t(b.rows * seq_));
  b.targets.resize(size_t(b.rows * seq_));
  std::vector<int32_t> window(static_cast<size_t>(seq_ + 1));
  for (int64_t r = 0; r < b.rows; ++r) {
    shard_.read(starts[size_t(r)], seq_ + 1, window.data());
    std::copy(window.begin(), window.end() - 1, b.tokens.begin() + r * seq_);
    std::copy(window.begin() + 1, window.end(), b.targets.begin() + r * seq_);
  }
  return b;
}

Batch BatchSampler::train_batch(int64_t step, int64_t micro, int64_t rows) const {
  std::vector<int64_t> starts;
  const uint64_t span = uint64_t(slice_size_ - seq_);  // start offsets 0..span-1 keep the window inside
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t h = mix(seed_ ^ mix(uint64_t(step) ^ mix(uint64_t(micro) ^ mix(uint64_t(r) ^ mix(uint64_t(slice_begin_))))));
    starts.push_back(slice_begin_ + int64_t(h % span));
  }
  return window_batch(starts);
}

int64_t BatchSampler::val_batches(int64_t rows) const {
  const int64_t windows = (shard_.size() - train_end_ - 1) / seq_;
  return (windows + rows - 1) / rows;
}

Batch BatchSampler::val_batch(int64_t index, int64_t rows) const {
  const int64_t windows = (shard_.size() - train_end_ - 1) / seq_;
  std::vector<int64_t> starts;
  for (int64_t w = index * rows; w < std::min(windows, (index + 1) * rows); ++w) starts.push_back(train_end_ + w * seq_);
  LATTE_REQUIRE(!starts.empty(), ErrorCode::invalid_argument, "validation batch ", index, " is past the held-out split");
  return window_batch(starts);
}

}  // namespace latte
