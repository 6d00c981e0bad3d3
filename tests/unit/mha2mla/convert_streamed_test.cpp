// trainer/mha2mla/convert_streamed: the layer-at-a-time conversion of a sharded safetensors folder.
// Oracle: the in-memory conversion (convert_to_mla + export_checkpoint), which the streamed one
// must reproduce byte for byte in f32, and value for value (copied tensors bit for bit in their
// source dtype) when it keeps the source's bf16. Plus the refusals a streamed pass meets late: a
// NaN in the middle of the model must leave no weights behind.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/backend/registry.h"
#include "core/checkpoint/random_model.h"
#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/unit/checkpoint/test_util.h"
#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/convert_streamed.h"

namespace latte {
namespace {

namespace fs = std::filesystem;


// A GQA llama of 3 layers, bf16, in shards of at most 24 KiB (each layer spans several files).
ModelConfig small_config() {
  ModelConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 300;
  c.max_seq_len = 32;
  c.rope_layout = RopeLayout::rotate_half;
  c.validate("small_config");
  return c;
}

std::string write_source(const ScratchDir& tmp, DType dtype) {
  const std::string dir = tmp / "src";
  RandomModelOptions o;
  o.seed = 7;
  o.dtype = dtype;
  o.max_shard_bytes = 24 << 10;
  o.init_std = 0.2f;  // large enough that attention is not uniform: the calibration statistics vary
  write_random_model(dir, small_config(), o);
  return dir;
}

std::string write_calibration_text(const ScratchDir& tmp) {
  const std::string path = tmp / "calib.txt";
  std::ofstream f(path);
  for (int i = 0; i < 40; ++i) f << "Once upon a time " << i << " a small model met a latent cache. ";
  return path;
}

std::string file_bytes(const std::string& path) { return read_text_file(path); }

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

ConvertOptions options(RopeStrategy s, LatentInit init, const std::string& calib, const std::string& source) {
  ConvertOptions o;
  o.strategy = s;
  o.init = init;
  o.calibration.text_path = calib;
  o.calibration.max_tokens = 300;
  o.source_name = source;  // the provenance names it: the same in both runs
  return o;
}

// Streamed (f32) vs in-memory + export: every file the same bytes.
void expect_byte_identical(const std::string& src_dir, const ConvertOptions& co, const ScratchDir& tmp,
                           const std::string& tag) {
  const size_t shard = 16 << 10;
  Checkpoint mapped = load_checkpoint(src_dir, {.check_finite = false});
  StreamedConvertOptions so;
  so.convert = co;
  so.keep_source_dtype = false;
  so.max_shard_bytes = shard;
  int64_t progress_calls = 0;
  so.progress = [&](const StreamedConvertProgress& p) {
    ++progress_calls;
    EXPECT_EQ(p.layers_done, progress_calls);
    EXPECT_EQ(p.layers, 3);
  };
  ConversionReport streamed_report, memory_report;
  convert_to_mla_streamed(mapped, tmp / ("streamed_" + tag), so, &streamed_report);
  EXPECT_EQ(progress_calls, 3);

  Checkpoint full = load_checkpoint(src_dir);
  Checkpoint mla = convert_to_mla(full, co, &memory_report);
  ExportOptions eo;
  eo.max_shard_bytes = shard;
  export_checkpoint(mla, tmp / ("memory_" + tag), eo);

  const std::string a = tmp / ("streamed_" + tag), b = tmp / ("memory_" + tag);
  std::set<std::string> files_b = names_in(b);
  files_b.erase("tokenizer.json");  // export_checkpoint writes the tokenizer; the streamed call leaves it to the caller
  files_b.erase("tokenizer.bin");
  ASSERT_EQ(names_in(a), files_b) << tag;
  EXPECT_GT(files_b.size(), 4u) << tag << ": the output should be sharded";
  for (const std::string& f : files_b)
    EXPECT_TRUE(file_bytes((fs::path(a) / f).string()) == file_bytes((fs::path(b) / f).string()))
        << tag << ": " << f << " differs";
  EXPECT_EQ(streamed_report.energy_kept, memory_report.energy_kept) << tag;
  ASSERT_EQ(streamed_report.activation_energy.size(), memory_report.activation_energy.size()) << tag;
  for (size_t l = 0; l < memory_report.activation_energy.size(); ++l) {
    EXPECT_EQ(streamed_report.activation_energy[l].pca_keys, memory_report.activation_energy[l].pca_keys);
    EXPECT_EQ(streamed_report.activation_energy[l].svd_values, memory_report.activation_energy[l].svd_values);
  }
  EXPECT_EQ(streamed_report.calib_positions, memory_report.calib_positions) << tag;
}

TEST(ConvertStreamed, ByteIdenticalToInMemoryWithoutCalibration) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::bf16);
  expect_byte_identical(src, options(RopeStrategy::uniform, LatentInit::svd, "", "src"), tmp, "uniform");
}

