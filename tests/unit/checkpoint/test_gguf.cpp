#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

namespace fs = std::filesystem;

// A minimal GGUF writer, independent of the loader: enough to build small files with known
// contents (and to break them).
class GgufWriter {
 public:
  enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };
  enum : uint32_t { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_Q6_K = 14, T_BF16 = 30 };

  template <typename T>
  static void put(std::string& b, T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  static void put_str(std::string& b, const std::string& s) {
    put<uint64_t>(b, s.size());
    b += s;
  }

  void kv_raw(const std::string& key, uint32_t type, const std::string& payload) {
    put_str(kv_, key);
    put<uint32_t>(kv_, type);
    kv_ += payload;
    ++n_kv_;
  }
  template <typename T>
  void kv(const std::string& key, uint32_t type, T v) {
    std::string p;
    put<T>(p, v);
    kv_raw(key, type, p);
  }
  void kv_str(const std::string& key, const std::string& v) {
    std::string p;
    put_str(p, v);
    kv_raw(key, STRING, p);
  }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    std::string p;
    put<uint32_t>(p, STRING);
    put<uint64_t>(p, v.size());
    for (const auto& s : v) put_str(p, s);
    kv_raw(key, ARRAY, p);
  }
  template <typename T>
  void kv_array(const std::string& key, uint32_t elem, const std::vector<T>& v) {
    std::string p;
    put<uint32_t>(p, elem);
    put<uint64_t>(p, v.size());
    for (T x : v) put<T>(p, x);
    kv_raw(key, ARRAY, p);
  }

  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string bytes) {
    tensors_.push_back({name, std::move(ne), type, std::move(bytes)});
  }

  std::string bytes(uint32_t version = 3, uint64_t alignment = 32) const {
    std::string b;
    put<uint32_t>(b, 0x46554747);
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensors_.size());
    put<uint64_t>(b, n_kv_);
    b += kv_;
    std::string data;
    for (const auto& t : tensors_) {
      put_str(b, t.name);
      put<uint32_t>(b, uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) put<uint64_t>(b, d);
      put<uint32_t>(b, t.type);
      data.append((alignment - data.size() % alignment) % alignment, '\0');
      put<uint64_t>(b, data.size());
      data += t.bytes;
    }
    b.append((alignment - b.size() % alignment) % alignment, '\0');
    return b + data;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string bytes;
  };
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

constexpr uint16_t kHalf = 0x3800, kQuarter = 0x3400, kMinusOne = 0xBC00, kOneAndHalf = 0x3E00;

