// One multiple-choice task scored on one model: every item's choices tokenized as the harness does
// (choice_request.h), scored with the context run once (choice_scoring.h), and tallied
// (choice_metrics.h).
#pragma once
#include <functional>

#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"
#include "inference/eval/choice_item.h"
#include "inference/eval/choice_metrics.h"
#include "inference/eval/choice_request.h"

namespace latte {

struct ChoiceEvalParams {
  int64_t limit = 0;  // score only the first N items (0: all)
  BosRule bos = BosRule::tokenizer;
};

struct ChoiceEvalProgress {
  int64_t items_done = 0, items_total = 0;
  double seconds = 0;
  double acc = 0, acc_norm = 0;  // so far
};

// What one item scored, for a per-item log.
struct ChoiceItemScore {
  int64_t index = 0;
  std::vector<double> log_likelihood;
  ChoiceOutcome outcome;
};

struct ChoiceTaskResult {
  std::string name;
  AccuracyTally tally;
  int64_t tokens = 0;  // tokens the forward passes read
  double seconds = 0;
  double acc_stderr() const { return accuracy_stderr(tally.acc(), tally.items); }
  double acc_norm_stderr() const { return accuracy_stderr(tally.acc_norm(), tally.items); }
};

ChoiceTaskResult evaluate_choice_task(Transformer& model, const Tokenizer& tokenizer, const ChoiceTask& task,
                                      const ChoiceEvalParams& params,
                                      const std::function<void(const ChoiceItemScore&)>& on_item = {},
                                      const std::function<void(const ChoiceEvalProgress&)>& on_progress = {});

}  // namespace latte