TEST(ConvertStreamed, ByteIdenticalToInMemoryWithTwoNormCalibration) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::bf16);
  expect_byte_identical(src, options(RopeStrategy::two_norm, LatentInit::svd, write_calibration_text(tmp), "src"), tmp,
                        "2norm");
  // The 2-norm choice must come from the calibration, not from the placeholder the writer's
  // plan starts with (high = pairs {0}): with these weights some head keeps another pair.
  const ModelConfig c = load_checkpoint(tmp / "streamed_2norm").config;
  bool other_than_high = false;
  for (const auto& layer : c.rope_freqs)
    for (const auto& head : layer) other_than_high |= head != std::vector<int32_t>{0};
  EXPECT_TRUE(other_than_high);
}

TEST(ConvertStreamed, WithoutTheInitComparisonTheWeightsAreTheSame) {
  // compare_inits only adds report rows: the weights must not depend on it.
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::bf16);
  ConvertOptions co = options(RopeStrategy::two_norm, LatentInit::svd, write_calibration_text(tmp), "src");
  co.compare_inits = false;
  expect_byte_identical(src, co, tmp, "lean");
  co.compare_inits = true;
  expect_byte_identical(src, co, tmp, "full");
  ASSERT_EQ(names_in(tmp / "streamed_lean"), names_in(tmp / "streamed_full"));
  for (const std::string& f : names_in(tmp / "streamed_full"))
    EXPECT_TRUE(file_bytes(tmp / ("streamed_lean/" + f)) == file_bytes(tmp / ("streamed_full/" + f))) << f;
  ConversionReport lean;
  co.compare_inits = false;
  convert_to_mla(load_checkpoint(src), co, &lean);
  EXPECT_TRUE(lean.activation_energy.empty());
  EXPECT_EQ(lean.energy_kept.size(), 3u);
}

TEST(ConvertStreamed, ByteIdenticalToInMemoryWithPcaInit) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::f32);
  expect_byte_identical(src, options(RopeStrategy::two_norm, LatentInit::pca, write_calibration_text(tmp), "src"), tmp,
                        "pca");
}

// RoRoPE: its frequencies come with each layer (as 2-norm's pairs), and its q_proj / k_rope_proj
// are computed, so they are f32 whatever the source dtype.
TEST(ConvertStreamed, ByteIdenticalToInMemoryWithRorope) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::bf16);
  ConvertOptions co = options(RopeStrategy::two_norm, LatentInit::pca, write_calibration_text(tmp), "src");
  co.rope_mode = RopeMode::rorope;
  co.rope_dims = 12;  // of 2 KV heads x 16 dims: some frequencies keep both components, some one, some none
  expect_byte_identical(src, co, tmp, "rorope");
  const ModelConfig c = load_checkpoint(tmp / "streamed_rorope").config;
  ASSERT_TRUE(c.shared_rope());
  EXPECT_EQ(c.shared_rope_dim, 12);
  EXPECT_NE(c.shared_rope_freqs[0], std::vector<int32_t>(6, 0)) << "the placeholder frequencies were written";
  StreamedConvertOptions so;
  so.convert = co;
  so.keep_source_dtype = true;
  convert_to_mla_streamed(load_checkpoint(src, {.check_finite = false}), tmp / "rorope_bf16", so, nullptr);
  const Checkpoint kept = load_checkpoint(tmp / "rorope_bf16");
  EXPECT_EQ(kept.tensors.get("model.layers.0.self_attn.q_proj.weight").dtype(), DType::f32);
  EXPECT_EQ(kept.tensors.get("model.layers.0.self_attn.k_rope_proj.weight").dtype(), DType::f32);
  EXPECT_EQ(kept.tensors.get("model.layers.0.self_attn.o_proj.weight").dtype(), DType::bf16);
}

