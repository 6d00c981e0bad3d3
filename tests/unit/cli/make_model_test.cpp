// latte make-model: a random checkpoint with a real model's shapes that Latte loads and runs; its
// values depend on seed and tensor name only (a slice of the layers is a prefix of the whole).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/checkpoint/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/unit/latte_cli.h"

using namespace latte::test;

namespace latte {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("latte_make_model_" + std::to_string(::getpid()));
  TempDir() { fs::remove_all(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& s) const { return (path / s).string(); }
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), size_t(a.numel()) * dtype_size(a.dtype())) == 0;
}

TEST(MakeModelCli, WritesTheShapesOfThePresetSeededAndLoadable) {
  TempDir tmp;
  ASSERT_EQ(run_latte("make-model -q --preset smollm-135m --layers 2 --seed 7 --max-shard-gib 0.03 -o " + tmp / "two").code, 0);
  ASSERT_EQ(run_latte("make-model -q --preset smollm-135m --layers 1 --seed 7 -o " + tmp / "one").code, 0);
  ASSERT_EQ(run_latte("make-model -q --preset smollm-135m --layers 1 --seed 8 -o " + tmp / "other").code, 0);

  Checkpoint two = load_checkpoint(tmp / "two");
  EXPECT_EQ(two.config.n_layers, 2);
  EXPECT_EQ(two.config.dim, 576);
  EXPECT_EQ(two.config.n_heads, 9);
  EXPECT_EQ(two.config.n_kv_heads, 3);
  EXPECT_EQ(two.config.hidden_dim, 1536);
  EXPECT_EQ(two.config.vocab_size, 49152);
  EXPECT_TRUE(fs::exists(tmp / "two/model.safetensors.index.json"));  // 0.03 GiB shards: several files
  int shards = 0;
  for (const auto& f : fs::directory_iterator(tmp / "two")) shards += f.path().filename().string().find("-of-") != std::string::npos;
  EXPECT_GE(shards, 2);

  Checkpoint one = load_checkpoint(tmp / "one"), other = load_checkpoint(tmp / "other");
  for (const auto& [name, e] : one.tensors.entries()) {
    EXPECT_EQ(e.tensor.dtype(), DType::bf16) << name;
    EXPECT_TRUE(same_bytes(e.tensor, two.tensors.get(name))) << name << " differs between the 1- and 2-layer models";
    if (e.tensor.shape().size() == 2)
      EXPECT_FALSE(same_bytes(e.tensor, other.tensors.get(name))) << name << " is the same under another seed";
  }
  // Matrices: mean ~0, standard deviation 0.02; norms: 1.
  const Tensor q = one.tensors.get("model.layers.0.self_attn.q_proj.weight").to(DType::f32);
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < q.numel(); ++i) sum += q.f32()[i], sq += double(q.f32()[i]) * q.f32()[i];
  const double mean = sum / double(q.numel()), sd = std::sqrt(sq / double(q.numel()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 2e-4);
  EXPECT_NEAR(sd, 0.02, 2e-4);
  const Tensor norm = one.tensors.get("model.layers.0.input_layernorm.weight").to(DType::f32);
  for (int64_t i = 0; i < norm.numel(); ++i) ASSERT_EQ(norm.f32()[i], 1.0f);

  // The synthetic tokenizer encodes any text (byte pieces) and decodes it back; the model runs.
  ASSERT_TRUE(one.tokenizer);
  const std::string text = "Grüße, 7B!";
  const std::vector<int32_t> ids = one.tokenizer->encode(text, false);
  std::string back = one.tokenizer->decode(ids);
  if (back.starts_with(" ")) back.erase(0, 1);  // run.c's dummy prefix space
  EXPECT_EQ(back, text);
  EXPECT_GE(ids.size(), text.size());  // byte pieces: no merges among them
  CliRun gen = run_latte("generate --temperature 0 -n 16 --prompt hello -m " + tmp / "two");
  EXPECT_EQ(gen.code, 0) << gen.err;
  EXPECT_EQ(gen.out.rfind("hello", 0), 0u) << gen.out;
}

TEST(MakeModelCli, BadArgumentsGiveOneLine) {
  TempDir tmp;
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"make-model -o " + tmp / "x", "--preset"},
           {"make-model --preset llama2-7b --config c.json -o " + tmp / "x", "--preset"},
           {"make-model --preset llama2-9b -o " + tmp / "x", "llama2-9b"},
           {"make-model --preset smollm-135m --layers 31 -o " + tmp / "x", "--layers 31"},
           {"make-model --preset smollm-135m --dtype f16 -o " + tmp / "x", "dtype"},
       }) {
    CliRun r = run_latte(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(tmp / "x/config.json"));
}

}  // namespace
}  // namespace latte
