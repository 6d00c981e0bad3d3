// Evaluation on a text: perplexity of one model, and the comparison of two models that share a
// vocabulary (what a conversion cost before fine-tuning). The text is encoded as one string (no
// BOS), cut into windows of W = context-1 tokens, and each window is fed as [BOS] + window[:-1]
// and scored on window (shared/data/README.md "Sanity values"), so every token is predicted with
// at most W-1 tokens of context and the first token of each window from BOS alone.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"

namespace latte {

struct PerplexityParams {
  int64_t window = 0;      // 0: the model's context - 1
  int64_t batch = 1;       // windows per forward pass
  int64_t max_tokens = 0;  // 0: all
  // Run the windows through the serving engine's paged cache in this dtype (f32, bf16, or i8 for
  // an MLA latent) instead of the contiguous f32 cache: what a lossy cache costs in perplexity.
  std::optional<DType> paged_cache;
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

struct CompareResult {
  int64_t tokens = 0;
  double mean_kl = 0, max_kl = 0;   // KL(A || B) per token, nats
  double nll_a = 0, nll_b = 0;      // mean NLL of each model
  double perplexity_a = 0, perplexity_b = 0;
  double top1_agreement = 0;        // fraction of tokens where both models' argmax agree
  double seconds = 0;
};

// KL(p_A || p_B) at every scored token; on_token (optional) receives (index, kl, nll_a, nll_b).
CompareResult compare_models(Transformer& a, Transformer& b, const std::vector<int32_t>& text_tokens, int32_t bos_id,
                             const PerplexityParams& p,
                             const std::function<void(int64_t, double, double, double)>& on_token = {},
                             const std::function<void(const PerplexityProgress&)>& on_progress = {});

PerplexityResult perplexity(Transformer& model, const std::vector<int32_t>& text_tokens, int32_t bos_id,
                            const PerplexityParams& p,
                            const std::function<void(const PerplexityProgress&)>& on_progress = {});

}  // namespace latte
