#include "inference/eval/choice_task_eval.h"

#include <algorithm>
#include <chrono>

#include "core/base/error.h"
#include "inference/eval/choice_scoring.h"

namespace latte {

ChoiceTaskResult evaluate_choice_task(Transformer& model, const Tokenizer& tokenizer, const ChoiceTask& task,
                                      const ChoiceEvalParams& params,
                                      const std::function<void(const ChoiceItemScore&)>& on_item,
                                      const std::function<void(const ChoiceEvalProgress&)>& on_progress) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const int64_t total =
      params.limit > 0 ? std::min<int64_t>(params.limit, int64_t(task.items.size())) : int64_t(task.items.size());
  ChoiceTaskResult result;
  result.name = task.name;
  for (int64_t i = 0; i < total; ++i) {
    const ChoiceItem& item = task.items[size_t(i)];
    std::vector<int32_t> context;
    std::vector<std::vector<int32_t>> continuations;
    for (const std::string& choice : item.choices) {
      ChoiceRequestTokens req = encode_choice_request(tokenizer, item.context, " " + choice, params.bos);
      // The context's tokens never depend on the choice (only its trailing whitespace moves, the
      // same for every choice), which is what lets the scorer run it once.
      LATTE_REQUIRE(continuations.empty() || req.context == context, ErrorCode::internal,
                    "context tokens differ between the choices of item ", i);
      context = std::move(req.context);
      LATTE_REQUIRE(!req.continuation.empty(), ErrorCode::invalid_argument, task.name, " item ", i + 1, ": choice \"",
                    choice, "\" adds no tokens after the context");
      continuations.push_back(std::move(req.continuation));
    }
    ContinuationScores scores = score_continuations(model, context, continuations);
    ChoiceItemScore item_score{i, std::move(scores.log_likelihood), {}};
    item_score.outcome = choice_outcome(item_score.log_likelihood, item.choices, item.gold);
    result.tally.add(item_score.outcome);
    result.tokens += scores.tokens;
    if (on_item) on_item(item_score);
    if (on_progress) on_progress({i + 1, total, seconds(), result.tally.acc(), result.tally.acc_norm()});
  }
  result.seconds = seconds();
  return result;
}

}  // namespace latte
