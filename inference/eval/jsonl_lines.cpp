#include "inference/eval/jsonl_lines.h"

#include <fstream>

#include "core/base/error.h"

namespace latte {

void for_each_jsonl_object(const std::string& path,
                           const std::function<void(int64_t line, const nlohmann::json& object)>& on_object) {
  std::ifstream in(path, std::ios::binary);
  LATTE_REQUIRE(in.good(), ErrorCode::io, "cannot open ", path);
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      // nlohmann names the byte offset within the line; the line number is what a user needs.
      const nlohmann::json object = nlohmann::json::parse(text);
      if (!object.is_object()) throw JsonLineError("expected a JSON object, got " + std::string(object.type_name()));
      on_object(line, object);
    } catch (const JsonLineError& e) {
      fail(ErrorCode::invalid_argument, path, ":", line, ": ", e.what());
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorCode::invalid_argument, path, ":", line, ": ", e.what());
    }
  }
  LATTE_REQUIRE(!in.bad(), ErrorCode::io, "reading ", path, " failed");
}

std::string json_string_field(const nlohmann::json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) throw JsonLineError(std::string("missing field \"") + field + "\"");
  if (!it->is_string()) throw JsonLineError(std::string("\"") + field + "\" must be a string, not " + it->type_name());
  return it->get<std::string>();
}

std::vector<std::string> json_string_list_field(const nlohmann::json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) throw JsonLineError(std::string("missing field \"") + field + "\"");
  if (!it->is_array())
    throw JsonLineError(std::string("\"") + field + "\" must be a list of strings, not " + it->type_name());
  std::vector<std::string> out;
  for (const nlohmann::json& v : *it) {
    if (!v.is_string())
      throw JsonLineError(std::string("\"") + field + "\" must hold strings only, found " + v.type_name());
    out.push_back(v.get<std::string>());
  }
  return out;
}

int64_t json_int_field(const nlohmann::json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) throw JsonLineError(std::string("missing field \"") + field + "\"");
  if (!it->is_number_integer())
    throw JsonLineError(std::string("\"") + field + "\" must be an integer, not " + it->dump());
  return it->get<int64_t>();
}

}  // namespace latte
