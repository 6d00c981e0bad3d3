// The one exception type of the coordinator library. It links only gRPC and protobuf, so it cannot
// throw latte::Error; cli/cmd_coordinator.cpp turns this into one.
#pragma once
#include <stdexcept>
#include <string>

namespace latte::coordinator {

class CoordinatorError : public std::runtime_error {
 public:
  enum class Kind {
    invalid_argument,  // an option or address that cannot work
    io,                // a file that cannot be read
    startup,           // the listener could not be started (port taken, bad TLS pair)
  };
  CoordinatorError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

}  // namespace latte::coordinator
