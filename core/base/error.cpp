#include "core/base/error.h"

namespace latte {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid argument";
    case ErrorCode::bad_file: return "bad file";
    case ErrorCode::io: return "i/o error";
    case ErrorCode::shape_mismatch: return "shape mismatch";
    case ErrorCode::numerics: return "numerics";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::internal: return "internal error";
  }
  return "error";
}

}  // namespace latte
