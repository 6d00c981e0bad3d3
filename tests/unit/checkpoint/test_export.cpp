#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

namespace fs = std::filesystem;

Tensor random_tensor(const Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = dist(rng);
  return Tensor::from_vector(v, shape);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor x = a.clone(), y = b.clone();
  return std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

TEST(RopePermute, RowMapping) {
  // Row r holds the value r, so the output says where each row came from.
  const int64_t hd = 8, heads = 2;
  std::vector<float> v;
  for (int r = 0; r < heads * hd; ++r)
    for (int c = 0; c < 3; ++c) v.push_back(float(r));
  Tensor w = Tensor::from_vector(v, {heads * hd, 3});
  Tensor rh = permute_rope_rows(w, hd, RopeLayout::interleaved, RopeLayout::rotate_half);
  const std::vector<float> want = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
  for (int r = 0; r < heads * hd; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(rh.f32()[r * 3 + c], want[size_t(r)]) << r;
  Tensor back = permute_rope_rows(rh, hd, RopeLayout::rotate_half, RopeLayout::interleaved);
  EXPECT_TRUE(same_bytes(back, w));
  EXPECT_TRUE(same_bytes(permute_rope_rows(w, hd, RopeLayout::rotate_half, RopeLayout::rotate_half), w));
}

TEST(RopePermute, RoundTripsAllDtypes) {
  Tensor w = random_tensor({3 * 64, 40}, 1);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Tensor x = w.to(dt);
    for (RopeLayout from : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
      RopeLayout to = from == RopeLayout::interleaved ? RopeLayout::rotate_half : RopeLayout::interleaved;
      Tensor p = permute_rope_rows(x, 64, from, to);
      EXPECT_EQ(p.dtype(), dt);
      EXPECT_FALSE(same_bytes(p, x));
      EXPECT_TRUE(same_bytes(permute_rope_rows(p, 64, to, from), x));
    }
  }
  expect_error([&] { permute_rope_rows(w, 7, RopeLayout::interleaved, RopeLayout::rotate_half); },
               ErrorCode::shape_mismatch, {"head"});
}

// RoPE on one head, in either pairing, as run.c and HF's rotate_half apply it.
std::vector<float> rope(std::vector<float> q, int64_t pos, RopeLayout layout) {
  const int64_t hd = int64_t(q.size()), half = hd / 2;
  for (int64_t j = 0; j < half; ++j) {
    const double a = double(pos) * std::pow(10000.0, -2.0 * double(j) / double(hd));
    const int64_t i0 = layout == RopeLayout::interleaved ? 2 * j : j;
    const int64_t i1 = layout == RopeLayout::interleaved ? 2 * j + 1 : j + half;
    const double x0 = q[size_t(i0)], x1 = q[size_t(i1)];
    q[size_t(i0)] = float(x0 * std::cos(a) - x1 * std::sin(a));
    q[size_t(i1)] = float(x0 * std::sin(a) + x1 * std::cos(a));
  }
  return q;
}

TEST(RopePermute, AttentionScoresAreUnchanged) {
  // The point of the permutation: q.k after RoPE is the same with (interleaved weights,
  // interleaved RoPE) and (permuted weights, rotate_half RoPE).
  const int64_t hd = 16, dim = 24;
  Tensor wq = random_tensor({hd, dim}, 2), wk = random_tensor({hd, dim}, 3), x = random_tensor({dim}, 4);
  Tensor wq2 = permute_rope_rows(wq, hd, RopeLayout::interleaved, RopeLayout::rotate_half);
  Tensor wk2 = permute_rope_rows(wk, hd, RopeLayout::interleaved, RopeLayout::rotate_half);
  auto matvec = [&](const Tensor& w) {
    std::vector<float> y(static_cast<size_t>(hd));
    for (int64_t r = 0; r < hd; ++r)
      for (int64_t c = 0; c < dim; ++c) y[size_t(r)] += w.f32()[r * dim + c] * x.f32()[c];
    return y;
  };
  auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
    return s;
  };
  const double s1 = dot(rope(matvec(wq), 5, RopeLayout::interleaved), rope(matvec(wk), 2, RopeLayout::interleaved));
  const double s2 = dot(rope(matvec(wq2), 5, RopeLayout::rotate_half), rope(matvec(wk2), 2, RopeLayout::rotate_half));
  EXPECT_NEAR(s1, s2, 1e-4 * (1 + std::fabs(s1)));
  // And the wrong pairing does change it.
  const double s3 = dot(rope(matvec(wq), 5, RopeLayout::rotate_half), rope(matvec(wk), 2, RopeLayout::rotate_half));
  EXPECT_GT(std::fabs(s1 - s3), 1e-3);
}

