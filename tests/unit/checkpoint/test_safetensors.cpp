#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A .safetensors file taken apart, so tests can corrupt one field at a time.
struct RawSt {
  json header;
  std::string data;
};

RawSt read_st(const std::string& path) {
  std::string b = read_file_bytes(path);
  uint64_t n;
  std::memcpy(&n, b.data(), 8);
  return {json::parse(b.substr(8, n)), b.substr(8 + n)};
}

std::string st_bytes(const std::string& header_text, const std::string& data) {
  uint64_t n = header_text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header_text + data;
}

void write_st(const std::string& path, const RawSt& st) {
  std::string h = st.header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  write_file_bytes(path, st_bytes(h, st.data));
}

// Writes tensors without any of save_safetensors_dir's checks, for files the loader must reject.
void write_unchecked(const std::string& dir, const ModelConfig& config,
                     const std::vector<std::pair<std::string, Tensor>>& tensors) {
  fs::create_directories(dir);
  RawSt st;
  st.header = json::object();
  for (const auto& [name, t] : tensors) {
    const char* ds = t.dtype() == DType::f32 ? "F32" : t.dtype() == DType::bf16 ? "BF16" : "F16";
    st.header[name] = {{"dtype", ds}, {"shape", t.shape()}, {"data_offsets", {st.data.size(), st.data.size() + t.nbytes()}}};
    st.data.append(static_cast<const char*>(t.raw()), t.nbytes());
  }
  write_st(dir + "/model.safetensors", st);
  write_file_bytes(dir + "/config.json", config_to_json_text(config));
}

std::vector<std::pair<std::string, Tensor>> stories_tensors(const Checkpoint& ck) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, e] : ck.tensors.entries()) out.emplace_back(name, e.tensor.clone());
  return out;
}

void expect_bit_exact(const TensorStore& a, const TensorStore& b) {
  ASSERT_EQ(a.entries().size(), b.entries().size());
  for (const auto& [name, e] : a.entries()) {
    ASSERT_TRUE(b.has(name)) << name;
    const Tensor& x = e.tensor;
    const Tensor& y = b.get(name);
    ASSERT_EQ(x.shape(), y.shape()) << name;
    ASSERT_EQ(x.dtype(), y.dtype()) << name;
    Tensor xc = x.clone(), yc = y.clone();
    EXPECT_EQ(std::memcmp(xc.raw(), yc.raw(), xc.nbytes()), 0) << name;
  }
}

// Every tensor of `got` is the `dtype` rounding of the f32 tensor of the same name in `ref`.
void expect_rounded(const TensorStore& ref, const TensorStore& got, DType dtype) {
  ASSERT_EQ(ref.entries().size(), got.entries().size());
  for (const auto& [name, e] : ref.entries()) {
    const Tensor& y = got.get(name, e.tensor.shape());
    ASSERT_EQ(y.dtype(), dtype) << name;
    std::vector<float> x = e.tensor.to_vector();
    const uint16_t* bits = y.u16();
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t want = dtype == DType::bf16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
      ASSERT_EQ(bits[i], want) << name << " element " << i;
    }
  }
}