// Known blocks and what ggml decodes them to.
std::string q8_0_block(uint16_t d, int base) {
  std::string b;
  GgufWriter::put<uint16_t>(b, d);
  for (int j = 0; j < 32; ++j) GgufWriter::put<int8_t>(b, int8_t(j + base));
  return b;
}
std::string q4_0_block(uint16_t d) {
  std::string b;
  GgufWriter::put<uint16_t>(b, d);
  for (int j = 0; j < 16; ++j) GgufWriter::put<uint8_t>(b, uint8_t(j | ((15 - j) << 4)));
  return b;
}
std::string q4_1_block(uint16_t d, uint16_t m) {
  std::string b;
  GgufWriter::put<uint16_t>(b, d);
  GgufWriter::put<uint16_t>(b, m);
  for (int j = 0; j < 16; ++j) GgufWriter::put<uint8_t>(b, uint8_t(((j * 7) % 16) | (j << 4)));
  return b;
}
std::string f32s(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// dim 32, hidden 64, 2 layers, 4 heads of 8, 2 KV heads, vocab 16; one tensor of each type.
struct Tiny {
  GgufWriter w;
  explicit Tiny(bool with_output = false, bool with_tokenizer = true) {
    w.kv_str("general.architecture", "llama");
    w.kv_str("general.name", "tiny");
    w.kv<uint32_t>("llama.block_count", GgufWriter::U32, 2);
    w.kv<uint64_t>("llama.context_length", GgufWriter::U64, 128);
    w.kv<int32_t>("llama.embedding_length", GgufWriter::I32, 32);
    w.kv<uint32_t>("llama.feed_forward_length", GgufWriter::U32, 64);
    w.kv<uint16_t>("llama.attention.head_count", GgufWriter::U16, 4);
    w.kv<uint8_t>("llama.attention.head_count_kv", GgufWriter::U8, 2);
    w.kv<float>("llama.rope.freq_base", GgufWriter::F32, 50000.0f);
    w.kv<double>("llama.attention.layer_norm_rms_epsilon", GgufWriter::F64, 1e-6);
    w.kv<uint32_t>("llama.rope.dimension_count", GgufWriter::U32, 8);
    // Keys of every other value type, which the loader must parse and skip.
    w.kv<int8_t>("test.i8", GgufWriter::I8, -3);
    w.kv<int16_t>("test.i16", GgufWriter::I16, -300);
    w.kv<int64_t>("test.i64", GgufWriter::I64, -5);
    w.kv<uint8_t>("test.bool", GgufWriter::BOOL, 1);
    {
      std::string p;  // an array of two arrays of u16
      GgufWriter::put<uint32_t>(p, GgufWriter::ARRAY);
      GgufWriter::put<uint64_t>(p, 2);
      for (int k = 0; k < 2; ++k) {
        GgufWriter::put<uint32_t>(p, GgufWriter::U16);
        GgufWriter::put<uint64_t>(p, 3);
        for (uint16_t x : {1, 2, 3}) GgufWriter::put<uint16_t>(p, x);
      }
      w.kv_raw("test.nested", GgufWriter::ARRAY, p);
    }
    if (with_tokenizer) {
      std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "ab", "Ġ", "Ġa"};
      for (int i = 8; i < 16; ++i) tokens.push_back(str_cat("t", i));
      w.kv_str("tokenizer.ggml.model", "gpt2");
      w.kv_str("tokenizer.ggml.pre", "smollm");
      w.kv_strs("tokenizer.ggml.tokens", tokens);
      std::vector<int32_t> types(16, 1);
      types[0] = 2;
      types[1] = types[2] = 3;
      w.kv_array<int32_t>("tokenizer.ggml.token_type", GgufWriter::I32, types);
      w.kv_strs("tokenizer.ggml.merges", {"a b", "Ġ a"});
      w.kv<uint32_t>("tokenizer.ggml.bos_token_id", GgufWriter::U32, 1);
      w.kv<uint32_t>("tokenizer.ggml.eos_token_id", GgufWriter::U32, 2);
      w.kv<uint32_t>("tokenizer.ggml.unknown_token_id", GgufWriter::U32, 0);
      w.kv<uint8_t>("tokenizer.ggml.add_bos_token", GgufWriter::BOOL, 1);
      w.kv<uint8_t>("tokenizer.ggml.add_space_prefix", GgufWriter::BOOL, 0);
    } else {
      w.kv<uint32_t>("llama.vocab_size", GgufWriter::U32, 16);
    }

    using G = GgufWriter;
    // token_embd [16, 32]: Q8_0, one block per row, row r = (j + r - 16) * 0.25.
    std::string emb;
    for (int r = 0; r < 16; ++r) emb += q8_0_block(kQuarter, r - 16);
    w.tensor("token_embd.weight", {32, 16}, G::T_Q8_0, emb);
    for (int l = 0; l < 2; ++l) {
      const std::string p = str_cat("blk.", l, ".");
      w.tensor(p + "attn_norm.weight", {32}, G::T_F32, f32s(std::vector<float>(32, 1.0f + float(l))));
      w.tensor(p + "attn_q.weight", {32, 32}, G::T_Q4_0, repeat(q4_0_block(kHalf), 32));
      w.tensor(p + "attn_k.weight", {32, 16}, G::T_Q4_1, repeat(q4_1_block(kHalf, kMinusOne), 16));
      std::string v;
      for (int i = 0; i < 16 * 32; ++i) G::put<uint16_t>(v, kOneAndHalf);
      w.tensor(p + "attn_v.weight", {32, 16}, G::T_F16, v);
      std::string o;
      for (int i = 0; i < 32 * 32; ++i) G::put<uint16_t>(o, uint16_t(0x3FC0));  // bf16 1.5
      w.tensor(p + "attn_output.weight", {32, 32}, G::T_BF16, o);
      w.tensor(p + "ffn_norm.weight", {32}, G::T_F32, f32s(std::vector<float>(32, 0.5f)));
      w.tensor(p + "ffn_gate.weight", {32, 64}, G::T_Q8_0, repeat(q8_0_block(kHalf, -16), 64));
      w.tensor(p + "ffn_up.weight", {32, 64}, G::T_Q4_1, repeat(q4_1_block(kQuarter, kHalf), 64));
      std::vector<float> down(32 * 64);
      for (size_t i = 0; i < down.size(); ++i) down[i] = float(i) / 8.0f;
      w.tensor(p + "ffn_down.weight", {64, 32}, G::T_F32, f32s(down));
    }
    w.tensor("output_norm.weight", {32}, G::T_F32, f32s(std::vector<float>(32, 2.0f)));
    if (with_output) w.tensor("output.weight", {32, 16}, G::T_Q4_0, repeat(q4_0_block(kQuarter), 16));
  }
};