TEST(RopePermute, ConvertStore) {
  Checkpoint ck = load_llama2c(stories_path());
  ModelConfig c = ck.config;
  TensorStore t = ck.tensors;
  convert_rope_layout(c, t, RopeLayout::rotate_half);
  EXPECT_EQ(c.rope_layout, RopeLayout::rotate_half);
  EXPECT_FALSE(same_bytes(t.get("model.layers.2.self_attn.k_proj.weight"),
                          ck.tensors.get("model.layers.2.self_attn.k_proj.weight")));
  EXPECT_TRUE(same_bytes(t.get("model.layers.2.self_attn.v_proj.weight"),
                         ck.tensors.get("model.layers.2.self_attn.v_proj.weight")));
  EXPECT_EQ(t.file_of("model.layers.0.self_attn.q_proj.weight"), stories_path());
  convert_rope_layout(c, t, RopeLayout::interleaved);
  for (const auto& [name, e] : ck.tensors.entries()) EXPECT_TRUE(same_bytes(t.get(name), e.tensor)) << name;
}

TEST(Export, Llama2cToHfFolder) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  ExportOptions opts;
  opts.llama2c_tokenizer = stories_tokenizer_path();
  export_checkpoint(src, dir.str(), opts);
  auto cfg = nlohmann::json::parse(read_file_bytes(dir / "config.json"));
  EXPECT_FALSE(cfg.contains("latte_rope_layout"));  // plain HF rotate_half
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(read_file_bytes(dir / "tokenizer.bin"), read_file_bytes(stories_tokenizer_path()));

  Checkpoint back = load_safetensors_dir(dir.str());
  EXPECT_EQ(back.config.rope_layout, RopeLayout::rotate_half);
  ASSERT_NE(back.tokenizer, nullptr);
  EXPECT_EQ(back.tokenizer->vocab_size(), 512);
  convert_rope_layout(back.config, back.tensors, RopeLayout::interleaved);
  for (const auto& [name, e] : src.tensors.entries()) EXPECT_TRUE(same_bytes(back.tensors.get(name), e.tensor)) << name;
}

TEST(Export, KeepRopeLayoutShardedBf16) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  ExportOptions opts;
  opts.keep_rope_layout = true;
  opts.dtype = DType::bf16;
  opts.max_shard_bytes = 100000;
  export_checkpoint(src, dir.str(), opts);
  EXPECT_TRUE(file_exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(dir / "tokenizer.bin"));
  EXPECT_FALSE(file_exists(dir / "tokenizer.json"));
  Checkpoint back = load_safetensors_dir(dir.str());
  EXPECT_EQ(back.config.rope_layout, RopeLayout::interleaved);
  EXPECT_EQ(back.tokenizer, nullptr);
  for (const auto& [name, e] : src.tensors.entries())
    EXPECT_TRUE(same_bytes(back.tensors.get(name), e.tensor.to(DType::bf16))) << name;
}

TEST(Export, MissingTokenizerFile) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  ExportOptions opts;
  opts.llama2c_tokenizer = dir / "nope.bin";
  expect_error([&] { export_checkpoint(src, dir.str(), opts); }, ErrorCode::io, {"nope.bin"});
}

}  // namespace
}  // namespace latte
