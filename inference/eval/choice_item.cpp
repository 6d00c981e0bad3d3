#include "inference/eval/choice_item.h"

namespace latte {

std::string choice_item_problem(const ChoiceItem& item) {
  if (item.choices.size() < 2)
    return "an item needs at least two choices, this one has " + std::to_string(item.choices.size());
  for (size_t i = 0; i < item.choices.size(); ++i)
    if (item.choices[i].empty()) return "choice " + std::to_string(i) + " is empty";
  if (item.gold < 0 || item.gold >= int64_t(item.choices.size()))
    return "gold " + std::to_string(item.gold) + " is outside the " + std::to_string(item.choices.size()) +
           " choices (0-based)";
  return "";
}

}  // namespace latte
