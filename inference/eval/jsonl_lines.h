// The line loop the multiple-choice readers share: parses every non-blank line of a JSONL file as
// one JSON object and hands it on with its 1-based line number. Any failure inside `on_object`
// (a JsonLineError, or a JSON type error from nlohmann) is rethrown as one invalid_argument line
// "FILE:LINE: what".
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace latte {

// Thrown by a reader's per-line code for a value it refuses; gains FILE:LINE on the way out.
struct JsonLineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void for_each_jsonl_object(const std::string& path,
                           const std::function<void(int64_t line, const nlohmann::json& object)>& on_object);

// Field accessors with messages that name the field and what was expected.
std::string json_string_field(const nlohmann::json& object, const char* field);
std::vector<std::string> json_string_list_field(const nlohmann::json& object, const char* field);
int64_t json_int_field(const nlohmann::json& object, const char* field);

}  // namespace latte