TEST(Gguf, TinyModelConfigAndDequantization) {
  ScratchDir dir;
  const std::string path = dir / "tiny.gguf";
  Tiny tiny;
  write_file_bytes(path, tiny.w.bytes());
  Checkpoint ck = load_gguf(path);
  EXPECT_EQ(ck.format, "gguf");
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.dim, 32);
  EXPECT_EQ(c.hidden_dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 16);
  EXPECT_EQ(c.max_seq_len, 128);
  EXPECT_EQ(c.rope_theta, 50000.0f);
  EXPECT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_layout, RopeLayout::interleaved);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);

  const TensorStore& t = ck.tensors;
  // Q8_0: row r, column j = (j + r - 16) * 0.25.
  auto emb = t.get("model.embed_tokens.weight", {16, 32}).to_vector();
  for (int r = 0; r < 16; ++r)
    for (int j = 0; j < 32; ++j) ASSERT_EQ(emb[size_t(r * 32 + j)], float(j + r - 16) * 0.25f) << r << "," << j;
  for (int l = 0; l < 2; ++l) {
    const std::string p = str_cat("model.layers.", l, ".");
    // Q4_0: element j (< 16) = (j - 8) * 0.5; element 16 + j = (15 - j - 8) * 0.5.
    auto q = t.get(p + "self_attn.q_proj.weight", {32, 32}).to_vector();
    for (int r = 0; r < 32; ++r)
      for (int j = 0; j < 16; ++j) {
        ASSERT_EQ(q[size_t(r * 32 + j)], float(j - 8) * 0.5f);
        ASSERT_EQ(q[size_t(r * 32 + 16 + j)], float(7 - j) * 0.5f);
      }
    // Q4_1: low nibble (7j mod 16), high nibble j; x = nibble * 0.5 - 1.
    auto k = t.get(p + "self_attn.k_proj.weight", {16, 32}).to_vector();
    for (int r = 0; r < 16; ++r)
      for (int j = 0; j < 16; ++j) {
        ASSERT_EQ(k[size_t(r * 32 + j)], float((j * 7) % 16) * 0.5f - 1.0f);
        ASSERT_EQ(k[size_t(r * 32 + 16 + j)], float(j) * 0.5f - 1.0f);
      }
    auto up = t.get(p + "mlp.up_proj.weight", {64, 32}).to_vector();
    EXPECT_EQ(up[3], float(21 % 16) * 0.25f + 0.5f);
    EXPECT_EQ(up[64 * 32 - 1], 15 * 0.25f + 0.5f);
    auto gate = t.get(p + "mlp.gate_proj.weight", {64, 32}).to_vector();
    EXPECT_EQ(gate[33], float(1 - 16) * 0.5f);
    for (float x : t.get(p + "self_attn.v_proj.weight", {16, 32}).to_vector()) ASSERT_EQ(x, 1.5f);
    for (float x : t.get(p + "self_attn.o_proj.weight", {32, 32}).to_vector()) ASSERT_EQ(x, 1.5f);
    // F32 [n_out = 32, n_in = 64] with ne = {64, 32}: row-major as stored.
    const Tensor& down = t.get(p + "mlp.down_proj.weight", {32, 64});
    EXPECT_EQ(down.dtype(), DType::f32);
    EXPECT_EQ(down.f32()[5 * 64 + 7], float(5 * 64 + 7) / 8.0f);
    EXPECT_EQ(t.get(p + "input_layernorm.weight", {32}).f32()[0], 1.0f + float(l));
    EXPECT_EQ(t.get(p + "post_attention_layernorm.weight", {32}).f32()[31], 0.5f);
  }
  EXPECT_EQ(t.get("model.norm.weight", {32}).f32()[0], 2.0f);
  EXPECT_FALSE(t.has("lm_head.weight"));
  EXPECT_EQ(t.file_of("model.norm.weight"), path);
}

