// read_choice_jsonl (choice_readers.h): Latte's own multiple-choice format.
#include <filesystem>

#include "core/base/error.h"
#include "inference/eval/choice_readers.h"
#include "inference/eval/jsonl_lines.h"

namespace latte {

ChoiceTask read_choice_jsonl(const std::string& path) {
  ChoiceTask task;
  task.name = std::filesystem::path(path).stem().string();
  for_each_jsonl_object(path, [&](int64_t, const nlohmann::json& o) {
    ChoiceItem item{json_string_field(o, "context"), json_string_list_field(o, "choices"), json_int_field(o, "gold")};
    if (std::string problem = choice_item_problem(item); !problem.empty()) throw JsonLineError(problem);
    task.items.push_back(std::move(item));
  });
  LATTE_REQUIRE(!task.items.empty(), ErrorCode::invalid_argument, path, " holds no items");
  return task;
}

}  // namespace latte