TEST(ConvertStreamed, KeepsCopiedTensorsInTheSourceDtype) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::bf16);
  const ConvertOptions co = options(RopeStrategy::uniform, LatentInit::svd, "", "src");
  StreamedConvertOptions so;
  so.convert = co;
  so.max_shard_bytes = 16 << 10;
  convert_to_mla_streamed(load_checkpoint(src, {.check_finite = false}), tmp / "kept", so, nullptr);
  const Checkpoint kept = load_checkpoint(tmp / "kept");
  const Checkpoint memory = convert_to_mla(load_checkpoint(src), co, nullptr);
  ASSERT_EQ(kept.tensors.entries().size(), memory.tensors.entries().size());
  for (const auto& [name, e] : memory.tensors.entries()) {
    const Tensor& t = kept.tensors.get(name);
    const bool computed = name.ends_with("kv_a_proj.weight") || name.ends_with("k_b_proj.weight") ||
                          name.ends_with("v_b_proj.weight");
    EXPECT_EQ(t.dtype(), computed ? DType::f32 : DType::bf16) << name;
    EXPECT_EQ(t.to_vector(), e.tensor.to_vector()) << name;
  }
  EXPECT_EQ(kept.config.rope_freqs, memory.config.rope_freqs);
  // The kept model (bf16 and f32 weights in one model) runs, and agrees with the all-f32 one.
  const std::vector<int32_t> tokens = {1, 40, 77, 120, 5, 299};
  auto logits = [&](const Checkpoint& ck) {
    Transformer m(ck.config, weights_from_store(ck.config, ck.tensors), cpu_backend());
    KvCache cache = m.make_cache(1, 16);
    return m.forward(tokens, 1, cache, LogitsFor::all_positions).to_vector();
  };
  const std::vector<float> a = logits(kept), b = logits(memory);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i])) << i;
    EXPECT_NEAR(a[i], b[i], 1e-3 * (1 + std::fabs(b[i]))) << i;
  }
}

TEST(ConvertStreamed, NanInALaterLayerLeavesNoWeights) {
  ScratchDir tmp;
  const std::string src = write_source(tmp, DType::f32);
  // Poison one element of layer 2's MLP in whichever shard holds it (f32: 0x7fc00000 is NaN).
  Checkpoint probe = load_checkpoint(src);
  const std::string name = "model.layers.2.mlp.up_proj.weight";
  const std::string shard = probe.tensors.file_of(name);
  // The tensor's offset in its file: where its view sits in the map of that file.
  const TensorEntry& e = probe.tensors.entries().at(name);
  ASSERT_TRUE(e.map);
  const size_t offset = size_t(static_cast<const uint8_t*>(e.tensor.raw()) - e.map->data()) + 4 * 5;
  probe = Checkpoint();
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(long(offset));
    const uint32_t nan_bits = 0x7fc00000u;
    f.write(reinterpret_cast<const char*>(&nan_bits), 4);
  }
  StreamedConvertOptions so;
  so.convert = options(RopeStrategy::uniform, LatentInit::svd, "", "src");
  so.max_shard_bytes = 16 << 10;
  const std::string out = tmp / "out";
  try {
    convert_to_mla_streamed(load_checkpoint(src, {.check_finite = false}), out, so, nullptr);
    FAIL() << "a NaN weight was converted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::numerics);
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(file_exists((fs::path(out) / "config.json").string()));
  EXPECT_FALSE(file_exists((fs::path(out) / "model.safetensors.index.json").string()));
}

TEST(MappedFileRelease, PagesReadBackTheSameBytes) {
  ScratchDir tmp;
  const std::string path = tmp / "blob";
  std::string bytes(3 * 4096 + 123, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char(i * 131 % 251);
  atomic_write_string(path, bytes);
  MappedFile map(path);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(map.data()), map.size()), bytes);
  map.release_pages(map.data() + 100, 5000);  // partial pages at both ends: widened to whole pages
  map.release_pages(map.data(), map.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(map.data()), map.size()), bytes);
  EXPECT_THROW(map.release_pages(map.data() + 10, map.size()), Error);  // runs past the end
}

}  // namespace
}  // namespace latte
