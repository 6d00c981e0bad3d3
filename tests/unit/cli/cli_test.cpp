// The latte executable as a user meets it: every bad flag or bad file exits non-zero with one
// clear line on stderr, and --help works for every subcommand.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/unit/latte_cli.h"

using namespace latte::test;

namespace {

const std::string kModels = LATTE_MODELS_DIR;




TEST(CliTest, HelpForEverySubcommand) {
  for (std::string sub : {"generate", "perplexity", "info", "export"}) {
    CliRun r = run_latte(sub + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--model"), std::string::npos) << sub;
  }
}

TEST(CliTest, BadFlagsAndFilesGiveOneLine) {
  std::string m = kModels + "/stories260K/stories260K.bin";
  expect_one_line_error("", "subcommand");
  expect_one_line_error("generate --model " + m + " --bogus", "bogus");
  expect_one_line_error("generate --model /nonexistent/model.bin", "/nonexistent/model.bin");
  expect_one_line_error("generate --model " + m + " --temperature -1", "temperature");
  expect_one_line_error("generate --model " + m + " --top-p 2", "top-p");
  expect_one_line_error("generate --model " + m + " --device tpu", "device");
  expect_one_line_error("perplexity --model " + m + " --text /nonexistent.txt", "/nonexistent.txt");
  expect_one_line_error("generate --model " + kModels + "/stories260K/tok512.bin", "tok512.bin");
  expect_one_line_error("info --model " + kModels + "/stories260K/README.md", "README.md");
}

TEST(CliTest, PromptOverTheContextIsRefused) {
  std::string m = kModels + "/stories260K/stories260K.bin";
  std::string long_prompt(3000, 'z');
  expect_one_line_error("generate --model " + m + " --prompt '" + long_prompt + "'", "context");
}

TEST(CliTest, GreedyGenerateIsDeterministic) {
  std::string m = kModels + "/stories260K/stories260K.bin";
  CliRun a = run_latte("generate --model " + m + " --temperature 0 --steps 64 --threads 1 --prompt 'The cat'");
  CliRun b = run_latte("generate --model " + m + " --temperature 0 --steps 64 --threads 2 --prompt 'The cat'");
  EXPECT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out.rfind("The cat", 0), 0u) << a.out;
}

TEST(CliTest, InfoReportsKvBytesPerToken) {
  CliRun r = run_latte("info --model " + kModels + "/stories260K/stories260K.bin");
  EXPECT_EQ(r.code, 0) << r.err;
  // 2 (K and V) * 5 layers * 4 kv heads * 8 head_dim = 320 elements = 1280 B in f32.
  EXPECT_NE(r.out.find("320 elements/token = 1280 B/token f32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters   260032"), std::string::npos) << r.out;
}

}  // namespace
