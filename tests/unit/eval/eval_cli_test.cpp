// latte eval end to end on stories260K: the JSON summary agrees with the per-item details it wrote,
// the shipped PIQA/ARC copies load, and bad input fails with one line naming the file and line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../latte_cli.h"

namespace latte::test {
namespace {

namespace fs = std::filesystem;

const std::string kModels = LATTE_MODELS_DIR;
const std::string kStories = "-m " + kModels + "/stories260K/stories260K.bin -z " + kModels + "/stories260K/tok512.bin";
const std::string kEvalsets = kModels + "/../data/evalsets";

class EvalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("latte_eval_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(EvalCli, SummaryAgreesWithTheItemsItScored) {
  const std::string set = write("stories.jsonl",
                                "{\"context\": \"Lily went to the park. She saw a big\", \"choices\": [\"dog\", "
                                "\"ocean of purple fractions\"], \"gold\": 0}\n"
                                "{\"context\": \"Tom was sad. His mom gave him a\", \"choices\": [\"hug\", \"hug and a "
                                "cookie\", \"xylophone\"], \"gold\": 1}\n"
                                "{\"context\": \"Once upon a time\", \"choices\": [\"there was a girl\", \"qzx\"], "
                                "\"gold\": 1}\n");
  const std::string details = (dir_ / "details.jsonl").string();
  CliRun r = run_latte("eval " + kStories + " --jsonl " + set + " --json -q --details " + details);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json summary = nlohmann::json::parse(r.out);
  ASSERT_EQ(summary["tasks"].size(), 1u);
  const nlohmann::json& t = summary["tasks"][0];
  EXPECT_EQ(t["task"], "stories");
  EXPECT_EQ(t["items"], 3);

  std::ifstream in(details);
  std::string line;
  int items = 0, correct = 0, correct_norm = 0;
  const int gold[] = {0, 1, 1};
  const size_t n_choices[] = {2, 3, 2};
  while (std::getline(in, line)) {
    const nlohmann::json d = nlohmann::json::parse(line);
    ASSERT_LT(items, 3);
    EXPECT_EQ(d["item"], items);
    EXPECT_EQ(d["gold"], gold[items]);
    const std::vector<double> ll = d["log_likelihood"];
    ASSERT_EQ(ll.size(), n_choices[items]);
    for (double v : ll) EXPECT_TRUE(std::isfinite(v) && v < 0) << v;
    correct += d["pick"] == gold[items];
    correct_norm += d["pick_norm"] == gold[items];
    ++items;
  }
  EXPECT_EQ(items, 3);
  EXPECT_DOUBLE_EQ(t["acc"].get<double>(), correct / 3.0);
  EXPECT_DOUBLE_EQ(t["acc_norm"].get<double>(), correct_norm / 3.0);
  const double p = correct / 3.0;
  EXPECT_NEAR(t["acc_stderr"].get<double>(), std::sqrt(p * (1 - p) / 2.0), 1e-12);
}

TEST_F(EvalCli, ReadsTheShippedSetsWithLimit) {
  CliRun r = run_latte("eval " + kStories + " --piqa " + kEvalsets + "/piqa --arc " + kEvalsets +
                       "/arc_easy/test.jsonl --limit 3 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json summary = nlohmann::json::parse(r.out);
  ASSERT_EQ(summary["tasks"].size(), 2u);
  EXPECT_EQ(summary["tasks"][0]["task"], "piqa");
  EXPECT_EQ(summary["tasks"][0]["items"], 3);
  EXPECT_EQ(summary["tasks"][1]["task"], "arc_easy");
  EXPECT_EQ(summary["tasks"][1]["items"], 3);
}

TEST_F(EvalCli, ProgressLineShowsRateAndEta) {
  const std::string set = write("two.jsonl",
                                "{\"context\": \"A\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n"
                                "{\"context\": \"B\", \"choices\": [\"c\", \"d\"], \"gold\": 1}\n");
  CliRun r = run_latte("eval " + kStories + " --jsonl " + set);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("eval two: 2/2 items"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("items/s  ETA"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("two"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("acc_norm"), std::string::npos) << r.out;
}

TEST_F(EvalCli, BadInputFailsWithOneLine) {
  const std::string bad = write("bad.jsonl",
                                "{\"context\": \"A\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n"
                                "{\"context\": \"A\", \"choices\": [\"b\", \"c\"], \"gold\": 7}\n");
  expect_one_line_error("eval " + kStories + " --jsonl " + bad, "bad.jsonl:2: gold 7 is outside");
  const std::string broken = write("broken.jsonl", "{\"context\": \"A\", \"choices\": [\"b\", \"c\"]\n");
  expect_one_line_error("eval " + kStories + " --jsonl " + broken, "broken.jsonl:1: ");
  expect_one_line_error("eval " + kStories, "nothing to evaluate");
  expect_one_line_error("eval " + kStories + " --piqa " + (dir_ / "nowhere").string(), "cannot open");
}

}  // namespace
}  // namespace latte::test
