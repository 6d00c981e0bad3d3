// The decision rules and the summary lm-evaluation-harness reports for multiple choice:
//   acc      = [argmax_i ll_i == gold]
//   acc_norm = [argmax_i ll_i / chars_i == gold], chars_i = the choice's length in characters
//              (Unicode code points, Python's len(), of the choice without its leading space)
// argmax takes the first of equal maxima (numpy's argmax), so a tie goes to the lower index.
// Standard error of a mean of 0/1 outcomes: the sample standard deviation over sqrt(n), i.e.
// sqrt(p (1 - p) / (n - 1)) (the harness's mean_stderr); 0 for n < 2.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace latte {

int64_t utf8_code_points(const std::string& text);

// Index of the first maximum.
int64_t first_argmax(const std::vector<double>& values);

struct ChoiceOutcome {
  int64_t pick = 0, pick_norm = 0;  // argmax of ll and of ll / chars
  bool correct = false, correct_norm = false;
};

ChoiceOutcome choice_outcome(const std::vector<double>& log_likelihood, const std::vector<std::string>& choices,
                             int64_t gold);

// Running accuracy of one task.
struct AccuracyTally {
  int64_t items = 0, correct = 0, correct_norm = 0;
  void add(const ChoiceOutcome& o) {
    ++items;
    correct += o.correct;
    correct_norm += o.correct_norm;
  }
  double acc() const { return items ? double(correct) / double(items) : 0.0; }
  double acc_norm() const { return items ? double(correct_norm) / double(items) : 0.0; }
};

double accuracy_stderr(double p, int64_t n);

}  // namespace latte
