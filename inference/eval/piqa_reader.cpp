// read_piqa (choice_readers.h): PIQA's published files, prompt as lm-evaluation-harness's piqa task
// (doc_to_text "Question: {{goal}}\nAnswer:", doc_to_choice [sol1, sol2], label from the .lst).
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/base/file_io.h"
#include "inference/eval/choice_readers.h"
#include "inference/eval/jsonl_lines.h"

namespace latte {

namespace {

// The labels, one 0/1 a line; a bad line is refused with its number.
std::vector<int64_t> read_piqa_labels(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LATTE_REQUIRE(in.good(), ErrorCode::io, "cannot open ", path, " (PIQA labels)");
  std::vector<int64_t> labels;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.pop_back();
    LATTE_REQUIRE(text == "0" || text == "1", ErrorCode::invalid_argument, path, ":", line,
                  ": a PIQA label must be 0 or 1, got \"", text, "\"");
    labels.push_back(text == "0" ? 0 : 1);
  }
  return labels;
}

}  // namespace

ChoiceTask read_piqa(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path jsonl = is_directory(path) ? fs::path(path) / "valid.jsonl" : fs::path(path);
  const fs::path labels_path = jsonl.parent_path() / (jsonl.stem().string() + "-labels.lst");
  const std::vector<int64_t> labels = read_piqa_labels(labels_path.string());
  ChoiceTask task;
  task.name = "piqa";
  for_each_jsonl_object(jsonl.string(), [&](int64_t, const nlohmann::json& o) {
    const size_t index = task.items.size();
    if (index >= labels.size())
      throw JsonLineError("item " + std::to_string(index + 1) + " has no label: " + labels_path.string() + " has only " +
                          std::to_string(labels.size()) + " lines");
    ChoiceItem item{"Question: " + json_string_field(o, "goal") + "\nAnswer:",
                    {json_string_field(o, "sol1"), json_string_field(o, "sol2")},
                    labels[index]};
    if (std::string problem = choice_item_problem(item); !problem.empty()) throw JsonLineError(problem);
    task.items.push_back(std::move(item));
  });
  LATTE_REQUIRE(task.items.size() == labels.size(), ErrorCode::invalid_argument, jsonl.string(), " has ",
                task.items.size(), " items but ", labels_path.string(), " has ", labels.size(), " labels");
  LATTE_REQUIRE(!task.items.empty(), ErrorCode::invalid_argument, jsonl.string(), " holds no items");
  return task;
}

}  // namespace latte
