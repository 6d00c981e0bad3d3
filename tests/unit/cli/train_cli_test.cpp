// `latte train` as a user meets it: bad inputs exit non-zero with one line on stderr naming the
// problem (a missing shard, a shard of another vocabulary or tokenizer, --tp that does not divide
// the ranks, --resume from a checkpoint of another model or another --seed, --seq over the context,
// a layout planned over --max-memory).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/unit/latte_cli.h"

using namespace latte::test;

namespace {

namespace fs = std::filesystem;

const std::string kModels = LATTE_MODELS_DIR;
const std::string kTestData = LATTE_TEST_DATA_DIR;
const std::string kModel = kModels + "/stories260K/stories260K.bin";
const std::string kTok = kModels + "/stories260K/tok512.bin";




// A token shard written byte by byte in the documented layout (trainer/data/token_shard.h).
void write_shard(const std::string& path, uint64_t vocab, const std::string& tokenizer_id, uint16_t token, uint64_t count) {
  std::string h(64, '\0');
  std::memcpy(h.data(), "LATTETOK", 8);
  const uint32_t version = 1, token_bytes = 2;
  std::memcpy(h.data() + 8, &version, 4);
  std::memcpy(h.data() + 12, &token_bytes, 4);
  std::memcpy(h.data() + 16, &vocab, 8);
  std::memcpy(h.data() + 24, &count, 8);
  std::memcpy(h.data() + 32, tokenizer_id.data(), std::min<size_t>(tokenizer_id.size(), 32));
  std::ofstream f(path, std::ios::binary);
  f << h;
  for (uint64_t i = 0; i < count; ++i) f.write(reinterpret_cast<const char*>(&token), 2);
}

constexpr char kTrainCliTestDir[] = "latte_train_cli";

class TrainCliTest : public StoryShardSuite<kTrainCliTestDir> {
 protected:
  static std::string train(const std::string& model, const std::string& data, const std::string& out,
                           const std::string& seq = "64") {
    return "train --model " + model + " --data " + data + " --out " + out + " --seq " + seq +
           " --steps 4 --micro-batch 2 --save-every 2 --eval-every 0 --eval-batches 1 -q";
  }
};

TEST_F(TrainCliTest, MissingShard) {
  expect_one_line_error(train(kModel, dir_ + "/nope.bin", dir_ + "/o1"), "token shard not found: " + dir_ + "/nope.bin");
}

TEST_F(TrainCliTest, ShardOfAnotherVocabulary) {
  // A larger vocabulary than the model's 512.
  write_shard(dir_ + "/v1000.bin", 1000, "other:1000", 700, 3000);
  expect_one_line_error(train(kModel, dir_ + "/v1000.bin", dir_ + "/o2"), "vocabulary of 1000 tokens");
  // A vocabulary that fits in 512 ids but from another tokenizer, made by latte tokenize itself.
  const std::string other_tok = kTestData + "/tokenizers/bytelevel_gpt2.json";
  CliRun t = run_latte("tokenize --tokenizer " + other_tok + " " + dir_ + "/head.txt -o " + dir_ + "/gpt2.bin");
  ASSERT_EQ(t.code, 0) << t.err;
  CliRun r = run_latte(train(kModel, dir_ + "/gpt2.bin", dir_ + "/o3"));
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(dir_ + "/gpt2.bin was made with"), std::string::npos) << r.err;
  // Not a shard at all.
  std::ofstream(dir_ + "/text.bin") << "Once upon a time";
  expect_one_line_error(train(kModel, dir_ + "/text.bin", dir_ + "/o4"), dir_ + "/text.bin");
}

TEST_F(TrainCliTest, NanWeightIsRefusedNamingTheTensor) {
  // An exported stories260K whose down_proj of layer 1 holds a NaN, patched in the file's bytes at
  // the tensor's offset from the safetensors header. Every rank checks only its own slices, so
  // the one rank here must find it.
  const std::string model = dir_ + "/nan-model";
  ASSERT_EQ(run_latte("export --model " + kModel + " --out " + model).code, 0);
  const std::string file = model + "/model.safetensors";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  f.read(header.data(), std::streamsize(header_len));
  const std::string name = "model.layers.1.mlp.down_proj.weight";
  const size_t at = header.find("\"" + name + "\"");
  ASSERT_NE(at, std::string::npos) << header;
  const size_t offsets = header.find("data_offsets", at);
  const uint64_t begin = std::stoull(header.substr(header.find('[', offsets) + 1));
  const float nan = std::nanf("");
  f.seekp(std::streamoff(8 + header_len + begin + 40));
  f.write(reinterpret_cast<const char*>(&nan), 4);
  f.close();
  expect_one_line_error(train(model, shard(), dir_ + "/o-nan"), name);
}

