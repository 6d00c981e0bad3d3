// The planner against the trainer's measured peak memory: SmolLM2-135M trained for 2 steps in f32
// (batch 2 x 128 tokens) must peak, as the kernel measures it (the child's maximum resident set),
// within 10 % of `latte plan`'s total for the same layout, with and without --zero1. The run stops
// before its final save, whose merge of the shards is a separate, later peak.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

extern char** environ;

namespace {

const std::string kLatte = std::string(LATTE_BINARY_DIR) + "/bin/latte";
const std::string kSmol = std::string(LATTE_MODELS_DIR) + "/smollm2-135m-hf";

int run(const std::vector<std::string>& args, long* max_rss_kb) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  if (max_rss_kb) *max_rss_kb = ru.ru_maxrss;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// Trains for 2 steps (batch 2 x 128) with `flags` added to latte train and latte plan, and holds
// the child's peak resident set to the plan's total.
void expect_peak_near_plan(const std::string& flags) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's redzones, shadow memory and freed-memory quarantine add to every allocation, so the
  // resident set no longer measures what the planner counts (seen: 1.22x the plan).
  GTEST_SKIP() << "an AddressSanitizer build's peak memory is not the trainer's; run in a normal build";
#endif
  if (!std::filesystem::exists(kSmol + "/config.json")) GTEST_SKIP() << kSmol << " not present: run launch/get-smollm2";
  const std::string dir = (std::filesystem::temp_directory_path() / ("latte_mem_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  ASSERT_EQ(run({kLatte, "tokenize", "--model", kSmol, std::string(LATTE_MODELS_DIR) + "/stories260K/tinystories_valid_head.txt",
                 "-o", dir + "/data.bin"},
                nullptr),
            0);
  std::vector<std::string> train = {kLatte, "train", "--model", kSmol, "--data", dir + "/data.bin", "--out", dir + "/run",
                                    "--steps", "4", "--micro-batch", "2", "--seq", "128", "--eval-every", "0",
                                    "--eval-batches", "1", "--save-every", "0", "--stop-after", "2", "-q"};
  if (!flags.empty()) train.push_back(flags);
  long rss_kb = 0;
  ASSERT_EQ(run(train, &rss_kb), 0);
  auto plan = nlohmann::json::parse(capture(kLatte + " plan --model " + kSmol +
                                            " --gpus 1 --gpu-mem 80GiB --seq 128 --micro-batch 2 --dtype f32 --json " +
                                            flags));
  const double planned = plan["plans"][0]["bytes"]["total"].get<double>();
  const double measured = double(rss_kb) * 1024.0;
  EXPECT_NEAR(measured / planned, 1.0, 0.10) << "measured peak " << measured / (1 << 20) << " MiB, planned "
                                              << planned / (1 << 20) << " MiB" << (flags.empty() ? "" : " with ")
                                              << flags;
  // The run's own record of its peak (metrics.jsonl, every rank's VmHWM after each step) agrees
  // with the kernel's account of the child; the last step's is the run's peak before the final save.
  std::ifstream metrics(dir + "/run/metrics.jsonl");
  std::string line, last_step;
  while (std::getline(metrics, line))
    if (line.find("\"loss\"") != std::string::npos) last_step = line;
  const auto peaks = nlohmann::json::parse(last_step).at("peak_rss_mib");
  ASSERT_EQ(peaks.size(), 1u) << last_step;
  EXPECT_NEAR(peaks[0].get<double>() * 1048576.0 / measured, 1.0, 0.02) << last_step;
  std::filesystem::remove_all(dir);
}

TEST(TrainMemoryTest, MeasuredPeakAgreesWithThePlan) { expect_peak_near_plan(""); }

// ZeRO-1 on one rank still runs AdamW's sharded path: the owned chunk's reduced gradient (the whole
// model here, 4 B/param) is kept, and the step allocates a flat gradient copy, then an all-gather
// buffer (4 B/param each, one at a time). Without them the plan was 2 x 4 B/param (about 1 GiB,
// some 40 %) short of the measured peak.
TEST(TrainMemoryTest, MeasuredPeakAgreesWithThePlanUnderZero1) { expect_peak_near_plan("--zero1"); }

}  // namespace
