// `latte export --format deepseek-v3` (core/checkpoint/deepseek_layout.h): an MLA model with one
// shared RoPE key written under DeepSeek-V3's config keys and tensor names, read back by Latte
// bit for bit (config, every tensor, the logits), one file or shards; and the refusals: a model
// with per-KV-head RoPE keys, a deepseek_v3 folder Latte did not write, a kv_b_proj whose repeated
// KV-group rows disagree.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_file.h"
#include "core/model/transformer.h"
#include "tests/unit/checkpoint/test_util.h"
#include "tests/unit/model/tiny_models.h"

namespace latte {
namespace {

Checkpoint tiny_shared_checkpoint(const test::Case& k) {
  Checkpoint ck;
  ck.config = test::tiny_config(k);
  ck.config.mla_provenance = R"({"method":"MHA2MLA","rope_mode":"rorope","d_r":6})";
  const ModelWeights w = test::random_weights(ck.config, 41);
  ck.tensors = weights_to_store(ck.config, w);
  ck.tensors.origin = "tiny";
  ck.format = "memory";
  return ck;
}

std::vector<float> logits(const Checkpoint& ck) {
  Transformer m(ck.config, weights_from_store(ck.config, ck.tensors), cpu_backend());
  const std::vector<int32_t> tokens{3, 1, 4, 1, 5, 9, 2, 6};
  KvCache cache = KvCache::create(ck.config, 1, 8);
  return m.forward(tokens, 1, cache, LogitsFor::all_positions).to_vector();
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

TEST(DeepseekExport, WritesDeepseekNamesAndReadsBackBitForBit) {
  for (const test::Case& k : test::kCases) {
    if (k.shared_rope_dim == 0) continue;
    SCOPED_TRACE(k.name);
    const Checkpoint src = tiny_shared_checkpoint(k);
    const ModelConfig& c = src.config;
    for (size_t shard : {size_t(0), size_t(4) << 10}) {
      ScratchDir tmp;
      const std::string dir = tmp / "ds";
      ExportOptions eo;
      eo.deepseek_layout = true;
      eo.max_shard_bytes = shard;
      export_checkpoint(src, dir, eo);
      const nlohmann::json cfg = nlohmann::json::parse(read_text_file(dir + "/config.json"));
      EXPECT_EQ(cfg["model_type"], "deepseek_v3");
      EXPECT_EQ(cfg["architectures"][0], "DeepseekV3ForCausalLM");
      EXPECT_EQ(cfg["kv_lora_rank"], c.kv_lora_rank());
      EXPECT_EQ(cfg["qk_rope_head_dim"], c.shared_rope_dim);
      EXPECT_EQ(cfg["qk_nope_head_dim"], c.head_dim);
      EXPECT_EQ(cfg["v_head_dim"], c.head_dim);
      EXPECT_EQ(cfg["num_key_value_heads"], c.n_heads);
      EXPECT_TRUE(cfg["q_lora_rank"].is_null());
      // The stored tensors carry DeepSeek's names and shapes.
      TensorStore stored;
      for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") {
          const TensorStore part = read_safetensors_file(e.path().string());
          for (const auto& [name, t] : part.entries()) stored.put(name, t.tensor, t.file);
        }
      const int64_t qk = c.head_dim + c.shared_rope_dim;
      EXPECT_EQ(stored.get("model.layers.1.self_attn.q_proj.weight").shape(), (Shape{c.n_heads * qk, c.dim}));
      EXPECT_EQ(stored.get("model.layers.1.self_attn.kv_a_proj_with_mqa.weight").shape(),
                (Shape{c.kv_lora_rank() + c.shared_rope_dim, c.dim}));
      EXPECT_EQ(stored.get("model.layers.1.self_attn.kv_b_proj.weight").shape(),
                (Shape{c.n_heads * 2 * c.head_dim, c.kv_lora_rank()}));
      EXPECT_EQ(stored.get("model.layers.0.self_attn.kv_a_layernorm.weight").shape(), (Shape{c.kv_lora_rank()}));
      EXPECT_FALSE(stored.has("model.layers.0.self_attn.k_rope_proj.weight"));

      const Checkpoint back = load_checkpoint(dir);
      EXPECT_EQ(back.format, "deepseek_v3");
      EXPECT_EQ(config_to_json_text(back.config), config_to_json_text(c));
      for (const ModelTensor& t : model_tensors(c))
        EXPECT_TRUE(same_bits(back.tensors.get(t.name), src.tensors.get(t.name))) << t.name;
      const std::vector<float> a = logits(src), b = logits(back);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "logits differ";
    }
  }
}

TEST(DeepseekExport, RefusesWhatTheLayoutCannotHold) {
  ScratchDir tmp;
  // Per-KV-head RoPE keys (MHA2MLA's partial RoPE) have no DeepSeek form.
  Checkpoint per_head;
  per_head.config = test::tiny_config(test::kCases[3]);
  per_head.tensors = weights_to_store(per_head.config, test::random_weights(per_head.config, 3));
  ExportOptions eo;
  eo.deepseek_layout = true;
  expect_error([&] { export_checkpoint(per_head, tmp / "per_head", eo); }, ErrorCode::invalid_argument,
               {"one shared RoPE key", "--rope-mode rorope"});

  const Checkpoint src = tiny_shared_checkpoint(test::kCases[7]);
  export_checkpoint(src, tmp / "ds", eo);
  // A deepseek_v3 folder without Latte's keys (its frequencies, groups, scale) is not read.
  nlohmann::json cfg = nlohmann::json::parse(read_text_file(tmp / "ds/config.json"));
  cfg.erase("latte_rope_freqs");
  std::filesystem::create_directories(tmp / "foreign");
  std::filesystem::copy_file(tmp / "ds/model.safetensors", tmp / "foreign/model.safetensors");
  write_file_bytes(tmp / "foreign/config.json", cfg.dump(2));
  expect_error([&] { load_checkpoint(tmp / "foreign"); }, ErrorCode::unsupported,
               {"latte_rope_freqs", "Latte reads only the DeepSeek-layout folders latte export writes"});

  // A query head whose up-projection rows are not its KV group's.
  TensorStore ds = read_safetensors_file(tmp / "ds/model.safetensors");
  Tensor kv_b = ds.get("model.layers.0.self_attn.kv_b_proj.weight").clone();
  kv_b.f32()[kv_b.dim(1) * 2 * src.config.head_dim] += 1.0f;  // first row of query head 1 (group 0)
  ds.put("model.layers.0.self_attn.kv_b_proj.weight", kv_b, "edited");
  std::filesystem::create_directories(tmp / "edited");
  write_safetensors_file(tmp / "edited/model.safetensors", ds, DType::f32);
  std::filesystem::copy_file(tmp / "ds/config.json", tmp / "edited/config.json");
  expect_error([&] { load_checkpoint(tmp / "edited"); }, ErrorCode::bad_file,
               {"kv_b_proj.weight", "query head 1 does not repeat its KV group 0"});
}

}  // namespace
}  // namespace latte
