// Helpers shared by the MPI tests.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/base/error.h"
#include "parallel/runtime.h"

namespace latte::test {

// A runtime for one test: quiet, with a watchdog that ends a hung test in 60 s with a message
// (ctest's own timeout is 120 s and says nothing about which call hung).
inline ParallelOptions quiet(int tp = 1, bool verify = true) {
  return {.tp_size = tp, .collective_timeout_s = 60, .verify_collectives = verify, .announce = false};
}

// Runs f, which must throw latte::Error with `code` and a message containing `part`; returns the
// message (empty when it did not throw) so a test can check more of it.
inline std::string expect_error(const std::function<void()>& f, ErrorCode code, const std::string& part) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(error_code_name(e.code()), std::string(error_code_name(code))) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << part;
    return e.what();
  }
  ADD_FAILURE() << "no latte::Error thrown; expected one containing: " << part;
  return "";
}

}  // namespace latte::test