TEST(Safetensors, RoundTripSingleF32) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  save_safetensors_dir(dir.str(), src.config, src.tensors);
  EXPECT_TRUE(file_exists(dir / "model.safetensors"));
  EXPECT_TRUE(file_exists(dir / "config.json"));
  EXPECT_FALSE(file_exists(dir / "model.safetensors.index.json"));

  std::string bytes = read_file_bytes(dir / "model.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);
  auto cfg = json::parse(read_file_bytes(dir / "config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["latte_rope_layout"], "interleaved");  // rows were not permuted

  Checkpoint back = load_safetensors_dir(dir.str());
  EXPECT_EQ(back.format, "safetensors");
  EXPECT_EQ(back.config.rope_layout, RopeLayout::interleaved);
  EXPECT_EQ(back.config.n_kv_heads, 4);
  EXPECT_EQ(back.config.parameter_count(), src.config.parameter_count());
  EXPECT_EQ(back.tensors.file_of("model.norm.weight"), dir / "model.safetensors");
  expect_bit_exact(src.tensors, back.tensors);
  // Loaded as views on the map: aligned, no copies.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(back.tensors.get("model.embed_tokens.weight").raw()) % 8, 0u);
}

TEST(Safetensors, RoundTripShardedF32) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  SaveOptions opts;
  opts.max_shard_bytes = 300000;
  save_safetensors_dir(dir.str(), src.config, src.tensors, opts);
  EXPECT_FALSE(file_exists(dir / "model.safetensors"));
  auto index = json::parse(read_file_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), src.tensors.entries().size());
  EXPECT_EQ(index["metadata"]["total_size"], 260032u * 4);
  std::set<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) shards.insert(shard.get<std::string>());
  EXPECT_GE(shards.size(), 4u);
  for (const auto& s : shards) {
    EXPECT_TRUE(file_exists(dir / s)) << s;
    EXPECT_NE(s.find(str_cat("-of-0000", shards.size())), std::string::npos) << s;
    EXPECT_LE(fs::file_size(dir / s), 300000u + 8 + 4096) << s;
  }
  Checkpoint back = load_safetensors_dir(dir.str());
  expect_bit_exact(src.tensors, back.tensors);
  for (const auto& [name, shard] : index["weight_map"].items())
    EXPECT_EQ(back.tensors.file_of(name), dir / shard.get<std::string>());
}

TEST(Safetensors, RoundTripBf16AndF16) {
  for (DType dt : {DType::bf16, DType::f16}) {
    for (size_t shard : {size_t(0), size_t(100000)}) {
      ScratchDir dir;
      Checkpoint src = load_llama2c(stories_path());
      SaveOptions opts;
      opts.dtype = dt;
      opts.max_shard_bytes = shard;
      save_safetensors_dir(dir.str(), src.config, src.tensors, opts);
      auto cfg = json::parse(read_file_bytes(dir / "config.json"));
      EXPECT_EQ(cfg["torch_dtype"], dt == DType::bf16 ? "bfloat16" : "float16");
      Checkpoint back = load_safetensors_dir(dir.str());
      expect_rounded(src.tensors, back.tensors, dt);
      // Saving the loaded 16-bit tensors again is lossless.
      ScratchDir dir2;
      save_safetensors_dir(dir2.str(), back.config, back.tensors, opts);
      expect_bit_exact(back.tensors, load_safetensors_dir(dir2.str()).tensors);
    }
  }
}

TEST(Safetensors, ResaveReplacesShardsAndSingleFile) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  save_safetensors_dir(dir.str(), src.config, src.tensors);
  SaveOptions opts;
  opts.max_shard_bytes = 300000;
  save_safetensors_dir(dir.str(), src.config, src.tensors, opts);
  EXPECT_FALSE(file_exists(dir / "model.safetensors"));
  expect_bit_exact(src.tensors, load_safetensors_dir(dir.str()).tensors);
  save_safetensors_dir(dir.str(), src.config, src.tensors);
  EXPECT_FALSE(file_exists(dir / "model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(dir.str()))
    EXPECT_EQ(e.path().filename().string().find("-of-"), std::string::npos) << e.path();
  expect_bit_exact(src.tensors, load_safetensors_dir(dir.str()).tensors);
}

class BadSafetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = load_llama2c(stories_path());
    save_safetensors_dir(dir_.str(), src_.config, src_.tensors);
    file_ = dir_ / "model.safetensors";
  }
  Checkpoint src_;
  ScratchDir dir_;
  std::string file_;
};

TEST_F(BadSafetensors, Truncated) {
  std::string b = read_file_bytes(file_);
  write_file_bytes(file_, b.substr(0, b.size() - 100));
  // The last tensor in model order is model.norm.weight.
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "truncated", "model.norm.weight"});
  write_file_bytes(file_, b.substr(0, 5));
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {file_, "truncated"});
}

TEST_F(BadSafetensors, TrailingBytes) {
  write_file_bytes(file_, read_file_bytes(file_) + "extra");
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {file_, "5 bytes after the last tensor"});
}

TEST_F(BadSafetensors, BadHeaderJson) {
  std::string b = read_file_bytes(file_);
  b[8] = '[';  // the opening brace
  b[9] = '!';
  write_file_bytes(file_, b);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {file_, "not valid JSON"});
}

