// --device as a user meets it, the same on every subcommand that runs a model (generate,
// perplexity, compare, convert's 2-norm calibration, train): cuda without a usable GPU fails with
// one line naming cuda, auto falls back to the CPU and says why once, any other value is refused
// naming the flag.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/latte_cli.h"

using namespace latte::test;

namespace {

namespace fs = std::filesystem;

const std::string kModels = LATTE_MODELS_DIR;
const std::string kModel = kModels + "/stories260K/stories260K.bin";
const std::string kTok = kModels + "/stories260K/tok512.bin";
const std::string kText = kModels + "/stories260K/tinystories_valid_head.txt";

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

constexpr char kDeviceCliTestDir[] = "latte_device_cli";

class DeviceCliTest : public StoryShardSuite<kDeviceCliTestDir> {
 protected:

  // One command per subcommand that runs a model, small enough to finish in a second on the CPU.
  static std::vector<std::string> commands(const std::string& tag) {
    const std::string out = dir_ + "/" + tag;
    return {
        "generate --model " + kModel + " --temperature 0 --steps 16 --prompt 'The cat'",
        "perplexity --model " + kModel + " --text " + kText + " --max-chars 2000 -q",
        "compare " + kModel + " " + kModel + " --text " + kText + " --max-chars 2000",
        "convert --model " + kModel + " --out " + out + "-mla --rope-pairs 1 --d-kv 4 --calib " + dir_ +
            "/head.txt --calib-tokens 256 -q",
        "train --model " + kModel + " --data " + shard() + " --out " + out + "-run --seq 32 --steps 2 " +
            "--micro-batch 2 --save-every 0 --eval-every 0 --eval-batches 1 -q",
    };
  }
};

TEST_F(DeviceCliTest, CudaWithoutAGpuIsOneLineNamingCuda) {
  for (const std::string& cmd : commands("cuda")) {
    CliRun r = run_latte(cmd + " --device cuda");
    if (r.code == 0) GTEST_SKIP() << "this machine serves --device cuda";
    EXPECT_EQ(count_lines(r.err), 1) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("unsupported"), std::string::npos) << cmd << "\n" << r.err;
  }
  // Nothing was written by the refused convert and train.
  EXPECT_FALSE(fs::exists(dir_ + "/cuda-mla"));
  EXPECT_FALSE(fs::exists(dir_ + "/cuda-run"));
}

TEST_F(DeviceCliTest, AutoRunsOnTheCpuAndSaysWhyOnce) {
  const std::vector<std::string> cpu = commands("cpu"), autos = commands("auto");
  for (size_t i = 0; i < cpu.size(); ++i) {
    CliRun a = run_latte(autos[i] + " --device auto");
    if (a.err.find("using the CPU") == std::string::npos && a.code == 0) GTEST_SKIP() << "auto picked a GPU";
    ASSERT_EQ(a.code, 0) << autos[i] << "\n" << a.err;
    EXPECT_EQ(count_of(a.err, "latte: --device auto: "), 1u) << autos[i] << "\n" << a.err;
    EXPECT_NE(a.err.find("using the CPU"), std::string::npos) << autos[i] << "\n" << a.err;
    // The same result as --device cpu (generate's text, perplexity's and compare's figures).
    if (i < 3) {
      CliRun c = run_latte(cpu[i] + " --device cpu");
      ASSERT_EQ(c.code, 0) << cpu[i] << "\n" << c.err;
      EXPECT_EQ(count_of(c.err, "--device auto"), 0u) << c.err;
      auto strip_time = [](std::string s) {  // perplexity's line ends in seconds and tok/s
        const size_t at = s.find(" tokens, ");
        return at == std::string::npos ? s : s.substr(0, at);
      };
      EXPECT_EQ(strip_time(a.out), strip_time(c.out)) << autos[i];
    }
  }
  EXPECT_TRUE(fs::exists(dir_ + "/auto-mla/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ + "/auto-run/metrics.jsonl"));
}

TEST_F(DeviceCliTest, UnknownDeviceIsRefusedNamingTheFlag) {
  for (const std::string& cmd : commands("bogus")) {
    CliRun r = run_latte(cmd + " --device bogus");
    EXPECT_NE(r.code, 0) << cmd;
    EXPECT_EQ(count_lines(r.err), 1) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("--device"), std::string::npos) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("bogus"), std::string::npos) << cmd << "\n" << r.err;
  }
}

TEST_F(DeviceCliTest, HelpShowsTheSameDeviceFlagEverywhere) {
  for (std::string sub : {"generate", "perplexity", "compare", "convert", "train"}) {
    CliRun r = run_latte(sub + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--device"), std::string::npos) << sub << "\n" << r.out;
    EXPECT_NE(r.out.find("auto"), std::string::npos) << sub;
  }
}

}  // namespace
