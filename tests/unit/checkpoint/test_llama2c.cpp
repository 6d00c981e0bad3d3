#include <gtest/gtest.h>

#include <limits>

#include "core/checkpoint/checkpoint.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

TEST(Llama2c, LoadsStories260K) {
  Checkpoint ck = load_llama2c(stories_path());
  const ModelConfig& c = ck.config;
  EXPECT_EQ(ck.format, "llama2c");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_layout, RopeLayout::interleaved);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.parameter_count(), 260032);
  EXPECT_EQ(c.kv_cache_elements_per_token(), 2 * 5 * 32);
  EXPECT_FALSE(ck.tensors.has("lm_head.weight"));
  EXPECT_EQ(ck.tensors.entries().size(), 1u + 5u * 9u + 1u);

  // Offsets from shared/data/README.md, read straight from the file.
  std::string bytes = read_file_bytes(stories_path());
  auto at = [&](size_t off) { float f; std::memcpy(&f, bytes.data() + off, 4); return f; };
  const Tensor& emb = ck.tensors.get("model.embed_tokens.weight", {512, 64});
  EXPECT_EQ(emb.f32()[0], at(28));
  EXPECT_EQ(emb.f32()[511 * 64 + 63], at(28 + 4 * (511 * 64 + 63)));
  // Layer 2, row 5, column 7 of wq: [5][64][64] at 132,380.
  const Tensor& wq2 = ck.tensors.get("model.layers.2.self_attn.q_proj.weight", {64, 64});
  EXPECT_EQ(wq2.f32()[5 * 64 + 7], at(132380 + 4 * (2 * 64 * 64 + 5 * 64 + 7)));
  const Tensor& wk4 = ck.tensors.get("model.layers.4.self_attn.k_proj.weight", {32, 64});
  EXPECT_EQ(wk4.f32()[31 * 64 + 63], at(214300 + 4 * (4 * 32 * 64 + 31 * 64 + 63)));
  const Tensor& down1 = ck.tensors.get("model.layers.1.mlp.down_proj.weight", {64, 172});
  EXPECT_EQ(down1.f32()[3 * 172 + 100], at(599580 + 4 * (1 * 64 * 172 + 3 * 172 + 100)));
  const Tensor& up3 = ck.tensors.get("model.layers.3.mlp.up_proj.weight", {172, 64});
  EXPECT_EQ(up3.f32()[0], at(819740 + 4 * (3 * 172 * 64)));
  const Tensor& gate0 = ck.tensors.get("model.layers.0.mlp.gate_proj.weight", {172, 64});
  EXPECT_EQ(gate0.f32()[1], at(379420 + 4));
  const Tensor& norm = ck.tensors.get("model.norm.weight", {64});
  EXPECT_EQ(norm.f32()[63], at(1039900 + 4 * 63));
  const Tensor& ffn_norm4 = ck.tensors.get("model.layers.4.post_attention_layernorm.weight", {64});
  EXPECT_EQ(ffn_norm4.f32()[10], at(378140 + 4 * (4 * 64 + 10)));
  // A view on the map, not a copy.
  EXPECT_EQ(static_cast<const char*>(emb.raw()) - static_cast<const char*>(wq2.raw()),
            28 - (132380 + 4 * 2 * 64 * 64));
}

}  // namespace
}  // namespace latte

namespace latte {
namespace {

TEST(Llama2c, TruncatedFileNamesFileSizesAndTensor) {
  ScratchDir dir;
  std::string bytes = read_file_bytes(stories_path());
  std::string path = dir / "cut.bin";
  // Cut inside wv (offsets 255,260 .. 296,220).
  write_file_bytes(path, bytes.substr(0, 260000));
  expect_error([&] { load_llama2c(path); }, ErrorCode::bad_file,
               {path, "truncated", "1056540", "260000", "wv"});
}

TEST(Llama2c, TrailingBytes) {
  ScratchDir dir;
  std::string path = dir / "long.bin";
  write_file_bytes(path, read_file_bytes(stories_path()) + std::string(12, '\0'));
  expect_error([&] { load_llama2c(path); }, ErrorCode::bad_file, {path, "12 trailing bytes", "1056540", "1056552"});
}

TEST(Llama2c, UntiedClassifierIsRead) {
  ScratchDir dir;
  std::string bytes = read_file_bytes(stories_path());
  int32_t neg = -512;
  std::memcpy(bytes.data() + 20, &neg, 4);
  std::string wcls(512 * 64 * 4, '\0');
  for (size_t i = 0; i < 512 * 64; ++i) {
    float f = float(i) * 0.25f;
    std::memcpy(wcls.data() + 4 * i, &f, 4);
  }
  std::string path = dir / "untied.bin";
  write_file_bytes(path, bytes + wcls);
  Checkpoint ck = load_llama2c(path);
  EXPECT_FALSE(ck.config.tied_embeddings);
  EXPECT_EQ(ck.config.vocab_size, 512);
  const Tensor& lm = ck.tensors.get("lm_head.weight", {512, 64});
  EXPECT_EQ(lm.f32()[1000], 250.0f);
  EXPECT_EQ(ck.config.parameter_count(), 260032 + 512 * 64);
  // Without the classifier the same header promises more bytes than there are.
  write_file_bytes(path, bytes);
  expect_error([&] { load_llama2c(path); }, ErrorCode::bad_file, {path, "truncated", "wcls"});
}

TEST(Llama2c, VersionedExportIsRejectedClearly) {
  ScratchDir dir;
  std::string path = dir / "v1.bin";
  std::string bytes(256, '\0');
  uint32_t magic = 0x616b3432;
  int32_t version = 1;
  std::memcpy(bytes.data(), &magic, 4);
  std::memcpy(bytes.data() + 4, &version, 4);
  write_file_bytes(path, bytes);
  expect_error([&] { load_llama2c(path); }, ErrorCode::unsupported, {path, "version-1", "ak42", "version 0"});
}

TEST(Llama2c, GarbageHeader) {
  ScratchDir dir;
  std::string path = dir / "junk.bin";
  write_file_bytes(path, std::string(100, 'x'));
  expect_error([&] { load_llama2c(path); }, ErrorCode::bad_file, {path});
  write_file_bytes(path, std::string(10, '\0'));
  expect_error([&] { load_llama2c(path); }, ErrorCode::bad_file, {path, "28"});
}

TEST(Llama2c, NanWeightIsReported) {
  ScratchDir dir;
  std::string bytes = read_file_bytes(stories_path());
  float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data() + 132380 + 4 * 10, &nan, 4);  // wq layer 0, element 10
  std::string path = dir / "nan.bin";
  write_file_bytes(path, bytes);
  expect_error([&] { load_llama2c(path); }, ErrorCode::numerics,
               {path, "model.layers.0.self_attn.q_proj.weight", "NaN", "element 10"});
  LoadOptions lax;
  lax.check_finite = false;
  EXPECT_NO_THROW(load_llama2c(path, lax));
}

TEST(Checkpoint, DispatchByPath) {
  Checkpoint ck = load_checkpoint(stories_path());
  EXPECT_EQ(ck.format, "llama2c");
  expect_error([] { load_checkpoint("/nonexistent/model.bin"); }, ErrorCode::io, {"/nonexistent/model.bin"});
}

}  // namespace
}  // namespace latte