TEST_F(BadSafetensors, HeaderLengthPastEof) {
  std::string b = read_file_bytes(file_);
  uint64_t n = b.size();
  std::memcpy(b.data(), &n, 8);
  write_file_bytes(file_, b);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, str_cat("header length ", n), "past the end"});
  n = uint64_t(1) << 40;
  std::memcpy(b.data(), &n, 8);
  write_file_bytes(file_, b);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {file_, "header length"});
}

TEST_F(BadSafetensors, OffsetsDoNotMatchShape) {
  RawSt st = read_st(file_);
  auto& e = st.header["model.layers.1.self_attn.k_proj.weight"]["data_offsets"];
  e[1] = e[1].get<uint64_t>() - 4;
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "model.layers.1.self_attn.k_proj.weight", "data_offsets", "8192"});
}

TEST_F(BadSafetensors, OffsetsOutOfRange) {
  RawSt st = read_st(file_);
  auto& e = st.header["model.layers.2.mlp.up_proj.weight"]["data_offsets"];
  uint64_t len = e[1].get<uint64_t>() - e[0].get<uint64_t>();
  e[0] = st.data.size();
  e[1] = st.data.size() + len;
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "model.layers.2.mlp.up_proj.weight", str_cat(st.data.size())});
}

TEST_F(BadSafetensors, OffsetsOverlap) {
  RawSt st = read_st(file_);
  // Two tensors of equal size: point the later one at the earlier one's bytes.
  st.header["model.layers.0.self_attn.v_proj.weight"]["data_offsets"] =
      st.header["model.layers.0.self_attn.k_proj.weight"]["data_offsets"];
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "overlap", "model.layers.0.self_attn."});
}

TEST_F(BadSafetensors, UnsupportedAndUnknownDtype) {
  RawSt st = read_st(file_);
  st.header["model.layers.3.input_layernorm.weight"]["dtype"] = "I32";  // same byte size as F32
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::unsupported,
               {file_, "model.layers.3.input_layernorm.weight", "I32", "not supported"});
  st.header["model.layers.3.input_layernorm.weight"]["dtype"] = "Q9";
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "model.layers.3.input_layernorm.weight", "unknown dtype", "Q9"});
}

TEST_F(BadSafetensors, DtypeDoesNotMatchByteSize) {
  RawSt st = read_st(file_);
  st.header["model.norm.weight"]["dtype"] = "BF16";  // 64 elements: 128 bytes, but 256 stored
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {file_, "model.norm.weight", "BF16", "256", "128"});
}

TEST_F(BadSafetensors, MissingTensor) {
  auto t = stories_tensors(src_);
  std::erase_if(t, [](const auto& p) { return p.first == "model.layers.2.mlp.gate_proj.weight"; });
  write_unchecked(dir_.str(), src_.config, t);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {"missing tensor model.layers.2.mlp.gate_proj.weight", dir_.str()});
}

TEST_F(BadSafetensors, ExtraTensor) {
  auto t = stories_tensors(src_);
  t.emplace_back("model.layers.0.self_attn.q_norm.weight", Tensor::zeros({8}));
  write_unchecked(dir_.str(), src_.config, t);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {"unexpected tensor model.layers.0.self_attn.q_norm.weight", file_});
  // A config with fewer layers than the file makes the last layer's tensors extra.
  ModelConfig c = src_.config;
  c.n_layers = 4;
  write_unchecked(dir_.str(), c, stories_tensors(src_));
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {"unexpected tensor model.layers.4.", file_});
  // lm_head with tie_word_embeddings = true.
  t = stories_tensors(src_);
  t.emplace_back("lm_head.weight", Tensor::zeros({512, 64}));
  write_unchecked(dir_.str(), src_.config, t);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {"lm_head.weight", file_, "tie_word_embeddings"});
}

TEST_F(BadSafetensors, ShapeMismatch) {
  auto t = stories_tensors(src_);
  for (auto& [name, x] : t)
    if (name == "model.layers.1.self_attn.o_proj.weight") x = x.reshape({32, 128});
  write_unchecked(dir_.str(), src_.config, t);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {"model.layers.1.self_attn.o_proj.weight", file_, "[32, 128]", "[64, 64]"});
}

