// Token sampling. Greedy (temperature 0) picks the highest logit, ties to the lowest id, as
// llama2.c's argmax does. Otherwise: logits / temperature, softmax, optional top-k, optional
// top-p (nucleus, llama2.c's sample_topp semantics), then one draw from a seeded xorshift* RNG,
// so a (seed, prompt, model) triple always yields the same text.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace latte {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  float top_p = 0.9f;        // 1 (or <= 0): no nucleus cut
  int top_k = 0;             // 0: no top-k cut
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);  // throws invalid_argument on out-of-range values
  int32_t sample(std::span<const float> logits);

 private:
  float next_uniform();  // [0, 1)
  SamplingParams p_;
  uint64_t state_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

int32_t argmax_lowest_id(std::span<const float> logits);

}  // namespace latte
