// The same model through different files gives the same logits: llama2.c .bin vs its safetensors
// export (bit-identical when the export keeps the interleaved rows; within f32 rounding after the
// permutation to HF's rotate_half, which only reorders the terms of each q.k dot product).
// And SmolLM2-135M-Instruct imported from GGUF answers a chat prompt in sensible English.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "inference/engine/generate.h"
#include "inference/engine/loaded_model.h"

namespace latte {
namespace {

const std::string kModel = std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin";
const std::string kTokenizer = std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin";

std::vector<float> logits_of(const std::string& path) {
  LoadedModel m = load_model({path, kTokenizer, nullptr, true});
  std::vector<int32_t> tokens = m.tokenizer->encode("One day, Tom found a shiny stone by the river.", true);
  KvCache cache = KvCache::create(m.model->config(), 1, int64_t(tokens.size()));
  return m.model->forward(tokens, 1, cache, LogitsFor::all_positions).to_vector();
}

std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("latte_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

TEST(CheckpointEquivalenceTest, SafetensorsExportKeepingRopeRowsIsBitIdentical) {
  std::string dir = temp_dir("keep");
  ExportOptions eo;
  eo.keep_rope_layout = true;
  eo.llama2c_tokenizer = kTokenizer;
  export_checkpoint(load_checkpoint(kModel), dir, eo);
  std::vector<float> a = logits_of(kModel), b = logits_of(dir);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  std::filesystem::remove_all(dir);
}

TEST(CheckpointEquivalenceTest, HfLayoutExportMatchesWithinRounding) {
  std::string dir = temp_dir("hf");
  ExportOptions eo;
  eo.llama2c_tokenizer = kTokenizer;
  export_checkpoint(load_checkpoint(kModel), dir, eo);
  Checkpoint hf = load_checkpoint(dir);
  EXPECT_EQ(hf.config.rope_layout, RopeLayout::rotate_half);
  std::vector<float> a = logits_of(kModel), b = logits_of(dir);
  ASSERT_EQ(a.size(), b.size());
  double max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) max_abs = std::max(max_abs, double(std::abs(a[i] - b[i])));
  EXPECT_LT(max_abs, 1e-4) << "logits are O(10); f32 reordering gives ~1e-6 relative";
  std::filesystem::remove_all(dir);
}

TEST(CheckpointEquivalenceTest, Bf16ExportStaysClose) {
  std::string dir = temp_dir("bf16");
  ExportOptions eo;
  eo.keep_rope_layout = true;
  eo.dtype = DType::bf16;
  eo.llama2c_tokenizer = kTokenizer;
  export_checkpoint(load_checkpoint(kModel), dir, eo);
  std::vector<float> a = logits_of(kModel), b = logits_of(dir);
  double max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) max_abs = std::max(max_abs, double(std::abs(a[i] - b[i])));
  EXPECT_GT(max_abs, 0.0) << "bf16 storage must round something";
  EXPECT_LT(max_abs, 0.5);
  std::filesystem::remove_all(dir);
}

TEST(CheckpointEquivalenceTest, F16ExportLoadsAndStaysClose) {
  std::string dir = temp_dir("f16");
  ExportOptions eo;
  eo.keep_rope_layout = true;
  eo.dtype = DType::f16;
  eo.llama2c_tokenizer = kTokenizer;
  export_checkpoint(load_checkpoint(kModel), dir, eo);
  EXPECT_EQ(load_checkpoint(dir).tensors.get("model.norm.weight").dtype(), DType::f16);
  std::vector<float> a = logits_of(kModel), b = logits_of(dir);
  double max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) max_abs = std::max(max_abs, double(std::abs(a[i] - b[i])));
  EXPECT_GT(max_abs, 0.0) << "f16 storage must round something";
  EXPECT_LT(max_abs, 0.05);  // f16 keeps 11 significant bits, 8x finer than bf16
  std::filesystem::remove_all(dir);
}

TEST(SmolLM2Test, GgufChatAnswersInEnglish) {
  std::string gguf = std::string(LATTE_MODELS_DIR) + "/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!file_exists(gguf)) GTEST_SKIP() << gguf << " not present: run launch/get-smollm2";
  LoadedModel m = load_model({gguf, "", nullptr, true});
  GenerateParams p;
  p.prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
  p.steps = 60;
  p.sampling.temperature = 0;
  std::string out;
  GenerateResult r = generate(*m.model, *m.tokenizer, p, [&](const std::string& s) { out += s; });
  std::string answer = out.substr(out.find("assistant") + 9);
  EXPECT_NE(answer.find("Paris"), std::string::npos) << answer;
}

}  // namespace
}  // namespace latte
