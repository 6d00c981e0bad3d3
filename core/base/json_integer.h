// Integers out of JSON, strictly. nlohmann::json hands back a number as whatever type is asked for
// through a static_cast, and casting a floating-point value that does not fit (1e20 read as an
// int64_t) is undefined behaviour; config_json_fuzz and train_state_fuzz found both in Latte's
// readers under UBSan. json_integer<T> gives the value only when the JSON holds an integer
// (not a float, however integral) that T can represent, so a caller can refuse the rest by name.
#pragma once
#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace latte {

template <typename T>
std::optional<T> json_integer(const nlohmann::json& v) {
  static_assert(std::numeric_limits<T>::is_integer);
  using Limits = std::numeric_limits<T>;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(Limits::max())) return std::nullopt;
    return T(u);
  }
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0 ? (!Limits::is_signed || s < int64_t(Limits::min())) : uint64_t(s) > uint64_t(Limits::max()))
      return std::nullopt;
    return T(s);
  }
  return std::nullopt;
}

}  // namespace latte