TEST(Gguf, UntiedOutputAndAlignment64AndVersion2) {
  ScratchDir dir;
  const std::string path = dir / "tiny.gguf";
  Tiny tiny(/*with_output=*/true, /*with_tokenizer=*/false);
  tiny.w.kv<uint32_t>("general.alignment", GgufWriter::U32, 64);
  write_file_bytes(path, tiny.w.bytes(2, 64));
  Checkpoint ck = load_gguf(path);
  EXPECT_FALSE(ck.config.tied_embeddings);
  EXPECT_EQ(ck.config.vocab_size, 16);
  EXPECT_EQ(ck.tokenizer, nullptr);
  auto out = ck.tensors.get("lm_head.weight", {16, 32}).to_vector();
  EXPECT_EQ(out[0], -8 * 0.25f);
  EXPECT_EQ(out[31], -8 * 0.25f);  // element 16 + 15: high nibble 0
  // Through the path dispatch too.
  EXPECT_EQ(load_checkpoint(path).format, "gguf");
}

TEST(Gguf, TokenizerMetadata) {
  ScratchDir dir;
  const std::string path = dir / "tiny.gguf";
  Tiny tiny;
  write_file_bytes(path, tiny.w.bytes());
  Checkpoint ck = load_gguf(path);
  ASSERT_NE(ck.tokenizer, nullptr) << "make_bpe_tokenizer returned no tokenizer";
  const BpeVocab* v = ck.tokenizer->bpe_vocab();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->kind, BpeVocab::Kind::byte_level);
  EXPECT_EQ(v->tokens.size(), 16u);
  EXPECT_EQ(v->tokens[7], "Ġa");
  ASSERT_EQ(v->merges.size(), 2u);
  EXPECT_EQ(v->merges[1], std::make_pair(std::string("Ġ"), std::string("a")));
  EXPECT_EQ(v->token_types[1], 3);
  EXPECT_EQ(v->bos_id, 1);
  EXPECT_EQ(v->eos_id, 2);
  EXPECT_EQ(v->unk_id, 0);
  EXPECT_TRUE(v->add_bos);
  EXPECT_FALSE(v->add_space_prefix);
  EXPECT_EQ(v->pre, "smollm");
  EXPECT_EQ(ck.tokenizer->vocab_size(), 16);
}

TEST(Gguf, BadMagicAndVersion) {
  ScratchDir dir;
  const std::string path = dir / "bad.gguf";
  std::string b = Tiny().w.bytes();
  b[0] = 'X';
  write_file_bytes(path, b);
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "not a GGUF file"});
  write_file_bytes(path, Tiny().w.bytes(1));
  expect_error([&] { load_gguf(path); }, ErrorCode::unsupported, {path, "version 1"});
  write_file_bytes(path, "GG");
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "truncated"});
}

TEST(Gguf, Truncated) {
  ScratchDir dir;
  const std::string path = dir / "cut.gguf";
  std::string b = Tiny().w.bytes();
  // Inside the last tensor's data (output_norm.weight, 128 bytes at the end).
  write_file_bytes(path, b.substr(0, b.size() - 10));
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "truncated", "output_norm.weight"});
  // Inside the metadata.
  write_file_bytes(path, b.substr(0, 100));
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "truncated", "metadata"});
}

TEST(Gguf, UnsupportedTensorType) {
  ScratchDir dir;
  const std::string path = dir / "q6k.gguf";
  Tiny tiny;
  tiny.w.tensor("blk.0.extra.weight", {256}, GgufWriter::T_Q6_K, std::string(210, '\0'));
  write_file_bytes(path, tiny.w.bytes());
  expect_error([&] { load_gguf(path); }, ErrorCode::unsupported, {path, "blk.0.extra.weight", "Q6_K"});
  Tiny tiny2;
  tiny2.w.tensor("blk.1.weird.weight", {32}, 99, std::string(32, '\0'));
  write_file_bytes(path, tiny2.w.bytes());
  expect_error([&] { load_gguf(path); }, ErrorCode::unsupported, {path, "blk.1.weird.weight", "type 99"});
}

TEST(Gguf, UnknownTensorIsUnexpected) {
  ScratchDir dir;
  const std::string path = dir / "extra.gguf";
  Tiny tiny;
  tiny.w.tensor("blk.0.attn_q_norm.weight", {8}, GgufWriter::T_F32, f32s(std::vector<float>(8, 1.0f)));
  write_file_bytes(path, tiny.w.bytes());
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "unexpected tensor blk.0.attn_q_norm.weight"});
}

