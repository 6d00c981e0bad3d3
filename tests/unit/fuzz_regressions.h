// Replays the inputs that broke a parser (tests/data/fuzz/<target>/, one folder per fuzz target in
// tests/fuzz: found by bench/fuzz, or while writing the target) through the normal test suite.
// Every file there once crashed a parser, exhausted memory or was accepted although invalid, so
// each must now be refused with a one-line latte::Error of a file-level code; acceptance or any
// other exception fails the test.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/error.h"

namespace latte::testing {

inline std::vector<std::string> fuzz_regression_files(const std::string& target) {
  std::vector<std::string> files;
  const std::filesystem::path dir = std::filesystem::path(LATTE_TEST_DATA_DIR) / "fuzz" / target;
  if (std::filesystem::is_directory(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// parse(path) must throw a bad_file or unsupported latte::Error whose message is one line.
template <typename Parse>
void expect_fuzz_regressions_rejected(const std::string& target, Parse&& parse) {
  const std::vector<std::string> files = fuzz_regression_files(target);
  ASSERT_FALSE(files.empty()) << "no regression files in tests/data/fuzz/" << target;
  for (const std::string& path : files) {
    try {
      parse(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(e.code() == ErrorCode::bad_file || e.code() == ErrorCode::unsupported)
          << path << ": " << error_code_name(e.code()) << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << path << ": message is not one line: " << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ": " << e.what() << " escaped instead of a latte::Error";
    }
  }
}

}  // namespace latte::testing
