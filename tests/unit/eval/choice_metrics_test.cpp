// acc / acc_norm decisions, including the ties (numpy argmax: the first maximum wins) and the
// cases where the two rules disagree, and the harness's standard error.
#include <gtest/gtest.h>

#include <cmath>

#include "core/base/error.h"
#include "inference/eval/choice_metrics.h"

namespace latte {
namespace {

TEST(ChoiceMetrics, AccAndAccNormDisagreeWhenLengthsDiffer) {
  // ll/chars: -10/5 = -2.0 vs -12/10 = -1.2: acc picks the short choice, acc_norm the long one.
  ChoiceOutcome o = choice_outcome({-10.0, -12.0}, {"abcde", "abcdefghij"}, 1);
  EXPECT_EQ(o.pick, 0);
  EXPECT_EQ(o.pick_norm, 1);
  EXPECT_FALSE(o.correct);
  EXPECT_TRUE(o.correct_norm);
}

TEST(ChoiceMetrics, TiesGoToTheFirstChoice) {
  ChoiceOutcome raw_tie = choice_outcome({-3.0, -3.0, -5.0}, {"ab", "abc", "a"}, 1);
  EXPECT_EQ(raw_tie.pick, 0);  // equal sums: the lower index, even though gold is 1
  EXPECT_FALSE(raw_tie.correct);
  EXPECT_EQ(raw_tie.pick_norm, 1);  // -1.5, -1.0, -5.0
  EXPECT_TRUE(raw_tie.correct_norm);

  // -8/4 == -4/2: tied after normalisation, so acc_norm takes choice 0 while acc takes choice 1.
  ChoiceOutcome norm_tie = choice_outcome({-8.0, -4.0}, {"abcd", "ab"}, 0);
  EXPECT_EQ(norm_tie.pick, 1);
  EXPECT_EQ(norm_tie.pick_norm, 0);
  EXPECT_FALSE(norm_tie.correct);
  EXPECT_TRUE(norm_tie.correct_norm);
}

TEST(ChoiceMetrics, LengthIsCountedInCodePointsNotBytes) {
  EXPECT_EQ(utf8_code_points("abc"), 3);
  EXPECT_EQ(utf8_code_points("caf\xC3\xA9"), 4);            // café
  EXPECT_EQ(utf8_code_points("\xE2\x82\xAC" "5"), 2);       // €5
  EXPECT_EQ(utf8_code_points("\xF0\x9F\x98\x80"), 1);       // one emoji, 4 bytes
  // "é" (2 bytes, 1 char) vs "ab" (2 bytes, 2 chars): by bytes -2/2 == -2/2 would tie at choice 0;
  // by characters -2/1 < -2/2, so choice 1 wins.
  ChoiceOutcome o = choice_outcome({-2.0, -2.0}, {"\xC3\xA9", "ab"}, 1);
  EXPECT_EQ(o.pick_norm, 1);
}

TEST(ChoiceMetrics, StandardErrorIsTheHarnessSampleStderr) {
  EXPECT_NEAR(accuracy_stderr(0.5, 5), 0.25, 1e-12);  // sqrt(0.25 / 4)
  EXPECT_NEAR(accuracy_stderr(0.7, 1838), std::sqrt(0.21 / 1837.0), 1e-15);
  EXPECT_EQ(accuracy_stderr(1.0, 10), 0.0);
  EXPECT_EQ(accuracy_stderr(0.5, 1), 0.0);
}

TEST(ChoiceMetrics, TallyCountsBothRules) {
  AccuracyTally t;
  t.add(choice_outcome({-1.0, -2.0}, {"a", "b"}, 0));     // both right
  t.add(choice_outcome({-1.0, -2.0}, {"a", "bbbb"}, 1));  // acc wrong, acc_norm right (-1 vs -0.5)
  t.add(choice_outcome({-3.0, -2.0}, {"a", "b"}, 0));     // both wrong
  EXPECT_EQ(t.items, 3);
  EXPECT_DOUBLE_EQ(t.acc(), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(t.acc_norm(), 2.0 / 3.0);
}

TEST(ChoiceMetrics, RefusesMismatchedOrEmptyChoices) {
  EXPECT_THROW(choice_outcome({-1.0}, {"a", "b"}, 0), Error);
  EXPECT_THROW(choice_outcome({-1.0, -1.0}, {"a", ""}, 0), Error);
}

}  // namespace
}  // namespace latte