TEST(Gguf, MetadataErrors) {
  ScratchDir dir;
  const std::string path = dir / "md.gguf";
  {
    GgufWriter w;
    w.kv_str("general.architecture", "falcon");
    write_file_bytes(path, w.bytes());
    expect_error([&] { load_gguf(path); }, ErrorCode::unsupported, {path, "falcon"});
  }
  {
    GgufWriter w;
    w.kv_str("general.architecture", "llama");
    w.kv<uint32_t>("llama.block_count", GgufWriter::U32, 1);
    write_file_bytes(path, w.bytes());
    expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "llama.embedding_length"});
  }
  {
    GgufWriter w;
    w.kv_raw("general.bogus", 77, "");
    write_file_bytes(path, w.bytes());
    expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "general.bogus", "unknown value type"});
  }
  {
    GgufWriter w;  // an array claiming 2^40 elements
    std::string p;
    GgufWriter::put<uint32_t>(p, GgufWriter::U32);
    GgufWriter::put<uint64_t>(p, uint64_t(1) << 40);
    w.kv_raw("tokenizer.ggml.tokens", GgufWriter::ARRAY, p);
    write_file_bytes(path, w.bytes());
    expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "truncated", "tokenizer.ggml.tokens"});
  }
}

TEST(Gguf, DuplicateMetadataKey) {
  ScratchDir dir;
  const std::string path = dir / "dup.gguf";
  Tiny tiny;
  tiny.w.kv<uint32_t>("llama.attention.head_count_kv", GgufWriter::U32, 4);
  write_file_bytes(path, tiny.w.bytes());
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, "llama.attention.head_count_kv", "twice"});
}

TEST(Gguf, WrongShapeNamesTensor) {
  ScratchDir dir;
  const std::string path = dir / "shape.gguf";
  Tiny tiny(/*with_output=*/false, /*with_tokenizer=*/false);
  // A config with 4 KV heads expects k_proj [32, 32]; the file holds [16, 32].
  tiny.w.kv<uint32_t>("llama.attention.head_count_kv", GgufWriter::U32, 4);
  std::string b = tiny.w.bytes();
  // Drop the first head_count_kv (u8) entry by renaming its key to an unused one of equal length.
  const std::string key = "llama.attention.head_count_kv";
  b.replace(b.find(key), key.size(), "llama.attention.head_count_xx");
  write_file_bytes(path, b);
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file,
               {path, "model.layers.0.self_attn.k_proj.weight", "[16, 32]", "[32, 32]"});
}

TEST(Gguf, MisalignedOffset) {
  ScratchDir dir;
  const std::string path = dir / "align.gguf";
  Tiny tiny(false, false);
  std::string b = tiny.w.bytes();
  // The second tensor info's offset (token_embd is 16 * 34 = 544 bytes, so blk.0.attn_norm sits
  // at 544): make it 546.
  const std::string name = "blk.0.attn_norm.weight";
  size_t at = b.find(name) + name.size() + 4 + 8 + 4;
  uint64_t off;
  std::memcpy(&off, b.data() + at, 8);
  ASSERT_EQ(off, 544u);
  off += 2;
  std::memcpy(b.data() + at, &off, 8);
  write_file_bytes(path, b);
  expect_error([&] { load_gguf(path); }, ErrorCode::bad_file, {path, name, "alignment"});
}

TEST(Gguf, ExportToHfFolderWithTokenizerJson) {
  ScratchDir dir;
  const std::string path = dir / "tiny.gguf";
  Tiny tiny;
  write_file_bytes(path, tiny.w.bytes());
  Checkpoint src = load_gguf(path);
  ASSERT_NE(src.tokenizer, nullptr);
  const std::string out = dir / "hf";
  export_checkpoint(src, out);
  ASSERT_TRUE(file_exists(out + "/tokenizer.json"));
  EXPECT_FALSE(file_exists(out + "/tokenizer.bin"));
  Checkpoint back = load_safetensors_dir(out);
  EXPECT_EQ(back.config.rope_layout, RopeLayout::rotate_half);
  EXPECT_EQ(back.config.rope_theta, 50000.0f);
  EXPECT_EQ(back.config.norm_eps, 1e-6f);
  ASSERT_NE(back.tokenizer, nullptr);
  ASSERT_NE(back.tokenizer->bpe_vocab(), nullptr);
  EXPECT_EQ(back.tokenizer->bpe_vocab()->tokens, src.tokenizer->bpe_vocab()->tokens);
  EXPECT_EQ(back.tokenizer->bpe_vocab()->merges, src.tokenizer->bpe_vocab()->merges);
  EXPECT_EQ(back.tokenizer->bos_id(), 1);
  EXPECT_EQ(back.tokenizer->eos_id(), 2);
  convert_rope_layout(back.config, back.tensors, RopeLayout::interleaved);
  for (const auto& [name, e] : src.tensors.entries()) {
    Tensor a = e.tensor.to(DType::f32), b = back.tensors.get(name).to(DType::f32);  // q4_0/q8_0 stay quantized
    ASSERT_EQ(a.shape(), b.shape()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << name;
  }
}

std::optional<std::string> smollm2_gguf() {
  const fs::path d = fs::path(LATTE_MODELS_DIR) / "smollm2-135m";
  std::error_code ec;
  if (!fs::is_directory(d, ec)) return std::nullopt;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.path().extension() == ".gguf") return e.path().string();
  return std::nullopt;
}