TEST_F(TrainCliTest, TpThatDoesNotDivideTheRanks) {
  // Started without mpirun the job has one rank; --tp 2 cannot divide it.
  CliRun r = run_latte(train(kModel, shard(), dir_ + "/o5") + " --tp 2");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  const bool mpi = r.err.find("--tp 2 does not divide the 1 MPI ranks") != std::string::npos;
  const bool solo = r.err.find("--tp 2 needs a build with MPI") != std::string::npos;
  EXPECT_TRUE(mpi || solo) << r.err;
  EXPECT_FALSE(fs::exists(dir_ + "/o5/checkpoints"));
}

TEST_F(TrainCliTest, MaxMemoryRefusesBeforeAllocating) {
  // stories260K in f32 plans 7.35 MiB per rank (micro-batch 2 x 64): over 1 MiB, refused before the model is loaded,
  // with one line naming the plan, the limit and the layout, and nothing written to --out.
  const std::string out = dir_ + "/o-mem";
  CliRun r = run_latte(train(kModel, shard(), out) + " --max-memory 1MiB");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  for (const std::string& part :
       {std::string("cannot train ") + kModel + ": planned ",
        std::string(" per rank exceeds --max-memory 1.00 MiB (1,048,576 bytes) for TP 1, DP 1, --zero1 off, "
                    "--recompute off, --micro-batch 2, --seq 64 (weights "),
        std::string("; try ")})
    EXPECT_NE(r.err.find(part), std::string::npos) << "missing \"" << part << "\" in " << r.err;
  EXPECT_FALSE(fs::exists(out)) << "the refused run created " << out;

  // latte plan, for the same layout in the trainer's f32, prints its table with the layout marked and
  // fails with the same words.
  CliRun p = run_latte("plan --model " + kModel +
                       " --gpus 1 --seq 64 --micro-batch 2 --dtype f32 --grad-dtype f32 --max-memory 1MiB");
  EXPECT_EQ(p.code, 1) << p.err;
  EXPECT_NE(p.out.find("OVER LIMIT"), std::string::npos) << p.out;
  const size_t at = r.err.find("planned ");
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_NE(p.err.find(r.err.substr(at)), std::string::npos) << "train: " << r.err << "plan: " << p.err;
  EXPECT_EQ(count_lines(p.err), 1) << p.err;

  // A bare number is GiB: half a GiB is plenty, and the run trains.
  CliRun ok = run_latte(train(kModel, shard(), dir_ + "/o-mem-ok") + " --max-memory 0.5");
  EXPECT_EQ(ok.code, 0) << ok.err;
  CliRun plan_ok = run_latte("plan --model " + kModel + " --gpus 1 --seq 64 --dtype f32 --max-memory 0.5");
  EXPECT_EQ(plan_ok.code, 0) << plan_ok.err;
  EXPECT_NE(plan_ok.out.find("  FITS  "), std::string::npos) << plan_ok.out;
  EXPECT_EQ(plan_ok.out.find("refused:"), std::string::npos) << plan_ok.out;

  // A size that does not parse fails before anything starts.
  expect_one_line_error(train(kModel, shard(), dir_ + "/o-mem-bad") + " --max-memory 12XB", "bad size '12XB'");
  EXPECT_FALSE(fs::exists(dir_ + "/o-mem-bad"));
  const CliRun help = run_latte("train --help");
  EXPECT_NE(help.out.find("--max-memory"), std::string::npos);
  EXPECT_NE(help.out.find("A bare number is GiB"), std::string::npos) << help.out;
}

TEST_F(TrainCliTest, ResumeFromAnotherModelOrSeedOrBadSeq) {
  const std::string out = dir_ + "/o6";
  CliRun r = run_latte(train(kModel, shard(), out));
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(fs::exists(out + "/checkpoints/step-00000004/state.json"));
  // The same weights exported to a Hugging Face folder (rotate-half q/k rows): another model.
  r = run_latte("export --model " + kModel + " --tokenizer " + kTok + " --out " + dir_ + "/hf");
  ASSERT_EQ(r.code, 0) << r.err;
  expect_one_line_error(train(dir_ + "/hf", shard(), out) + " --resume", "it is a checkpoint of another model");
  expect_one_line_error(train(kModel, shard(), out) + " --resume --seed 99", "it used --seed 1234, this run --seed 99");
  expect_one_line_error(train(kModel, shard(), dir_ + "/o7", "4096"), "exceeds the model context");
  // The refused runs left the checkpoint as it was.
  r = run_latte(train(kModel, shard(), out) + " --resume");
  EXPECT_EQ(r.code, 0) << r.err;
}

}  // namespace
