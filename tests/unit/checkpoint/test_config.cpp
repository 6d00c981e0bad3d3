#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/model/config.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

ModelConfig smollm_like() {
  ModelConfig c;
  c.dim = 576;
  c.hidden_dim = 1536;
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  c.max_seq_len = 8192;
  c.rope_theta = 100000.0f;
  c.norm_eps = 1e-5f;
  c.tied_embeddings = true;
  c.bos_id = 1;
  c.eos_id = 2;
  return c;
}

TEST(Config, JsonRoundTrip) {
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
    ModelConfig c = smollm_like();
    c.rope_layout = layout;
    c.tied_embeddings = layout == RopeLayout::interleaved;
    std::string text = config_to_json_text(c);
    auto j = nlohmann::json::parse(text);
    EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(j["model_type"], "llama");
    EXPECT_EQ(j["hidden_size"], 576);
    EXPECT_EQ(j["num_key_value_heads"], 3);
    EXPECT_EQ(j.contains("latte_rope_layout"), layout == RopeLayout::interleaved);
    EXPECT_NE(text.find("\"rms_norm_eps\": 1e-05"), std::string::npos) << text;
    ModelConfig r = config_from_json_text(text, "mem");
    EXPECT_EQ(r.dim, c.dim);
    EXPECT_EQ(r.hidden_dim, c.hidden_dim);
    EXPECT_EQ(r.n_layers, c.n_layers);
    EXPECT_EQ(r.n_heads, c.n_heads);
    EXPECT_EQ(r.n_kv_heads, c.n_kv_heads);
    EXPECT_EQ(r.head_dim, c.head_dim);
    EXPECT_EQ(r.vocab_size, c.vocab_size);
    EXPECT_EQ(r.max_seq_len, c.max_seq_len);
    EXPECT_EQ(r.rope_theta, c.rope_theta);
    EXPECT_EQ(r.norm_eps, c.norm_eps);
    EXPECT_EQ(r.rope_layout, c.rope_layout);
    EXPECT_EQ(r.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(r.bos_id, c.bos_id);
    EXPECT_EQ(r.eos_id, c.eos_id);
  }
}

TEST(Config, HfDefaults) {
  // A real-world shape: no head_dim, no num_key_value_heads, eos as a list.
  const char* text = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": [2, 3], "rope_scaling": null,
    "torch_dtype": "bfloat16"})";
  ModelConfig c = config_from_json_text(text, "cfg.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(c.rope_layout, RopeLayout::rotate_half);
}

TEST(Config, Errors) {
  expect_error([] { config_from_json_text("{not json", "a/config.json"); }, ErrorCode::bad_file,
               {"a/config.json", "JSON"});
  expect_error([] { config_from_json_text(R"({"hidden_size": 64})", "a/config.json"); }, ErrorCode::bad_file,
               {"a/config.json", "intermediate_size"});
  expect_error([] { config_from_json_text(R"({"hidden_size": "64"})", "a/config.json"); }, ErrorCode::bad_file,
               {"a/config.json", "hidden_size"});
  ModelConfig c = smollm_like();
  c.n_kv_heads = 4;
  expect_error([&] { c.validate("m.gguf"); }, ErrorCode::invalid_argument, {"m.gguf", "n_heads", "n_kv_heads"});
  c = smollm_like();
  c.head_dim = 7;
  expect_error([&] { c.validate("m.gguf"); }, ErrorCode::invalid_argument, {"m.gguf", "head_dim"});
  c = smollm_like();
  c.vocab_size = 0;
  expect_error([&] { c.validate("m.gguf"); }, ErrorCode::invalid_argument, {"m.gguf", "vocab_size"});
  c = smollm_like();
  c.eos_id = 49152;
  expect_error([&] { c.validate("m.gguf"); }, ErrorCode::invalid_argument, {"m.gguf", "eos_id"});
  c = smollm_like();
  c.norm_eps = 0;
  expect_error([&] { c.validate("m.gguf"); }, ErrorCode::invalid_argument, {"m.gguf", "norm_eps"});
  expect_error([] { config_from_json_text(R"({"model_type": "llama", "rope_scaling": {"type": "llama3"}})", "c.json"); },
               ErrorCode::unsupported, {"c.json", "rope_scaling"});
}

TEST(Config, Counts) {
  ModelConfig c = smollm_like();
  // SmolLM2-135M: 134,515,008 parameters with the embedding counted once.
  EXPECT_EQ(c.parameter_count(), 134515008);
  EXPECT_EQ(c.kv_cache_elements_per_token(), 2 * 30 * 192);
  c.tied_embeddings = false;
  EXPECT_EQ(c.parameter_count(), 134515008 + 49152 * 576);
}

}  // namespace
}  // namespace latte
