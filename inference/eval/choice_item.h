// A zero-shot multiple-choice item as lm-evaluation-harness sees it after its prompt template: one
// context, the choices' texts (each scored as the continuation " " + choice) and the index of the
// right one. A task is a named list of them (what `latte eval` reports one accuracy for).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace latte {

struct ChoiceItem {
  std::string context;               // e.g. "Question: {goal}\nAnswer:" (PIQA)
  std::vector<std::string> choices;  // without the leading space; at least two, none empty
  int64_t gold = 0;                  // 0-based index into choices
};

struct ChoiceTask {
  std::string name;  // "piqa", "arc_easy", or a JSONL file's stem
  std::vector<ChoiceItem> items;
};

// What makes an item unscorable ("" when nothing does): fewer than two choices, an empty choice
// (acc_norm divides by its length) or a gold index outside the choices.
std::string choice_item_problem(const ChoiceItem& item);

}  // namespace latte
