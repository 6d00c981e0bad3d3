// The multiple-choice readers: the harness prompts, and bad lines refused with FILE:LINE.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "inference/eval/choice_readers.h"

namespace latte {
namespace {

namespace fs = std::filesystem;

class ChoiceReaders : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("latte_choice_readers_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "arc_easy");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  // The message of the Error f throws ("" if none).
  template <typename F>
  static std::string error_of(F f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(ChoiceReaders, JsonlReadsItemsAndSkipsBlankLines) {
  const std::string p = write("mine.jsonl",
                              "{\"context\": \"2+2=\", \"choices\": [\"4\", \"5\"], \"gold\": 0}\n"
                              "\n"
                              "{\"context\": \"Sky:\", \"choices\": [\"green\", \"blue\", \"red\"], \"gold\": 1}\n");
  ChoiceTask t = read_choice_jsonl(p);
  EXPECT_EQ(t.name, "mine");
  ASSERT_EQ(t.items.size(), 2u);
  EXPECT_EQ(t.items[1].context, "Sky:");
  EXPECT_EQ(t.items[1].choices, (std::vector<std::string>{"green", "blue", "red"}));
  EXPECT_EQ(t.items[1].gold, 1);
}

TEST_F(ChoiceReaders, JsonlRefusesBadLinesWithTheirNumbers) {
  const std::string good = "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n";
  struct Bad {
    std::string line, must_contain;
  };
  const Bad cases[] = {
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 1", "parse"},  // cut short
      {"[1, 2]", "expected a JSON object"},
      {"{\"choices\": [\"a\", \"b\"], \"gold\": 0}", "missing field \"context\""},
      {"{\"context\": 3, \"choices\": [\"a\", \"b\"], \"gold\": 0}", "\"context\" must be a string"},
      {"{\"context\": \"c\", \"choices\": \"a\", \"gold\": 0}", "\"choices\" must be a list"},
      {"{\"context\": \"c\", \"choices\": [\"a\", 2], \"gold\": 0}", "strings only"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 2}", "gold 2 is outside the 2 choices"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": -1}", "gold -1 is outside"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0.5}", "\"gold\" must be an integer"},
      {"{\"context\": \"c\", \"choices\": [\"a\"], \"gold\": 0}", "at least two choices"},
      {"{\"context\": \"c\", \"choices\": [\"a\", \"\"], \"gold\": 0}", "choice 1 is empty"},
  };
  for (const Bad& b : cases) {
    const std::string p = write("bad.jsonl", good + "\n" + b.line + "\n" + good);
    const std::string msg = error_of([&] { read_choice_jsonl(p); });
    EXPECT_NE(msg.find(p + ":3: "), std::string::npos) << b.line << " -> " << msg;
    EXPECT_NE(msg.find(b.must_contain), std::string::npos) << b.line << " -> " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([&] { read_choice_jsonl(write("empty.jsonl", "\n\n")); }).find("holds no items"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_choice_jsonl((dir_ / "missing.jsonl").string()); }).find("cannot open"),
            std::string::npos);
}

TEST_F(ChoiceReaders, PiqaUsesTheHarnessPromptAndTheLabelsFile) {
  write("valid.jsonl",
        "{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"hit the lid\"}\n"
        "{\"goal\": \"Dry hair\", \"sol1\": \"use water\", \"sol2\": \"use a towel\"}\n");
  write("valid-labels.lst", "0\n1\n");
  for (const fs::path& p : {dir_, dir_ / "valid.jsonl"}) {
    ChoiceTask t = read_piqa(p.string());
    EXPECT_EQ(t.name, "piqa");
    ASSERT_EQ(t.items.size(), 2u);
    EXPECT_EQ(t.items[0].context, "Question: Open a jar\nAnswer:");
    EXPECT_EQ(t.items[0].choices, (std::vector<std::string>{"twist the lid", "hit the lid"}));
    EXPECT_EQ(t.items[0].gold, 0);
    EXPECT_EQ(t.items[1].gold, 1);
  }
}

TEST_F(ChoiceReaders, PiqaRefusesBadLabelsAndMisalignedFiles) {
  write("valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
  write("valid-labels.lst", "0\n2\n");
  EXPECT_NE(error_of([&] { read_piqa(dir_.string()); }).find("valid-labels.lst:2: a PIQA label must be 0 or 1"),
            std::string::npos);
  write("valid-labels.lst", "0\n1\n1\n");
  EXPECT_NE(error_of([&] { read_piqa(dir_.string()); }).find("has 2 items but"), std::string::npos);
  write("valid-labels.lst", "0\n");
  EXPECT_NE(error_of([&] { read_piqa(dir_.string()); }).find("valid.jsonl:2: item 2 has no label"), std::string::npos);
  write("valid-labels.lst", "0\n1\n");
  write("valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\"}\n");
  EXPECT_NE(error_of([&] { read_piqa(dir_.string()); }).find("valid.jsonl:2: missing field \"sol2\""),
            std::string::npos);
}

TEST_F(ChoiceReaders, ArcUsesTheHarnessPromptAndIsNamedAfterItsFolder) {
  const std::string p = write("arc_easy/test.jsonl",
                              "{\"id\": \"x\", \"question\": \"What melts ice?\", \"choices\": [\"heat\", \"cold\", "
                              "\"dark\"], \"gold\": 0}\n");
  ChoiceTask t = read_arc(p);
  EXPECT_EQ(t.name, "arc_easy");
  ASSERT_EQ(t.items.size(), 1u);
  EXPECT_EQ(t.items[0].context, "Question: What melts ice?\nAnswer:");
  EXPECT_EQ(t.items[0].choices.size(), 3u);
  write("arc_easy/test.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 5}\n");
  EXPECT_NE(error_of([&] { read_arc(p); }).find("test.jsonl:1: gold 5 is outside"), std::string::npos);
}

}  // namespace
}  // namespace latte
