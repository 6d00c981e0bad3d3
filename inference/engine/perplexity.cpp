#include "inference/engine/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace latte {

PerplexityResult perplexity(Transformer& model, const std::vector<int32_t>& all_tokens, int32_t bos_id,
                            const PerplexityParams& p, const std::function<void(const PerplexityProgress&)>& on_progress) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  int64_t W = p.window > 0 ? p.window : c.max_seq_len - 1;
  LATTE_REQUIRE(W >= 1 && W + 1 <= c.max_seq_len, ErrorCode::invalid_argument, "perplexity window ", W,
                " must be in [1, ", c.max_seq_len - 1, "] (the context minus the BOS slot)");
  LATTE_REQUIRE(p.batch >= 1, ErrorCode::invalid_argument, "perplexity batch must be >= 1");
  int64_t n = int64_t(all_tokens.size());
  if (p.max_tokens > 0) n = std::min(n, p.max_tokens);
  // Without a BOS token the first token of each window has no context and is not scored.
  const bool has_bos = bos_id >= 0;
  LATTE_REQUIRE(n >= (has_bos ? 1 : 2), ErrorCode::invalid_argument, "the text has too few tokens (", n,
                ") to score");

  auto t0 = std::chrono::steady_clock::now();
  double nll_sum = 0;
  int64_t scored = 0;
  int64_t start = 0;
  std::vector<int32_t> inputs, targets;
  while (start < n) {
    // One batch of up to p.batch windows, padded to a common length with ignored targets.
    int64_t rows = 0;
    std::vector<std::pair<int64_t, int64_t>> spans;  // [begin, end) of all_tokens per row
    while (rows < p.batch && start < n) {
      int64_t end = std::min(n, start + W);
      if (!has_bos && end - start < 2) break;
      spans.push_back({start, end});
      start = end;
      ++rows;
    }
    if (spans.empty()) break;
    int64_t T = 0;
    for (auto [b, e] : spans) T = std::max(T, e - b);
    inputs.assign(size_t(rows * T), has_bos ? bos_id : all_tokens[0]);
    targets.assign(size_t(rows * T), -1);
    for (int64_t r = 0; r < rows; ++r) {
      auto [b, e] = spans[size_t(r)];
      for (int64_t i = 0; i < e - b; ++i) {
        if (has_bos) {
          inputs[size_t(r * T + i)] = i == 0 ? bos_id : all_tokens[size_t(b + i - 1)];
          targets[size_t(r * T + i)] = all_tokens[size_t(b + i)];
        } else {
          inputs[size_t(r * T + i)] = all_tokens[size_t(b + i)];
          if (i + 1 < e - b) targets[size_t(r * T + i)] = all_tokens[size_t(b + i + 1)];
        }
      }
    }
    KvCache cache = KvCache::create(c, rows, T);
    Tensor logits = model.forward(inputs, rows, cache, LogitsFor::all_positions);
    Tensor losses = Tensor::empty({rows * T});
    be.cross_entropy_forward(losses, logits, targets);
    const float* lp = losses.f32();
    for (int64_t i = 0; i < rows * T; ++i) {
      if (targets[size_t(i)] < 0) continue;
      LATTE_REQUIRE(std::isfinite(lp[i]), ErrorCode::numerics, "perplexity: non-finite loss at token ", i);
      nll_sum += lp[i];
      ++scored;
    }
    if (on_progress) {
      PerplexityProgress pr;
      pr.tokens_done = start;
      pr.tokens_total = n;
      pr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      pr.mean_nll = nll_sum / double(scored);
      on_progress(pr);
    }
  }
  PerplexityResult r;
  r.tokens = scored;
  r.mean_nll = nll_sum / double(scored);
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace latte
