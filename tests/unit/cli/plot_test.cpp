// latte plot: draws a real PNG with gnuplot from hand-written metrics files, and refuses a missing,
// empty or malformed metrics file, and a machine without gnuplot, with one line each.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/unit/latte_cli.h"

using namespace latte::test;

namespace {

namespace fs = std::filesystem;




void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

bool has_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

std::string png_head(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char head[8] = {};
  f.read(head, 8);
  return std::string(head, size_t(f.gcount()));
}

const std::string kPngSignature("\x89PNG\r\n\x1a\n", 8);

// Two short runs in latte train's metrics.jsonl format (a held-out line at step 0, training lines,
// held-out lines every 4 steps).
std::string metrics(double start, double rate) {
  std::string s = "{\"step\":0,\"val_loss\":" + std::to_string(start + 0.1) + ",\"val_perplexity\":9.9}\n";
  double loss = start;
  for (int step = 1; step <= 12; ++step) {
    loss *= rate;
    s += "{\"step\":" + std::to_string(step) + ",\"loss\":" + std::to_string(loss) +
         ",\"lr\":0.001,\"grad_norm\":0.5,\"tokens\":" + std::to_string(128 * step) +
         ",\"tokens_per_s\":1000,\"step_s\":0.1}\n";
    if (step % 4 == 0)
      s += "{\"step\":" + std::to_string(step) + ",\"val_loss\":" + std::to_string(loss + 0.1) + ",\"val_perplexity\":9.9}\n";
  }
  return s;
}

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("latte_plot_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "run-a");
    fs::create_directories(dir_ / "run-b");
    write(a(), metrics(2.0, 0.97));
    write(b(), metrics(2.1, 0.95));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string a() const { return (dir_ / "run-a" / "metrics.jsonl").string(); }
  std::string b() const { return (dir_ / "run-b" / "metrics.jsonl").string(); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A bad input: non-zero exit, one line on stderr naming the problem, no PNG left behind.
  void expect_refused(const std::string& args, const std::string& must_contain, const std::string& env = "") {
    const std::string png = path("refused.png");
    fs::remove(png);
    CliRun r = run_latte("plot " + args + " -o " + png, env);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(count_lines(r.err), 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(must_contain), std::string::npos) << args << "\n" << r.err;
    EXPECT_FALSE(fs::exists(png)) << args;
  }

  fs::path dir_;
};

TEST_F(PlotTest, DrawsAPngOfTwoRuns) {
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (launch/install-deps installs gnuplot-nox)";
  const std::string png = path("loss.png");
  CliRun r = run_latte("plot " + a() + " " + b() + " -o " + png + " --title 'two runs' --labels base,lr_x2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 run(s), 24 training and 8 held-out points"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(png));
  EXPECT_EQ(png_head(png), kPngSignature);
  EXPECT_GT(fs::file_size(png), 2000u);  // a real drawing, not an empty canvas header

  // One file with training lines only (no held-out lines): one panel, still a PNG; an existing
  // output is replaced.
  write(path("train_only.jsonl"), "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":3.25}\n");
  r = run_latte("plot " + path("train_only.jsonl") + " -o " + png);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(png_head(png), kPngSignature);
}

TEST_F(PlotTest, BadMetricsFilesAreRefusedWithOneLine) {
  expect_refused(path("nope.jsonl"), "metrics file not found: " + path("nope.jsonl"));
  write(path("empty.jsonl"), "");
  expect_refused(path("empty.jsonl"), "is empty");
  write(path("blank.jsonl"), "\n  \n");
  expect_refused(path("blank.jsonl"), "is empty");
  write(path("torn.jsonl"), "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"lo\n");
  expect_refused(a() + " " + path("torn.jsonl"), "torn.jsonl:2: not a JSON line");
  write(path("text.jsonl"), "step 1 loss 3.5\n");
  expect_refused(path("text.jsonl"), "text.jsonl:1: not a JSON line");
  write(path("nostep.jsonl"), "{\"loss\":3.5}\n");
  expect_refused(path("nostep.jsonl"), "nostep.jsonl:1: no integer \"step\"");
  write(path("strloss.jsonl"), "{\"step\":1,\"loss\":\"3.5\"}\n");
  expect_refused(path("strloss.jsonl"), "strloss.jsonl:1: \"loss\" is not a finite number");
  write(path("other.jsonl"), "{\"text\":\"Once upon a time\"}\n");
  expect_refused(path("other.jsonl"), "has no \"loss\" or \"val_loss\" lines");
  expect_refused(dir_.string() + "/run-a", "is a folder");
  expect_refused(a() + " " + b() + " --labels only_one", "--labels has 1 entries for 2 metrics files");
}

TEST_F(PlotTest, MissingGnuplotSaysWhatToInstall) {
  // PATH without gnuplot (latte itself is started by its full path).
  expect_refused(a(), "install gnuplot-nox", "PATH=/nonexistent-latte-test-dir");
}

TEST_F(PlotTest, BadOutputIsRefused) {
  CliRun r = run_latte("plot " + a() + " -o " + path("no/such/folder/loss.png"));
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = run_latte("plot " + a());
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
}

}  // namespace
