// Readers for the multiple-choice sets `latte eval` scores. Every reader refuses a bad line with an
// invalid_argument error naming the file and the 1-based line number, so a broken set never
// yields an accuracy. Blank lines are skipped. Prompts follow lm-evaluation-harness's task
// definitions (data/evalsets/README.md).
#pragma once
#include <string>

#include "inference/eval/choice_item.h"

namespace latte {

// Latte's own format, one JSON object a line: {"context": str, "choices": [str, ...], "gold": int}.
// Task name: the file's stem.
ChoiceTask read_choice_jsonl(const std::string& path);

// PIQA as its authors publish it: valid.jsonl ({"goal", "sol1", "sol2"}) and the line-aligned
// valid-labels.lst (0 or 1). path is the folder holding both, or the .jsonl file with the labels
// beside it as <stem>-labels.lst. Context "Question: {goal}\nAnswer:", choices [sol1, sol2].
ChoiceTask read_piqa(const std::string& path);

// ARC (Easy or Challenge) as {"question": str, "choices": [str, ...], "gold": int} a line.
// Context "Question: {question}\nAnswer:". Task name: the name of the folder holding the file
// (data/evalsets/arc_easy/test.jsonl -> "arc_easy").
ChoiceTask read_arc(const std::string& path);

}  // namespace latte