TEST(Gguf, SmolLM2) {
  auto path = smollm2_gguf();
  if (!path) GTEST_SKIP() << "no models/smollm2-135m/*.gguf (run launch/get-smollm2 to fetch it)";
  Checkpoint ck = load_gguf(*path);
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.hidden_dim, 1536);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_seq_len, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_layout, RopeLayout::interleaved);
  EXPECT_EQ(c.parameter_count(), 134515008);
  EXPECT_EQ(ck.tensors.entries().size(), 2u + 30u * 9u);
  // Spot values decoded independently (a Python reading of the same blocks: q * d, nibble * d + m).
  const TensorStore& t = ck.tensors;
  // Q8_0 / Q4_1 tensors stay quantized (views of the file in Latte's block dtypes).
  auto at = [&](const char* name, const Shape& shape, int64_t r, int64_t col) {
    const Tensor& x = t.get(name, shape);
    EXPECT_EQ(x.dtype(), std::string(name) == "model.embed_tokens.weight" ? DType::q8_0 : DType::q4_1) << name;
    return x.select(r).to_vector()[size_t(col)];
  };
  EXPECT_FLOAT_EQ(at("model.embed_tokens.weight", {49152, 576}, 1, 0), -0.0238037109375f);      // Q8_0
  EXPECT_FLOAT_EQ(at("model.embed_tokens.weight", {49152, 576}, 1, 575), -0.12843704223632812f);
  EXPECT_FLOAT_EQ(at("model.embed_tokens.weight", {49152, 576}, 49151, 100), -0.026912689208984375f);
  EXPECT_FLOAT_EQ(at("model.layers.0.self_attn.q_proj.weight", {576, 576}, 0, 0), -0.0963134765625f);  // Q4_1
  EXPECT_FLOAT_EQ(at("model.layers.0.self_attn.q_proj.weight", {576, 576}, 0, 16), -0.22314453125f);
  EXPECT_FLOAT_EQ(at("model.layers.0.self_attn.q_proj.weight", {576, 576}, 575, 31), 0.58990478515625f);
  EXPECT_FLOAT_EQ(at("model.layers.0.self_attn.k_proj.weight", {192, 576}, 191, 300), 0.220458984375f);
  EXPECT_FLOAT_EQ(at("model.layers.29.mlp.down_proj.weight", {576, 1536}, 575, 1535), 0.056640625f);
  EXPECT_EQ(t.get("model.norm.weight", {576}).f32()[0], 1.7578125f);  // F32
  EXPECT_EQ(t.get("model.layers.3.input_layernorm.weight", {576}).f32()[7], 0.3671875f);
  ASSERT_NE(ck.tokenizer, nullptr);
  EXPECT_EQ(ck.tokenizer->vocab_size(), 49152);
  EXPECT_EQ(ck.tokenizer->bos_id(), 1);
  EXPECT_EQ(ck.tokenizer->eos_id(), 2);
  const BpeVocab* v = ck.tokenizer->bpe_vocab();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->kind, BpeVocab::Kind::byte_level);
  EXPECT_EQ(v->merges.size(), 48900u);
  EXPECT_EQ(v->merges[0], std::make_pair(std::string("Ġ"), std::string("t")));
  EXPECT_EQ(v->tokens[1], "<|im_start|>");
  EXPECT_EQ(v->pre, "smollm");
  EXPECT_FALSE(v->add_bos);
  EXPECT_FALSE(v->add_space_prefix);
}

}  // namespace
}  // namespace latte
