#include "inference/eval/choice_scoring.h"

#include <algorithm>
#include <cmath>

#include "core/base/error.h"

namespace latte {

namespace {

// Copies positions [0, length) of batch row 0 into every other row of each of the cache's tensors
// ([B, max_seq, ...]): the shared context, computed once, seen by every choice.
void broadcast_first_row(Backend& be, std::vector<Tensor>& tensors, const std::vector<Tensor>& from, int64_t length) {
  for (size_t l = 0; l < tensors.size(); ++l) {
    const Tensor src = from[l].select(0).narrow(0, 0, length);
    for (int64_t b = 0; b < tensors[l].dim(0); ++b) {
      Tensor dst = tensors[l].select(b).narrow(0, 0, length);
      be.copy(dst, src);
    }
  }
}

// log p(target) under one row of logits, in double.
double log_prob(const float* row, int64_t vocab, int32_t target) {
  double max = row[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max(max, double(row[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - max);
  return double(row[target]) - max - std::log(sum);
}

}  // namespace

ContinuationScores score_continuations(Transformer& model, const std::vector<int32_t>& context,
                                       const std::vector<std::vector<int32_t>>& continuations) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  LATTE_REQUIRE(!context.empty(), ErrorCode::invalid_argument, "scoring needs at least one context token");
  LATTE_REQUIRE(!continuations.empty(), ErrorCode::invalid_argument, "scoring needs at least one continuation");
  int64_t longest = 0;
  for (size_t i = 0; i < continuations.size(); ++i) {
    LATTE_REQUIRE(!continuations[i].empty(), ErrorCode::invalid_argument, "continuation ", i,
                  " has no tokens of its own (it merged into the context)");
    for (int32_t t : continuations[i])
      LATTE_REQUIRE(t >= 0 && t < c.vocab_size, ErrorCode::invalid_argument, "token ", t,
                    " is outside the model's vocabulary of ", c.vocab_size);
    longest = std::max(longest, int64_t(continuations[i].size()));
  }
  const int64_t prefix = int64_t(context.size()) - 1;  // context tokens read before the batch
  const int64_t rows = int64_t(continuations.size());
  LATTE_REQUIRE(prefix + longest <= c.max_seq_len, ErrorCode::invalid_argument, "context (", context.size(),
                " tokens) plus the longest choice (", longest, ") exceed the model's context of ", c.max_seq_len,
                " tokens");

  KvCache cache = model.make_cache(rows, prefix + longest);
  if (prefix > 0) {
    KvCache shared = model.make_cache(1, prefix);
    model.forward(std::span(context.data(), size_t(prefix)), 1, shared, LogitsFor::last_position, MlaForm::expanded);
    broadcast_first_row(be, cache.k, shared.k, prefix);
    broadcast_first_row(be, cache.v, shared.v, prefix);
    broadcast_first_row(be, cache.latent, shared.latent, prefix);
    broadcast_first_row(be, cache.k_rope, shared.k_rope, prefix);
    cache.length = prefix;
  }
  // Row r reads [context.back(), cont_r[0], ..., cont_r[n-2]] and predicts cont_r at every position.
  std::vector<int32_t> inputs(size_t(rows * longest), context.back());
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int32_t>& cont = continuations[size_t(r)];
    for (size_t t = 0; t + 1 < cont.size(); ++t) inputs[size_t(r * longest) + t + 1] = cont[t];
  }
  const Tensor logits = be.to_host(model.forward(inputs, rows, cache, LogitsFor::all_positions, MlaForm::expanded));
  const int64_t V = logits.dim(1);
  ContinuationScores out;
  out.tokens = prefix + rows * longest;
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<int32_t>& cont = continuations[size_t(r)];
    double sum = 0;
    for (size_t t = 0; t < cont.size(); ++t) sum += log_prob(logits.f32() + (r * longest + int64_t(t)) * V, V, cont[t]);
    LATTE_REQUIRE(std::isfinite(sum), ErrorCode::numerics, "non-finite log-likelihood for continuation ", r);
    out.log_likelihood.push_back(sum);
  }
  return out;
}

}  // namespace latte
