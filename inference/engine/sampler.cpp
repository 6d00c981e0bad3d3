#include "inference/engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/base/error.h"

namespace latte {

int32_t argmax_lowest_id(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[size_t(best)]) best = int32_t(i);  // strict: ties keep the lower id
  return best;
}

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  LATTE_REQUIRE(p.temperature >= 0 && std::isfinite(p.temperature), ErrorCode::invalid_argument,
                "temperature must be >= 0, got ", p.temperature);
  LATTE_REQUIRE(p.top_p >= 0 && p.top_p <= 1, ErrorCode::invalid_argument, "top-p must be in [0, 1], got ", p.top_p);
  LATTE_REQUIRE(p.top_k >= 0, ErrorCode::invalid_argument, "top-k must be >= 0, got ", p.top_k);
  // xorshift* must not start at 0 (it would stay 0).
  state_ = p.seed == 0 ? 0x9E3779B97F4A7C15ull : p.seed;
}

float Sampler::next_uniform() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  uint32_t r = uint32_t((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  return float(r >> 8) / 16777216.0f;
}

int32_t Sampler::sample(std::span<const float> logits) {
  LATTE_REQUIRE(!logits.empty(), ErrorCode::invalid_argument, "sample: empty logits");
  for (float x : logits)
    LATTE_REQUIRE(!std::isnan(x), ErrorCode::numerics, "sample: the model produced NaN logits");
  if (p_.temperature == 0.0f) return argmax_lowest_id(logits);

  // Softmax of logits / temperature in double: the draw compares cumulative sums, and double keeps
  // them order-independent enough that top-k/top-p cuts do not flip on rounding.
  const size_t n = logits.size();
  float max_logit = *std::max_element(logits.begin(), logits.end());
  scratch_.resize(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    float e = float(std::exp(double(logits[i] - max_logit) / p_.temperature));
    scratch_[i] = {e, int32_t(i)};
    total += e;
  }
  size_t keep = n;
  bool cut = (p_.top_k > 0 && size_t(p_.top_k) < n) || (p_.top_p > 0 && p_.top_p < 1);
  if (cut) {
    // Descending probability, lower id first on ties, so the kept set is deterministic.
    auto order = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    if (p_.top_k > 0 && size_t(p_.top_k) < n) {
      keep = size_t(p_.top_k);
      std::partial_sort(scratch_.begin(), scratch_.begin() + long(keep), scratch_.end(), order);
    } else {
      std::sort(scratch_.begin(), scratch_.end(), order);
    }
    double kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += scratch_[i].first;
    if (p_.top_p > 0 && p_.top_p < 1) {
      double cum = 0;
      for (size_t i = 0; i < keep; ++i) {
        cum += scratch_[i].first;
        if (cum / kept > p_.top_p) {  // smallest prefix whose mass exceeds top_p
          keep = i + 1;
          break;
        }
      }
    }
    total = 0;
    for (size_t i = 0; i < keep; ++i) total += scratch_[i].first;
  }
  double coin = double(next_uniform()) * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += scratch_[i].first;
    if (coin < cum) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;  // rounding: the coin fell past the last sum
}

}  // namespace latte
