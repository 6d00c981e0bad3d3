// Helpers shared by the tokenizer tests: fixture paths, temp files, and error checks.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "core/base/error.h"

namespace latte::test {

inline std::string tok512_path() { return std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin"; }
// Text corpora kept in the repository: tests/data/corpus/, except the TinyStories validation head,
// which ships with the default model in models/stories260K/.
inline std::string corpus_path(const std::string& name) {
  if (name == "tinystories_valid_head.txt") return std::string(LATTE_MODELS_DIR) + "/stories260K/" + name;
  return std::string(LATTE_CORPUS_DIR) + "/" + name;
}
inline std::string fixture_path(const std::string& name) {
  return std::string(LATTE_TEST_DATA_DIR) + "/tokenizers/" + name;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("latte_tok_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream out(file(name), std::ios::binary);
    out << bytes;
    return file(name);
  }

 private:
  std::filesystem::path path_;
};

// Runs f, expects a latte::Error with `code` whose one-line message names `path` and contains
// `needle`.
inline void expect_error(const std::function<void()>& f, ErrorCode code, const std::string& path,
                         const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning \"" << needle << "\"";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(int(e.code()), int(code)) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
  }
}

}  // namespace latte::test