TEST_F(BadSafetensors, NanAndInfWeights) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    auto t = stories_tensors(src_);
    for (auto& [name, x] : t)
      if (name == "model.layers.3.mlp.down_proj.weight") x.f32()[777] = bad;
    write_unchecked(dir_.str(), src_.config, t);
    expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::numerics,
                 {"model.layers.3.mlp.down_proj.weight", file_, std::isnan(bad) ? "NaN" : "Inf", "element 777"});
    LoadOptions lax;
    lax.check_finite = false;
    EXPECT_NO_THROW(load_safetensors_dir(dir_.str(), lax));
  }
}

TEST_F(BadSafetensors, NanInBf16) {
  SaveOptions opts;
  opts.dtype = DType::bf16;
  save_safetensors_dir(dir_.str(), src_.config, src_.tensors, opts);
  RawSt st = read_st(file_);
  uint64_t off = st.header["model.embed_tokens.weight"]["data_offsets"][0].get<uint64_t>();
  uint16_t nan = 0x7fc0;
  std::memcpy(st.data.data() + off + 2 * 5, &nan, 2);
  write_st(file_, st);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::numerics,
               {"model.embed_tokens.weight", file_, "NaN", "element 5"});
}

TEST_F(BadSafetensors, IndexNamesMissingShard) {
  SaveOptions opts;
  opts.max_shard_bytes = 300000;
  save_safetensors_dir(dir_.str(), src_.config, src_.tensors, opts);
  auto index = json::parse(read_file_bytes(dir_ / "model.safetensors.index.json"));
  std::string shard = index["weight_map"]["model.norm.weight"];
  fs::remove(dir_ / shard);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file,
               {"model.safetensors.index.json", shard, "does not exist"});
}

TEST_F(BadSafetensors, IndexDisagreesWithShards) {
  SaveOptions opts;
  opts.max_shard_bytes = 300000;
  save_safetensors_dir(dir_.str(), src_.config, src_.tensors, opts);
  const std::string ip = dir_ / "model.safetensors.index.json";
  auto index = json::parse(read_file_bytes(ip));
  std::string first = index["weight_map"]["model.embed_tokens.weight"];
  std::string last = index["weight_map"]["model.norm.weight"];
  ASSERT_NE(first, last);
  index["weight_map"]["model.norm.weight"] = first;
  write_file_bytes(ip, index.dump());
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {ip, "model.norm.weight", first});
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  write_file_bytes(ip, index.dump());
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::bad_file, {ip, "model.norm.weight", "elsewhere"});
}

TEST_F(BadSafetensors, MissingConfigOrWeights) {
  fs::remove(dir_ / "config.json");
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::io, {"config.json", dir_.str()});
  write_file_bytes(dir_ / "config.json", config_to_json_text(src_.config));
  fs::remove(file_);
  expect_error([&] { load_safetensors_dir(dir_.str()); }, ErrorCode::io, {"model.safetensors", dir_.str()});
}

TEST(AtomicWrite, FailingWriterLeavesOldFileAndNoTemp) {
  ScratchDir dir;
  const std::string path = dir / "config.json";
  atomic_write_string(path, "old contents");
  EXPECT_THROW(atomic_write(path,
                            [](FileWriter& w) {
                              w.write("new", 3);
                              fail(ErrorCode::io, "disk full (simulated)");
                            }),
               Error);
  EXPECT_EQ(read_file_bytes(path), "old contents");
  for (const auto& e : fs::directory_iterator(dir.str()))
    EXPECT_EQ(e.path().filename().string(), "config.json") << "left behind: " << e.path();
}

TEST(AtomicWrite, FailedSaveLeavesPreviousCheckpoint) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  save_safetensors_dir(dir.str(), src.config, src.tensors);
  const std::string before = read_file_bytes(dir / "model.safetensors");
  TensorStore broken = src.tensors;
  broken.erase("model.layers.4.mlp.up_proj.weight");
  expect_error([&] { save_safetensors_dir(dir.str(), src.config, broken); }, ErrorCode::bad_file,
               {"model.layers.4.mlp.up_proj.weight"});
  EXPECT_EQ(read_file_bytes(dir / "model.safetensors"), before);
  for (const auto& e : fs::directory_iterator(dir.str()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  expect_bit_exact(src.tensors, load_safetensors_dir(dir.str()).tensors);
}

}  // namespace
}  // namespace latte
