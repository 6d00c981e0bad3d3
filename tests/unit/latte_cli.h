// Running the built latte executable from a test: exit code, stdout and stderr of one command.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace latte::test {

inline const std::string& latte_binary() {
  static const std::string path = std::string(LATTE_BINARY_DIR) + "/bin/latte";
  return path;
}

struct CliRun {
  int code;
  std::string out, err;
};

// Runs `[env] latte args` through the shell; env is an optional VAR=value prefix.
inline CliRun run_latte(const std::string& args, const std::string& env = "") {
  static int serial = 0;
  const std::string err_file = (std::filesystem::temp_directory_path() /
                                ("latte_cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(serial++)))
                                   .string();
  const std::string cmd = env + (env.empty() ? "" : " ") + latte_binary() + " " + args + " 2>" + err_file;
  CliRun r{};
  FILE* p = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err_file);
  return r;
}

// Writes the first 20,000 characters of the shipped TinyStories text to dir/head.txt and tokenizes
// it with the shipped tokenizer into `shard` (the small training shard the CLI tests share).
inline CliRun tokenize_story_head(const std::string& dir, const std::string& shard) {
  const std::string models = LATTE_MODELS_DIR;
  std::ifstream in(models + "/stories260K/tinystories_valid_head.txt", std::ios::binary);
  std::string text(20000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  std::ofstream(dir + "/head.txt", std::ios::binary) << text;
  return run_latte("tokenize --tokenizer " + models + "/stories260K/tok512.bin " + dir + "/head.txt -o " + shard);
}

// A test suite sharing one temp folder per process with head.txt and shard.bin in it
// (tokenize_story_head), made once before the suite's first test and removed after its last.
// Name (a string with static storage) goes into the folder name.
template <const char* Name>
class StoryShardSuite : public ::testing::Test {
 protected:
  // Tokenized once per process, from SetUp rather than SetUpTestSuite: a failure in SetUpTestSuite
  // shows the tests as "[  SKIPPED ]", which CMake's test discovery counts as skipped, not failed.
  void SetUp() override {
    if (!dir_.empty()) return;
    dir_ = (std::filesystem::temp_directory_path() / (std::string(Name) + "_" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    CliRun r = tokenize_story_head(dir_, shard());
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(dir_);
    dir_.clear();
  }
  static std::string shard() { return dir_ + "/shard.bin"; }
  static inline std::string dir_;
};

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// The command fails with exactly one line on stderr that mentions `must_contain`.
inline void expect_one_line_error(const std::string& args, const std::string& must_contain) {
  CliRun r = run_latte(args);
  EXPECT_NE(r.code, 0) << args;
  EXPECT_EQ(count_lines(r.err), 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << args << "\n" << r.err;
}

}  // namespace latte::test
