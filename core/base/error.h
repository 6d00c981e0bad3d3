// One error type for the whole library. Library code throws latte::Error; exactly one place per
// main() prints it and picks the exit code (see cli/main.cpp).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace latte {

enum class ErrorCode {
  invalid_argument,  // a flag, a request or a call with values out of range
  bad_file,          // a file that is truncated, malformed or does not match what it claims
  io,                // the operating system refused (open, read, write, rename)
  shape_mismatch,    // tensors whose shapes or dtypes do not fit together
  numerics,          // NaN/Inf where finite values are required
  unsupported,       // a valid request this build or backend cannot serve
  internal,          // a broken invariant: a bug in Latte
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// str_cat("a", 1, 'b') -> "a1b": messages are built only on the error path.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(ErrorCode code, Args&&... args) {
  throw Error(code, str_cat(std::forward<Args>(args)...));
}

}  // namespace latte

// LATTE_REQUIRE(cond, code, message parts...): validate input at a public boundary.
#define LATTE_REQUIRE(cond, code, ...)                 \
  do {                                                 \
    if (!(cond)) ::latte::fail((code), __VA_ARGS__);   \
  } while (0)

// LATTE_ASSERT(cond): an internal invariant; failure is a Latte bug, reported with file:line.
#define LATTE_ASSERT(cond)                                                                   \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::latte::fail(::latte::ErrorCode::internal, "internal error: ", #cond, " at ", __FILE__, \
                    ":", __LINE__);                                                          \
  } while (0)
