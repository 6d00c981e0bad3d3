#include "inference/engine/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace latte {

namespace {

// One batch of windows: inputs and targets [rows * T], padded with ignored targets.
struct WindowBatch {
  std::vector<int32_t> inputs, targets;
  int64_t rows = 0, T = 0, end = 0;  // end: tokens of the text consumed so far
};

// Cuts the first n tokens into windows (see evaluate.h) and calls f for each batch of them.
void for_each_window_batch(const std::vector<int32_t>& all_tokens, int64_t n, int32_t bos_id, int64_t W,
                           int64_t batch, const std::function<void(const WindowBatch&)>& f) {
  const bool has_bos = bos_id >= 0;
  int64_t start = 0;
  WindowBatch wb;
  while (start < n) {
    std::vector<std::pair<int64_t, int64_t>> spans;  // [begin, end) of all_tokens per row
    while (int64_t(spans.size()) < batch && start < n) {
      int64_t end = std::min(n, start + W);
      if (!has_bos && end - start < 2) break;
      spans.push_back({start, end});
      start = end;
    }
    if (spans.empty()) break;
    wb.rows = int64_t(spans.size());
    wb.T = 0;
    for (auto [b, e] : spans) wb.T = std::max(wb.T, e - b);
    wb.inputs.assign(size_t(wb.rows * wb.T), has_bos ? bos_id : all_tokens[0]);
    wb.targets.assign(size_t(wb.rows * wb.T), -1);
    for (int64_t r = 0; r < wb.rows; ++r) {
      auto [b, e] = spans[size_t(r)];
      for (int64_t i = 0; i < e - b; ++i) {
        if (has_bos) {
          wb.inputs[size_t(r * wb.T + i)] = i == 0 ? bos_id : all_tokens[size_t(b + i - 1)];
          wb.targets[size_t(r * wb.T + i)] = all_tokens[size_t(b + i)];
        } else {
          wb.inputs[size_t(r * wb.T + i)] = all_tokens[size_t(b + i)];
          if (i + 1 < e - b) wb.targets[size_t(r * wb.T + i)] = all_tokens[size_t(b + i + 1)];
        }
      }
    }
    wb.end = start;
    f(wb);
  }
}

int64_t check_params(const Transformer& model, const std::vector<int32_t>& all_tokens, int32_t bos_id,
                     const PerplexityParams& p, int64_t* window) {
  const ModelConfig& c = model.config();
  int64_t W = p.window > 0 ? p.window : c.max_seq_len - 1;
  LATTE_REQUIRE(W >= 1 && W + 1 <= c.max_seq_len, ErrorCode::invalid_argument, "evaluation window ", W,
                " must be in [1, ", c.max_seq_len - 1, "] (the context minus the BOS slot)");
  LATTE_REQUIRE(p.batch >= 1, ErrorCode::invalid_argument, "evaluation batch must be >= 1");
  int64_t n = int64_t(all_tokens.size());
  if (p.max_tokens > 0) n = std::min(n, p.max_tokens);
  LATTE_REQUIRE(n >= (bos_id >= 0 ? 1 : 2), ErrorCode::invalid_argument, "the text has too few tokens (", n,
                ") to score");
  *window = W;
  return n;
}

// Logits [rows*T, V] of a batch of windows. With a paged cache each window is one sequence of one
// forward_paged step over its own consecutive blocks, every row's logits returned in order.
Tensor window_logits(Transformer& model, const WindowBatch& wb, std::optional<DType> paged_cache) {
  if (!paged_cache) {
    KvCache cache = model.make_cache(wb.rows, wb.T);
    return model.forward(wb.inputs, wb.rows, cache, LogitsFor::all_positions, MlaForm::expanded);
  }
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (wb.T + kBlock - 1) / kBlock, N = wb.rows * wb.T;
  PagedKvCache cache = PagedKvCache::create(model.config(), wb.rows * blocks, kBlock, *paged_cache, model.tp(),
                                            model.backend());
  std::vector<int32_t> positions(static_cast<size_t>(N)), slots(static_cast<size_t>(N)), rows(static_cast<size_t>(N));
  std::vector<int32_t> query_start, context_len, table;
  for (int64_t r = 0; r < wb.rows; ++r) {
    query_start.push_back(int32_t(r * wb.T));
    context_len.push_back(int32_t(wb.T));
    for (int64_t b = 0; b < blocks; ++b) table.push_back(int32_t(r * blocks + b));
    for (int64_t t = 0; t < wb.T; ++t) {
      const size_t i = size_t(r * wb.T + t);
      positions[i] = int32_t(t);
      slots[i] = int32_t(r * blocks * kBlock + t);
      rows[i] = int32_t(i);
    }
  }
  query_start.push_back(int32_t(N));
  const PagedStep step{wb.inputs, positions, slots, PagedBatch{query_start, context_len, table, blocks, kBlock}, rows};
  return model.forward_paged(step, cache);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PerplexityResult perplexity(Transformer& model, const std::vector<int32_t>& all_tokens, int32_t bos_id,
                            const PerplexityParams& p, const std::function<void(const PerplexityProgress&)>& on_progress) {
  int64_t W = 0;
  const int64_t n = check_params(model, all_tokens, bos_id, p, &W);
  auto t0 = std::chrono::steady_clock::now();
  double nll_sum = 0;
  int64_t scored = 0;
  for_each_window_batch(all_tokens, n, bos_id, W, p.batch, [&](const WindowBatch& wb) {
    Backend& be = model.backend();
    Tensor logits = window_logits(model, wb, p.paged_cache);
    Tensor losses = be.empty({wb.rows * wb.T});
    be.cross_entropy_forward(losses, logits, wb.targets);
    const Tensor host_losses = be.to_host(losses);
    const float* lp = host_losses.f32();
    for (int64_t i = 0; i < wb.rows * wb.T; ++i) {
      if (wb.targets[size_t(i)] < 0) continue;
      LATTE_REQUIRE(std::isfinite(lp[i]), ErrorCode::numerics, "perplexity: non-finite loss at token ", i);
      nll_sum += lp[i];
      ++scored;
    }
    if (on_progress) on_progress({wb.end, n, seconds_since(t0), nll_sum / double(scored)});
  });
  PerplexityResult r;
  r.tokens = scored;
  r.mean_nll = nll_sum / double(scored);
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = seconds_since(t0);
  return r;
}

CompareResult compare_models(Transformer& a, Transformer& b, const std::vector<int32_t>& all_tokens, int32_t bos_id,
                             const PerplexityParams& p,
                             const std::function<void(int64_t, double, double, double)>& on_token,
                             const std::function<void(const PerplexityProgress&)>& on_progress) {
  LATTE_REQUIRE(a.config().vocab_size == b.config().vocab_size, ErrorCode::invalid_argument,
                "compare: the models have different vocabularies (", a.config().vocab_size, " vs ",
                b.config().vocab_size, ")");
  int64_t W = 0;
  PerplexityParams pp = p;
  if (pp.window == 0) pp.window = std::min(a.config().max_seq_len, b.config().max_seq_len) - 1;
  const int64_t n = std::max(check_params(a, all_tokens, bos_id, pp, &W), check_params(b, all_tokens, bos_id, pp, &W));
  const int64_t V = a.config().vocab_size;
  auto t0 = std::chrono::steady_clock::now();
  CompareResult r;
  double kl_sum = 0, nll_a = 0, nll_b = 0;
  int64_t agree = 0;
  std::vector<double> la(static_cast<size_t>(V)), lb(static_cast<size_t>(V));
  for_each_window_batch(all_tokens, n, bos_id, W, pp.batch, [&](const WindowBatch& wb) {
    // Both models' logits are read on the host (a view on the CPU, a copy from a device).
    const Tensor xa = a.backend().to_host(window_logits(a, wb, p.paged_cache));
    const Tensor xb = b.backend().to_host(window_logits(b, wb, p.paged_cache));
    for (int64_t i = 0; i < wb.rows * wb.T; ++i) {
      const int32_t target = wb.targets[size_t(i)];
      if (target < 0) continue;
      // log-softmax of both rows in double, then KL(A||B) = sum p_A (log p_A - log p_B).
      const float* ra = xa.f32() + i * V;
      const float* rb = xb.f32() + i * V;
      auto log_softmax = [&](const float* row, std::vector<double>& out) {
        double m = row[0];
        for (int64_t v = 1; v < V; ++v) m = std::max(m, double(row[v]));
        double s = 0;
        for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - m);
        const double lse = m + std::log(s);
        for (int64_t v = 0; v < V; ++v) out[size_t(v)] = double(row[v]) - lse;
      };
      log_softmax(ra, la);
      log_softmax(rb, lb);
      double kl = 0;
      int64_t arg_a = 0, arg_b = 0;
      for (int64_t v = 0; v < V; ++v) {
        kl += std::exp(la[size_t(v)]) * (la[size_t(v)] - lb[size_t(v)]);
        if (la[size_t(v)] > la[size_t(arg_a)]) arg_a = v;
        if (lb[size_t(v)] > lb[size_t(arg_b)]) arg_b = v;
      }
      LATTE_REQUIRE(std::isfinite(kl), ErrorCode::numerics, "compare: non-finite KL at token ", r.tokens);
      kl_sum += kl;
      r.max_kl = std::max(r.max_kl, kl);
      nll_a -= la[size_t(target)];
      nll_b -= lb[size_t(target)];
      agree += arg_a == arg_b;
      if (on_token) on_token(r.tokens, kl, -la[size_t(target)], -lb[size_t(target)]);
      ++r.tokens;
    }
    if (on_progress) on_progress({wb.end, n, seconds_since(t0), kl_sum / double(std::max<int64_t>(r.tokens, 1))});
  });
  r.mean_kl = kl_sum / double(r.tokens);
  r.nll_a = nll_a / double(r.tokens);
  r.nll_b = nll_b / double(r.tokens);
  r.perplexity_a = std::exp(r.nll_a);
  r.perplexity_b = std::exp(r.nll_b);
  r.top1_agreement = double(agree) / double(r.tokens);
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace latte
