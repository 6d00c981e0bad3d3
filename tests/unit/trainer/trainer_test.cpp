// The trainer on one rank: token shards, deterministic batches, AdamW against hand-computed
// steps, ZeRO-1 bookkeeping, and whole runs: the loss falls, a run stopped and resumed from its
// last checkpoint reproduces the uninterrupted run's losses exactly, a half-written checkpoint is
// ignored, and bad input is refused with one line.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "trainer/data/batch_sampler.h"
#include "trainer/loop/trainer.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/train_state/train_checkpoint.h"

namespace latte {
namespace {

namespace fs = std::filesystem;
const std::string kModels = LATTE_MODELS_DIR;
const std::string kModel = kModels + "/stories260K/stories260K.bin";
const std::string kTok = kModels + "/stories260K/tok512.bin";

std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("latte_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A shard of the first 60,000 characters of the shipped validation text (about 28,800 tokens).
std::string make_shard(const std::string& dir) {
  auto tok = load_tokenizer(kTok);
  std::string text = read_text_file(kModels + "/stories260K/tinystories_valid_head.txt").substr(0, 60000);
  std::string path = dir + "/data.bin";
  write_token_shard(path, tok->encode(text, false), tok->vocab_size(), tok->id());
  return path;
}

TEST(TokenShardTest, RoundTripAndBadFiles) {
  std::string dir = temp_dir("shard");
  std::vector<int32_t> ids{0, 5, 511, 42};
  write_token_shard(dir + "/a.bin", ids, 512, "llama2c:512");
  TokenShard s(dir + "/a.bin");
  EXPECT_EQ(s.size(), 4);
  EXPECT_EQ(s.header().tokenizer_id, "llama2c:512");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(s.at(i), ids[size_t(i)]);
  write_token_shard(dir + "/b.bin", {70000, 1}, 100000, "x");  // 4-byte ids
  EXPECT_EQ(TokenShard(dir + "/b.bin").at(0), 70000);
  EXPECT_THROW(write_token_shard(dir + "/c.bin", {512}, 512, "x"), Error);  // id outside the vocabulary
  std::string bytes = read_text_file(dir + "/a.bin");
  atomic_write_string(dir + "/trunc.bin", bytes.substr(0, bytes.size() - 1));
  try {
    TokenShard t(dir + "/trunc.bin");
    FAIL() << "a truncated shard was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  atomic_write_string(dir + "/text.bin", "hello, not a shard at all, just some text of some length......");
  EXPECT_THROW(TokenShard(dir + "/text.bin"), Error);
  fs::remove_all(dir);
}

TEST(BatchSamplerTest, DeterministicPerCoordinatesAndHeldOutStaysOut) {
  std::string dir = temp_dir("sampler");
  std::vector<int32_t> ids(10000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i % 500);
  write_token_shard(dir + "/s.bin", ids, 512, "t");
  TokenShard shard(dir + "/s.bin");
  BatchSampler a(shard, 16, 1000, 0, 2, 7), a2(shard, 16, 1000, 0, 2, 7), b(shard, 16, 1000, 1, 2, 7);
  Batch x = a.train_batch(3, 1, 4), y = a2.train_batch(3, 1, 4), z = b.train_batch(3, 1, 4), w = a.train_batch(4, 1, 4);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_NE(x.tokens, z.tokens);
  EXPECT_NE(x.tokens, w.tokens);
  for (size_t i = 0; i + 1 < size_t(16); ++i) EXPECT_EQ(x.targets[i], x.tokens[i + 1]);
  // Train windows of rank 1 stay inside [4500, 9000); held-out windows start at 9000.
  for (int64_t step = 0; step < 50; ++step) {
    Batch t = b.train_batch(step, 0, 8);
    for (int32_t v : t.tokens) EXPECT_LT(v, 500);
  }
  EXPECT_EQ(a.val_batches(4), (1000 - 1) / 16 / 4 + ((1000 - 1) / 16 % 4 ? 1 : 0));
  EXPECT_EQ(a.val_batch(0, 4).tokens[0], ids[9000]);
  EXPECT_THROW(BatchSampler(shard, 6000, 1000, 0, 2, 7), Error);  // a window longer than a rank's slice
  fs::remove_all(dir);
}

TEST(LrScheduleTest, WarmupThenCosine) {
  LrSchedule s{1.0, 0.1, 4, 14};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);
  EXPECT_NEAR(s.at(9), 0.55, 1e-12);  // half-way down the cosine
  EXPECT_DOUBLE_EQ(s.at(14), 0.1);
  EXPECT_DOUBLE_EQ(s.at(100), 0.1);
}

TEST(AdamWTest, FirstStepsMatchHandComputation) {
  // One weight w = 1 with gradient 0.5 each step; beta1 0.9, beta2 0.95, eps 1e-8, decay 0.1, lr 0.01.
  // Step 1: m = 0.05, v = 0.0125, mhat = 0.5, vhat = 0.25, update = 0.5/0.5 = 1 -> w = 1 - 0.01 - 0.001.
  SoloCommunicator solo;
  Tensor w = Tensor::from_vector({1.0f, 2.0f}, {2, 1}), g = Tensor::zeros({2, 1});
  AdamWSettings s;
  s.max_grad_norm = 0;
  AdamW opt({{"w", &w, &g, false, true, true}}, s, solo, solo);
  g.f32()[0] = 0.5f;
  g.f32()[1] = -1.0f;
  double norm = opt.reduce_and_clip();
  EXPECT_NEAR(norm, std::sqrt(0.25 + 1.0), 1e-6);
  opt.step(0.01);
  EXPECT_NEAR(w.f32()[0], 1.0 - 0.01 - 0.01 * 0.1 * 1.0, 1e-6);
  EXPECT_NEAR(w.f32()[1], 2.0 + 0.01 - 0.01 * 0.1 * 2.0, 1e-6);
  // Clipping scales the gradient to the max norm before the moments see it.
  Tensor w2 = Tensor::from_vector({0.0f}, {1, 1}), g2 = Tensor::from_vector({10.0f}, {1, 1});
  AdamWSettings c;
  c.max_grad_norm = 1.0;
  c.weight_decay = 0;
  AdamW clipped({{"w", &w2, &g2, false, true, true}}, c, solo, solo);
  EXPECT_NEAR(clipped.reduce_and_clip(), 10.0, 1e-5);
  clipped.step(0.1);
  EXPECT_NEAR(w2.f32()[0], -0.1, 1e-6);  // Adam's first step is lr * sign(g) whatever the scale
  // Frozen parameters do not move; NaN gradients are refused.
  Tensor w3 = Tensor::from_vector({3.0f}, {1}), g3 = Tensor::from_vector({1.0f}, {1});
  AdamW frozen({{"w", &w3, &g3, false, false, false}}, c, solo, solo);
  frozen.reduce_and_clip();
  frozen.step(0.1);
  EXPECT_EQ(w3.f32()[0], 3.0f);
  g3.f32()[0] = std::nanf("");
  AdamW nan_opt({{"w", &w3, &g3, false, true, false}}, c, solo, solo);
  EXPECT_THROW(nan_opt.reduce_and_clip(), Error);
}

std::vector<double> losses_of(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(read_text_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

TrainOptions small_run(const std::string& data, const std::string& out) {
  TrainOptions o;
  o.model_path = kModel;
  o.data_path = data;
  o.out_dir = out;
  o.tokenizer_path = kTok;
  o.steps = 12;
  o.micro_batch = 2;
  o.grad_accum = 2;
  o.seq = 64;
  o.lr = 2e-3;
  o.warmup = 2;
  o.eval_every = 6;
  o.eval_batches = 2;
  o.save_every = 4;
  o.val_tokens = 2000;
  o.progress = false;
  return o;
}

TEST(TrainLoopTest, StoppedAndResumedRunReproducesTheUninterruptedLosses) {
  std::string dir = temp_dir("resume");
  std::string data = make_shard(dir);
  SoloCommunicator solo;
  TrainOptions full = small_run(data, dir + "/full");
  TrainResult r = train(full, solo, solo, solo);
  EXPECT_EQ(r.steps_done, 12);
  std::vector<double> expected = losses_of(dir + "/full/metrics.jsonl");
  ASSERT_EQ(expected.size(), 12u);
  EXPECT_LT(expected.back(), expected.front()) << "training did not reduce the loss";
  EXPECT_TRUE(file_exists(dir + "/full/final/config.json"));
  EXPECT_TRUE(file_exists(dir + "/full/final/tokenizer.bin"));

  // Stop after 7 steps: the newest checkpoint is step 4; steps 5-7 are lost and redone.
  TrainOptions part = small_run(data, dir + "/part");
  part.stop_after = 7;
  train(part, solo, solo, solo);
  EXPECT_EQ(*latest_checkpoint(dir + "/part"), dir + "/part/checkpoints/step-00000004");
  // A half-written checkpoint (a save killed before its commit) must be ignored.
  fs::create_directories(dir + "/part/checkpoints/step-00000008.partial");
  atomic_write_string(dir + "/part/checkpoints/step-00000008.partial/model-tp0.safetensors", "garbage");
  TrainOptions resumed = small_run(data, dir + "/part");
  resumed.resume = true;
  train(resumed, solo, solo, solo);
  std::vector<double> got = losses_of(dir + "/part/metrics.jsonl");
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "step " << i + 1;
  fs::remove_all(dir);
}

TEST(TrainLoopTest, ZeroOneOnOneRankMatchesUnsharded) {
  std::string dir = temp_dir("zero");
  std::string data = make_shard(dir);
  SoloCommunicator solo;
  TrainOptions a = small_run(data, dir + "/a"), b = small_run(data, dir + "/b");
  a.steps = b.steps = 4;
  b.optim.zero1 = true;
  train(a, solo, solo, solo);
  train(b, solo, solo, solo);
  EXPECT_EQ(losses_of(dir + "/a/metrics.jsonl"), losses_of(dir + "/b/metrics.jsonl"));
  fs::remove_all(dir);
}

TEST(TrainLoopTest, BadInputIsRefused) {
  std::string dir = temp_dir("bad");
  std::string data = make_shard(dir);
  SoloCommunicator solo;
  auto expect_error = [&](TrainOptions o, const std::string& needle) {
    try {
      train(o, solo, solo, solo);
      ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TrainOptions missing = small_run(dir + "/nope.bin", dir + "/o1");
  expect_error(missing, "nope.bin");
  std::vector<int32_t> big(3000, 700);
  write_token_shard(dir + "/big.bin", big, 1000, "other:1000");
  expect_error(small_run(dir + "/big.bin", dir + "/o2"), "vocabulary");
  TrainOptions long_seq = small_run(data, dir + "/o3");
  long_seq.seq = 4096;
  expect_error(long_seq, "context");
  // Resume from a checkpoint of another model: train the original, then resume with a different
  // --model (an export with different rows) in the same folder.
  TrainOptions first = small_run(data, dir + "/o4");
  first.steps = 4;
  train(first, solo, solo, solo);
  ExportOptions eo;
  eo.llama2c_tokenizer = kTok;
  export_checkpoint(load_checkpoint(kModel), dir + "/hf", eo);  // same shapes, HF rope layout: another config
  TrainOptions other = first;
  other.model_path = dir + "/hf";
  other.resume = true;
  expect_error(other, "another model");
  TrainOptions reseeded = first;
  reseeded.resume = true;
  reseeded.seed = 99;
  expect_error(reseeded, "seed");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace latte

namespace latte {
namespace {

// Distillation from a teacher identical to the student: KL is 0 before the first update and
// positive once the student has moved; the run still lowers its loss.
TEST(TrainLoopTest, DistillationFromItselfStartsAtZeroKl) {
  std::string dir = temp_dir("distill");
  std::string data = make_shard(dir);
  SoloCommunicator solo;
  TrainOptions o = small_run(data, dir + "/run");
  o.steps = 3;
  o.grad_accum = 1;
  o.teacher_path = kModel;
  o.distill_weight = 1.0;
  train(o, solo, solo, solo);
  std::vector<double> kl;
  std::istringstream in(read_text_file(dir + "/run/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("distill_kl")) kl.push_back(j["distill_kl"].get<double>());
  }
  ASSERT_EQ(kl.size(), 3u);
  EXPECT_LT(std::abs(kl[0]), 1e-6);
  EXPECT_GT(kl[2], 1e-6);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace latte

namespace latte {
namespace {

// Rank 0 of a group of `size` ranks whose collectives must never run: a layout the trainer refuses
// is refused before the first collective, so no rank of a real job can be left waiting in one.
class NoCollectives final : public Communicator {
 public:
  explicit NoCollectives(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  std::string name() const override { return "no-collectives"; }
  void all_reduce(Tensor&, ReduceOp) override { ran("all_reduce"); }
  void all_gather(Tensor&, const Tensor&) override { ran("all_gather"); }
  void reduce_scatter(Tensor&, const Tensor&) override { ran("reduce_scatter"); }
  void broadcast(Tensor&, int) override { ran("broadcast"); }
  void broadcast_ints(std::span<int32_t>, int) override { ran("broadcast_ints"); }
  void barrier() override { ran("barrier"); }
  void send(const Tensor&, int, int) override { ran("send"); }
  void recv(Tensor&, int, int) override { ran("recv"); }

 private:
  [[noreturn]] static void ran(const char* what) {
    fail(ErrorCode::internal, "a collective (", what, ") ran before the layout was refused");
  }
  int size_;
};

// A checkpoint folder holding only a config.json: a run that reads any weight fails on it.
std::string config_only_model(const std::string& dir, int heads, int kv_heads, int dim, int ffn, int layers,
                              int vocab) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{\"model_type\": \"llama\", \"hidden_size\": " << dim
                                      << ", \"intermediate_size\": " << ffn << ", \"num_hidden_layers\": " << layers
                                      << ", \"num_attention_heads\": " << heads << ", \"num_key_value_heads\": "
                                      << kv_heads << ", \"vocab_size\": " << vocab
                                      << ", \"max_position_embeddings\": 4096, \"tie_word_embeddings\": false}";
  return dir;
}

TEST(TrainLoopTest, UnusableLayoutOrMemoryIsRefusedBeforeLoading) {
  std::string dir = temp_dir("layout");
  std::string data = make_shard(dir);
  int n = 0;
  auto expect_refused = [&](TrainOptions o, int tp_size, int dp_size, const std::vector<std::string>& needles) {
    o.out_dir = dir + "/out" + std::to_string(n++);
    NoCollectives world(tp_size * dp_size), tp(tp_size), dp(dp_size);
    SoloCommunicator solo;
    Communicator& w = tp_size * dp_size == 1 ? static_cast<Communicator&>(solo) : world;
    Communicator& t = tp_size == 1 ? static_cast<Communicator&>(solo) : tp;
    Communicator& d = dp_size == 1 ? static_cast<Communicator&>(solo) : dp;
    try {
      train(o, w, t, d);
      ADD_FAILURE() << "TP " << tp_size << " x DP " << dp_size << " of " << o.model_path << " was trained";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(e.code(), ErrorCode::internal) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      for (const std::string& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
    EXPECT_FALSE(fs::exists(o.out_dir)) << "a refused run wrote " << o.out_dir;
  };
  const TrainOptions base = small_run(data, "");
  // stories260K: 8 heads, 4 KV heads, MLP 172, vocabulary 512.
  expect_refused(base, 3, 1, {"cannot train " + kModel, "--tp 3 does not divide n_heads (8)"});
  expect_refused(base, 8, 1, {"--tp 8 does not divide hidden_dim (172)"});
  // 8 heads over 2 KV heads: TP 4 splits every tensor, but two ranks would share each KV head,
  // which backward cannot train. Refused from config.json alone (the folder has no weights).
  TrainOptions gqa = base;
  gqa.model_path = config_only_model(dir + "/gqa", 8, 2, 64, 256, 2, 512);
  expect_refused(gqa, 4, 1, {"--tp 4 exceeds n_kv_heads (2)"});
  // --max-memory: the f32 plan of stories260K (7.35 MiB per rank at micro-batch 2 x 64) against 1 MiB.
  TrainOptions small = base;
  small.max_memory = int64_t(1) << 20;
  expect_refused(small, 1, 1,
                 {"cannot train " + kModel + ": planned ", " per rank exceeds --max-memory 1.00 MiB (1,048,576 bytes)",
                  "for TP 1, DP 1, --zero1 off, --recompute off, --micro-batch 2, --seq 64", "; try "});
  // Llama-2-7B's shape in f32 (16 B/param of model state, 108 GB) against 24 GiB, from its config
  // alone: nothing is loaded, or the weightless folder would fail differently.
  TrainOptions big = base;
  big.model_path = config_only_model(dir + "/7b", 32, 32, 4096, 11008, 32, 32000);
  big.max_memory = int64_t(24) << 30;
  big.micro_batch = 1;
  big.seq = 4096;
  expect_refused(big, 1, 1, {"exceeds --max-memory 24.00 GiB", "--micro-batch 1, --seq 4096", "try a larger --tp"});
  fs::remove_all(dir);
}

TEST(TrainLoopTest, RunWithinMaxMemoryTrains) {
  std::string dir = temp_dir("within");
  std::string data = make_shard(dir);
  SoloCommunicator solo;
  TrainOptions o = small_run(data, dir + "/run");
  o.steps = 2;
  o.max_memory = int64_t(1) << 30;
  EXPECT_EQ(train(o, solo, solo, solo).steps_done, 2);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace latte
