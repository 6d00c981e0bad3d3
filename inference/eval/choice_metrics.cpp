#include "inference/eval/choice_metrics.h"

#include <cmath>

#include "core/base/error.h"

namespace latte {

int64_t utf8_code_points(const std::string& text) {
  int64_t n = 0;
  for (unsigned char ch : text) n += (ch & 0xC0) != 0x80;  // count every byte that is not a continuation
  return n;
}

int64_t first_argmax(const std::vector<double>& values) {
  LATTE_REQUIRE(!values.empty(), ErrorCode::invalid_argument, "argmax of no values");
  int64_t best = 0;
  for (size_t i = 1; i < values.size(); ++i)
    if (values[i] > values[size_t(best)]) best = int64_t(i);
  return best;
}

ChoiceOutcome choice_outcome(const std::vector<double>& log_likelihood, const std::vector<std::string>& choices,
                             int64_t gold) {
  LATTE_REQUIRE(log_likelihood.size() == choices.size(), ErrorCode::invalid_argument, log_likelihood.size(),
                " log-likelihoods for ", choices.size(), " choices");
  std::vector<double> normalized(choices.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    const int64_t chars = utf8_code_points(choices[i]);
    LATTE_REQUIRE(chars > 0, ErrorCode::invalid_argument, "choice ", i, " is empty: acc_norm would divide by zero");
    normalized[i] = log_likelihood[i] / double(chars);
  }
  ChoiceOutcome o;
  o.pick = first_argmax(log_likelihood);
  o.pick_norm = first_argmax(normalized);
  o.correct = o.pick == gold;
  o.correct_norm = o.pick_norm == gold;
  return o;
}

double accuracy_stderr(double p, int64_t n) {
  if (n < 2) return 0.0;
  return std::sqrt(p * (1.0 - p) / double(n - 1));
}

}  // namespace latte
