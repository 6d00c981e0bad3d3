// llama.cpp GGUF (v2/v3) files of architecture "llama": metadata -> ModelConfig, tensors -> HF
// names (F32 as views on the map, Q8_0/Q4_0/Q4_1 as views in Latte's block dtypes q8_0/q4_0/q4_1,
// F16/BF16 decoded to f32), tokenizer.ggml.* -> BpeVocab.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/gguf_internal.h"

namespace latte {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;

enum ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

const char* value_type_name(uint32_t t) {
  static const char* names[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return t < 13 ? names[t] : "unknown";
}

struct Value {
  uint32_t type = U8;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // floats
  std::string s;
  uint32_t elem_type = U8;  // for arrays
  std::vector<Value> arr;

  bool is_int() const { return type <= I32 || type == U64 || type == I64 || type == BOOL; }
  bool is_float() const { return type == F32 || type == F64; }
};

// The fewest bytes a value of `type` takes in the file.
size_t min_encoded_bytes(uint32_t type) {
  switch (type) {
    case U16: case I16: return 2;
    case U32: case I32: case F32: return 4;
    case U64: case I64: case F64: case STRING: return 8;
    case ARRAY: return 12;
    default: return 1;
  }
}

// Bounds-checked cursor over the map; every read that would pass the end is a truncation error
// naming what was being read.
class Reader {
 public:
  Reader(const MappedFile& f) : f_(f) {}
  size_t pos() const { return pos_; }
  size_t left() const { return f_.size() - pos_; }

  void need(size_t n, const std::string& what) {
    if (n > left())
      fail(ErrorCode::bad_file, f_.path(), " is truncated: reading ", what, " at byte ", pos_, " needs ", n,
           " bytes, the file has ", f_.size());
  }
  template <typename T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    uint64_t n = get<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(f_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  Value value(uint32_t type, const std::string& what, int depth = 0) {
    Value v;
    v.type = type;
    switch (type) {
      case U8: v.u = get<uint8_t>(what); break;
      case I8: v.i = get<int8_t>(what); break;
      case U16: v.u = get<uint16_t>(what); break;
      case I16: v.i = get<int16_t>(what); break;
      case U32: v.u = get<uint32_t>(what); break;
      case I32: v.i = get<int32_t>(what); break;
      case U64: v.u = get<uint64_t>(what); break;
      case I64: v.i = get<int64_t>(what); break;
      case F32: v.f = get<float>(what); break;
      case F64: v.f = get<double>(what); break;
      case BOOL: v.u = get<uint8_t>(what) != 0; break;
      case STRING: v.s = str(what); break;
      case ARRAY: {
        LATTE_REQUIRE(depth < kMaxArrayDepth, ErrorCode::bad_file, f_.path(), ": ", what,
                      " nests arrays deeper than ", kMaxArrayDepth);
        v.elem_type = get<uint32_t>(what);
        LATTE_REQUIRE(v.elem_type <= F64, ErrorCode::bad_file, f_.path(), ": ", what, " has unknown element type ",
                      v.elem_type);
        uint64_t n = get<uint64_t>(what);
        // A count beyond what the bytes left can hold is corrupt and must not drive the reserve
        // below: each Value is ~100 bytes in memory, so the bound is each element's smallest
        // encoding (a string's 8-byte length, an array's type and count), not one byte.
        LATTE_REQUIRE(n <= left() / min_encoded_bytes(v.elem_type), ErrorCode::bad_file, f_.path(),
                      " is truncated: ", what, " at byte ", pos_, " claims ", n, " elements of ",
                      value_type_name(v.elem_type), ", more than the ", left(), " bytes left can hold");
        v.arr.reserve(n);
        for (uint64_t k = 0; k < n; ++k) v.arr.push_back(value(v.elem_type, what, depth + 1));
        break;
      }
      default: fail(ErrorCode::bad_file, f_.path(), ": ", what, " has unknown value type ", type);
    }
    if (type <= I32 || type == U64 || type == I64) {
      if (type == U8 || type == U16 || type == U32 || type == U64) v.i = int64_t(v.u);
      else v.u = uint64_t(v.i);
    }
    return v;
  }
  void seek(size_t p) { pos_ = p; }

 private:
  const MappedFile& f_;
  size_t pos_ = 0;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // innermost first, as ggml lists them
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
};

class Metadata {
 public:
  Metadata(std::string path) : path_(std::move(path)) {}
  std::map<std::string, Value> kv;

  const Value* find(const std::string& key) const {
    auto it = kv.find(key);
    return it == kv.end() ? nullptr : &it->second;
  }
  int64_t integer(const std::string& key) const {
    const Value* v = find(key);
    LATTE_REQUIRE(v, ErrorCode::bad_file, path_, ": missing metadata key ", key);
    return as_int(*v, key);
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    const Value* v = find(key);
    return v ? as_int(*v, key) : fallback;
  }
  double real(const std::string& key, double fallback) const {
    const Value* v = find(key);
    if (!v) return fallback;
    LATTE_REQUIRE(v->is_float() || v->is_int(), ErrorCode::bad_file, path_, ": metadata ", key, " is ",
                  value_type_name(v->type), ", expected a number");
    return v->is_float() ? v->f : double(v->i);
  }
  bool boolean(const std::string& key, bool fallback) const {
    const Value* v = find(key);
    if (!v) return fallback;
    LATTE_REQUIRE(v->type == BOOL, ErrorCode::bad_file, path_, ": metadata ", key, " is ", value_type_name(v->type),
                  ", expected bool");
    return v->u != 0;
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    const Value* v = find(key);
    if (!v) return fallback;
    LATTE_REQUIRE(v->type == STRING, ErrorCode::bad_file, path_, ": metadata ", key, " is ",
                  value_type_name(v->type), ", expected string");
    return v->s;
  }
  // An array of `elem` (nullptr when absent).
  const std::vector<Value>* array(const std::string& key, std::initializer_list<uint32_t> elem) const {
    const Value* v = find(key);
    if (!v) return nullptr;
    bool ok = v->type == ARRAY && std::find(elem.begin(), elem.end(), v->elem_type) != elem.end();
    LATTE_REQUIRE(ok, ErrorCode::bad_file, path_, ": metadata ", key, " is ",
                  v->type == ARRAY ? str_cat("an array of ", value_type_name(v->elem_type)) : value_type_name(v->type),
                  ", expected an array of ", value_type_name(*elem.begin()));
    return &v->arr;
  }

 private:
  int64_t as_int(const Value& v, const std::string& key) const {
    LATTE_REQUIRE(v.is_int(), ErrorCode::bad_file, path_, ": metadata ", key, " is ", value_type_name(v.type),
                  v.type == ARRAY ? " (per-layer values are not supported)" : "", ", expected an integer");
    return v.type == BOOL ? int64_t(v.u) : v.i;
  }
  std::string path_;
};

// GGUF names -> HF names (checkpoint.h); names it does not know are kept, so the tensor-set check
// reports them as unexpected under their own name.
std::string hf_name(const std::string& g) {
  static const std::map<std::string, std::string> top = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const std::map<std::string, std::string> layer = {
      {"attn_q.weight", "self_attn.q_proj.weight"},    {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},    {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},     {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},     {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
  };
  if (auto it = top.find(g); it != top.end()) return it->second;
  if (g.starts_with("blk.")) {
    size_t dot = g.find('.', 4);
    if (dot != std::string::npos && dot > 4 &&
        std::all_of(g.begin() + 4, g.begin() + long(dot), [](char c) { return c >= '0' && c <= '9'; })) {
      if (auto it = layer.find(g.substr(dot + 1)); it != layer.end())
        return str_cat("model.layers.", g.substr(4, dot - 4), ".", it->second);
    }
  }
  return g;
}

ModelConfig config_from_metadata(const Metadata& md, const std::vector<TensorInfo>& infos, const std::string& path) {
  const std::string arch = md.string("general.architecture", "");
  LATTE_REQUIRE(!arch.empty(), ErrorCode::bad_file, path, ": missing metadata key general.architecture");
  LATTE_REQUIRE(arch == "llama", ErrorCode::unsupported, path, ": GGUF architecture \"", arch,
                "\" is not supported (only llama)");
  const std::string a = arch + ".";
  ModelConfig c;
  c.dim = md.integer(a + "embedding_length");
  c.hidden_dim = md.integer(a + "feed_forward_length");
  c.n_layers = md.integer(a + "block_count");
  c.n_heads = md.integer(a + "attention.head_count");
  c.n_kv_heads = md.integer(a + "attention.head_count_kv", c.n_heads);
  c.max_seq_len = md.integer(a + "context_length");
  LATTE_REQUIRE(c.n_heads > 0, ErrorCode::bad_file, path, ": ", a, "attention.head_count is ", c.n_heads);
  c.head_dim = md.integer(a + "attention.key_length", c.dim / c.n_heads);
  const int64_t value_length = md.integer(a + "attention.value_length", c.head_dim);
  LATTE_REQUIRE(value_length == c.head_dim, ErrorCode::unsupported, path, ": ", a, "attention.value_length ",
                value_length, " differs from the key length ", c.head_dim);
  const int64_t rope_dims = md.integer(a + "rope.dimension_count", c.head_dim);
  LATTE_REQUIRE(rope_dims == c.head_dim, ErrorCode::unsupported, path, ": ", a, "rope.dimension_count ", rope_dims,
                " is not the head size ", c.head_dim, " (partial RoPE is not supported)");
  const std::string scaling = md.string(a + "rope.scaling.type", "none");
  LATTE_REQUIRE(scaling == "none", ErrorCode::unsupported, path, ": ", a, "rope.scaling.type \"", scaling,
                "\" is not supported");
  c.rope_theta = float(md.real(a + "rope.freq_base", 10000.0));
  c.norm_eps = float(md.real(a + "attention.layer_norm_rms_epsilon", 1e-5));
  // llama.cpp's converter permutes q/k rows into Meta's pairing.
  c.rope_layout = RopeLayout::interleaved;

  const auto* tokens = md.array("tokenizer.ggml.tokens", {STRING});
  int64_t vocab = md.integer(a + "vocab_size", tokens ? int64_t(tokens->size()) : -1);
  if (vocab < 0) {
    for (const TensorInfo& t : infos)
      if (t.name == "token_embd.weight" && t.ne.size() == 2) vocab = int64_t(t.ne[1]);
  }
  LATTE_REQUIRE(vocab > 0, ErrorCode::bad_file, path, ": no vocabulary size (", a,
                "vocab_size, tokenizer.ggml.tokens and token_embd.weight are all missing)");
  c.vocab_size = vocab;
  c.tied_embeddings = std::none_of(infos.begin(), infos.end(), [](const TensorInfo& t) { return t.name == "output.weight"; });
  c.bos_id = int32_t(md.integer("tokenizer.ggml.bos_token_id", -1));
  c.eos_id = int32_t(md.integer("tokenizer.ggml.eos_token_id", -1));
  c.validate(path);
  return c;
}

std::unique_ptr<Tokenizer> tokenizer_from_metadata(const Metadata& md, const std::string& path) {
  const std::string model = md.string("tokenizer.ggml.model", "");
  if (model != "gpt2" && model != "llama") return nullptr;  // no vocabulary, or one Latte cannot run
  BpeVocab v;
  v.kind = model == "gpt2" ? BpeVocab::Kind::byte_level : BpeVocab::Kind::sentencepiece;
  const auto* tokens = md.array("tokenizer.ggml.tokens", {STRING});
  LATTE_REQUIRE(tokens && !tokens->empty(), ErrorCode::bad_file, path, ": tokenizer.ggml.model is \"", model,
                "\" but tokenizer.ggml.tokens is missing");
  v.tokens.reserve(tokens->size());
  for (const Value& t : *tokens) v.tokens.push_back(t.s);
  const size_t n = v.tokens.size();
  if (const auto* scores = md.array("tokenizer.ggml.scores", {F32, F64})) {
    LATTE_REQUIRE(scores->size() == n, ErrorCode::bad_file, path, ": tokenizer.ggml.scores has ", scores->size(),
                  " entries for ", n, " tokens");
    for (const Value& s : *scores) v.scores.push_back(float(s.f));
  }
  if (const auto* types = md.array("tokenizer.ggml.token_type", {I32, U32, I8, U8, I16, U16, I64, U64})) {
    LATTE_REQUIRE(types->size() == n, ErrorCode::bad_file, path, ": tokenizer.ggml.token_type has ", types->size(),
                  " entries for ", n, " tokens");
    for (size_t k = 0; k < n; ++k) {
      const int32_t t = int32_t((*types)[k].i);
      v.token_types.push_back(t);
      if (t == 3 || t == 4) v.special_tokens.push_back(v.tokens[k]);  // control, user defined
    }
  }
  if (const auto* merges = md.array("tokenizer.ggml.merges", {STRING})) {
    v.merges.reserve(merges->size());
    for (size_t k = 0; k < merges->size(); ++k) {
      const std::string& m = (*merges)[k].s;
      // Byte-level pieces never hold a literal space (it is "Ġ"), so the first space separates.
      const size_t sp = m.find(' ', 1);
      LATTE_REQUIRE(sp != std::string::npos, ErrorCode::bad_file, path, ": tokenizer.ggml.merges entry ", k, " \"", m,
                    "\" is not two pieces separated by a space");
      v.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
  }
  LATTE_REQUIRE(v.kind == BpeVocab::Kind::sentencepiece || !v.merges.empty(), ErrorCode::bad_file, path,
                ": tokenizer.ggml.model is gpt2 but tokenizer.ggml.merges is missing");
  auto id = [&](const char* key) {
    const int64_t x = md.integer(key, -1);
    LATTE_REQUIRE(x >= -1 && x < int64_t(n), ErrorCode::bad_file, path, ": ", key, " ", x,
                  " is outside the vocabulary of ", n);
    return int32_t(x);
  };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  // llama.cpp's defaults when the keys are absent: SentencePiece vocabularies add BOS and the
  // dummy prefix, byte-level ones neither.
  const bool spm = v.kind == BpeVocab::Kind::sentencepiece;
  v.add_bos = md.boolean("tokenizer.ggml.add_bos_token", spm);
  v.add_space_prefix = md.boolean("tokenizer.ggml.add_space_prefix", spm);
  v.pre = md.string("tokenizer.ggml.pre", "default");
  return make_bpe_tokenizer(std::move(v), path);
}

}  // namespace

Checkpoint load_gguf(const std::string& path, const LoadOptions& opts) {
  auto file = std::make_shared<MappedFile>(path);
  Reader r(*file);
  const uint32_t magic = r.get<uint32_t>("the magic");
  LATTE_REQUIRE(magic == kMagic, ErrorCode::bad_file, path, " is not a GGUF file (magic 0x", std::hex, magic,
                std::dec, ", expected \"GGUF\")");
  const uint32_t version = r.get<uint32_t>("the version");
  // A byte-swapped version means a big-endian file (s390x builds of llama.cpp).
  LATTE_REQUIRE((version & 0xffff) != 0, ErrorCode::unsupported, path,
                ": big-endian GGUF files are not supported");
  LATTE_REQUIRE(version == 2 || version == 3, ErrorCode::unsupported, path, ": GGUF version ", version,
                " is not supported (only 2 and 3)");
  const uint64_t n_tensors = r.get<uint64_t>("the tensor count");
  const uint64_t n_kv = r.get<uint64_t>("the metadata count");
  // Each entry takes well over one byte; larger counts are corrupt.
  r.need(n_tensors, "the tensor infos");
  r.need(n_kv, "the metadata");

  Metadata md(path);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.str(str_cat("metadata key #", k));
    const uint32_t type = r.get<uint32_t>(str_cat("the type of metadata ", key));
    Value v = r.value(type, str_cat("metadata ", key));
    LATTE_REQUIRE(!md.kv.count(key), ErrorCode::bad_file, path, ": metadata key ", key, " appears twice");
    md.kv.emplace(std::move(key), std::move(v));
  }
  const int64_t alignment = md.integer("general.alignment", 32);
  LATTE_REQUIRE(alignment > 0 && (alignment & (alignment - 1)) == 0, ErrorCode::bad_file, path,
                ": general.alignment ", alignment, " is not a power of two");

  std::vector<TensorInfo> infos(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo& t = infos[k];
    t.name = r.str(str_cat("tensor info #", k));
    const std::string what = str_cat("tensor info of ", t.name);
    const uint32_t nd = r.get<uint32_t>(what);
    LATTE_REQUIRE(nd >= 1 && nd <= kMaxDims, ErrorCode::bad_file, "tensor ", t.name, " in ", path, " has ", nd,
                  " dimensions (1 to ", kMaxDims, " allowed)");
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(r.get<uint64_t>(what));
    t.type = r.get<uint32_t>(what);
    t.offset = r.get<uint64_t>(what);
  }
  const uint64_t data_start = (r.pos() + uint64_t(alignment) - 1) / uint64_t(alignment) * uint64_t(alignment);
  const uint64_t data_bytes = file->size() >= data_start ? file->size() - data_start : 0;

  // Types and sizes first, so an unsupported type is reported as such rather than as a bad size.
  for (TensorInfo& t : infos) {
    int64_t block_elems;
    size_t block_bytes;
    LATTE_REQUIRE(gguf::type_layout(t.type, &block_elems, &block_bytes), ErrorCode::unsupported, "tensor ", t.name,
                  " in ", path, " has GGUF type ", gguf::type_name(t.type),
                  ", not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 only)");
    unsigned __int128 numel = 1;
    for (uint64_t d : t.ne) {
      numel *= d;
      LATTE_REQUIRE(d > 0 && numel < ((unsigned __int128)1 << 60), ErrorCode::bad_file, "tensor ", t.name, " in ",
                    path, " has an invalid dimension ", d);
    }
    LATTE_REQUIRE(t.ne[0] % uint64_t(block_elems) == 0, ErrorCode::bad_file, "tensor ", t.name, " in ", path,
                  ": row length ", t.ne[0], " is not a multiple of the ", gguf::type_name(t.type), " block size ",
                  block_elems);
    t.bytes = uint64_t(numel / uint64_t(block_elems)) * block_bytes;
    LATTE_REQUIRE(t.offset % uint64_t(alignment) == 0, ErrorCode::bad_file, "tensor ", t.name, " in ", path,
                  ": data offset ", t.offset, " is not a multiple of the alignment ", alignment);
    if (t.offset > data_bytes || t.bytes > data_bytes - t.offset)
      fail(ErrorCode::bad_file, path, " is truncated: tensor ", t.name, " needs bytes [", t.offset, ", ",
           t.offset + t.bytes, ") of the data section starting at byte ", data_start, ", the file has ",
           file->size(), " bytes");
  }
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : infos) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k)
    LATTE_REQUIRE(by_offset[k]->offset >= by_offset[k - 1]->offset + by_offset[k - 1]->bytes, ErrorCode::bad_file,
                  "tensor ", by_offset[k]->name, " in ", path, " overlaps tensor ", by_offset[k - 1]->name);

  Checkpoint ck;
  ck.format = "gguf";
  ck.config = config_from_metadata(md, infos, path);
  if (opts.config_only) return ck;  // before any tensor is decoded
  ck.tensors.origin = path;
  std::shared_ptr<void> keep = file;
  auto* data = const_cast<uint8_t*>(file->data()) + data_start;
  for (const TensorInfo& t : infos) {
    Shape shape(t.ne.rbegin(), t.ne.rend());  // ggml lists innermost first
    const std::string name = hf_name(t.name);
    LATTE_REQUIRE(name != "rope_freqs.weight", ErrorCode::unsupported, path,
                  ": tensor rope_freqs.weight (Llama 3 RoPE scaling) is not supported");
    LATTE_REQUIRE(!ck.tensors.has(name), ErrorCode::bad_file, "tensor ", t.name, " appears twice in ", path);
    uint8_t* p = data + t.offset;
    Tensor tensor;
    if (t.type == gguf::F32 && reinterpret_cast<uintptr_t>(p) % 4 == 0) {
      tensor = Tensor::borrow(p, shape, DType::f32, Device::cpu(), keep);
    } else if (t.type == gguf::Q8_0 || t.type == gguf::Q4_0 || t.type == gguf::Q4_1) {
      // Kept quantized: a view of the file's blocks (packed, no alignment needed), read by the
      // CPU quantized kernels; Tensor::to(DType::f32) dequantizes where f32 is needed.
      const DType bt = t.type == gguf::Q8_0 ? DType::q8_0 : t.type == gguf::Q4_0 ? DType::q4_0 : DType::q4_1;
      tensor = Tensor::borrow(p, shape, bt, Device::cpu(), keep);
    } else {
      tensor = Tensor::empty(shape, DType::f32);
      gguf::dequantize(t.type, p, tensor.f32(), tensor.numel());
    }
    ck.tensors.put(name, std::move(tensor), path);
  }
  check_model_tensors(ck.config, ck.tensors);
  if (opts.check_finite) ck.tensors.check_all_finite();
  ck.tokenizer = tokenizer_from_metadata(md, path);
  return ck;
}

}  // namespace latte
