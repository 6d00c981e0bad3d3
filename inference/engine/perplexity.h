// Perplexity of a text under a model: the text is encoded as one string (no BOS), cut into
// windows of W = context-1 tokens, and each window is fed as [BOS] + window[:-1] and scored on
// window (shared/data/README.md "Sanity values"), so every token is predicted with at most W-1
// tokens of context and the first token of each window from BOS alone.
#pragma once
#include <functional>
#include <string>

#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"

namespace latte {

struct PerplexityParams {
  int64_t window = 0;      // 0: the model's context - 1
  int64_t batch = 1;       // windows per forward pass
  int64_t max_tokens = 0;  // 0: all
};

struct PerplexityProgress {
  int64_t tokens_done = 0, tokens_total = 0;
  double seconds = 0, mean_nll = 0;
};

struct PerplexityResult {
  int64_t tokens = 0;
  double mean_nll = 0;  // natural log
  double perplexity = 0;
  double seconds = 0;
};

PerplexityResult perplexity(Transformer& model, const std::vector<int32_t>& text_tokens, int32_t bos_id,
                            const PerplexityParams& p,
                            const std::function<void(const PerplexityProgress&)>& on_progress = {});

}  // namespace latte
