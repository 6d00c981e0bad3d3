// read_arc (choice_readers.h): ARC items, prompt as lm-evaluation-harness's arc_easy/arc_challenge
// tasks (doc_to_text "Question: {{question}}\nAnswer:", the choices' texts, gold = label index).
#include <filesystem>

#include "core/base/error.h"
#include "inference/eval/choice_readers.h"
#include "inference/eval/jsonl_lines.h"

namespace latte {

ChoiceTask read_arc(const std::string& path) {
  ChoiceTask task;
  const std::filesystem::path folder = std::filesystem::absolute(path).parent_path();
  task.name = folder.filename().string();
  if (task.name.empty()) task.name = "arc";
  for_each_jsonl_object(path, [&](int64_t, const nlohmann::json& o) {
    ChoiceItem item{"Question: " + json_string_field(o, "question") + "\nAnswer:", json_string_list_field(o, "choices"),
                    json_int_field(o, "gold")};
    if (std::string problem = choice_item_problem(item); !problem.empty()) throw JsonLineError(problem);
    task.items.push_back(std::move(item));
  });
  LATTE_REQUIRE(!task.items.empty(), ErrorCode::invalid_argument, path, " holds no items");
  return task;
}

}  // namespace latte
