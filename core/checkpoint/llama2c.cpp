// llama2.c legacy (version-0) checkpoints: a 7 x int32 header, then float32 arrays back to back
// (layout in shared/data/README.md). Every tensor is a view on the memory map.
#include <cstring>
#include <filesystem>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"

namespace latte {

namespace {

constexpr uint32_t kExportMagic = 0x616b3432;  // "ak42", llama2.c export.py --version 1/2

struct Array {
  std::string name;  // as the README names it, for size errors
  Shape shape;       // including the leading [n_layers] for per-layer arrays
  size_t offset = 0;
};

}  // namespace

Checkpoint load_llama2c(const std::string& path, const LoadOptions& opts) {
  auto file = std::make_shared<MappedFile>(path);
  const size_t size = file->size();
  LATTE_REQUIRE(size >= 8, ErrorCode::bad_file, path, " is ", size,
                " bytes, too short for a llama2.c checkpoint (header is 28 bytes)");
  uint32_t magic;
  std::memcpy(&magic, file->data(), 4);
  if (magic == kExportMagic) {
    int32_t version;
    std::memcpy(&version, file->data() + 4, 4);
    fail(ErrorCode::unsupported, path, " is a llama2.c version-", version,
         " export (magic \"ak42\"); only the legacy version-0 format is supported "
         "(re-export with llama2.c export.py --version 0)");
  }
  LATTE_REQUIRE(size >= 28, ErrorCode::bad_file, path, " is ", size,
                " bytes, too short for the 28-byte llama2.c header");
  int32_t h[7];
  std::memcpy(h, file->data(), sizeof h);

  ModelConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  // A negative vocab_size is llama2.c's flag for an unshared classifier stored at the end.
  c.tied_embeddings = h[5] > 0;
  c.vocab_size = h[5] < 0 ? -int64_t(h[5]) : int64_t(h[5]);
  c.max_seq_len = h[6];
  LATTE_REQUIRE(c.n_heads > 0 && c.dim > 0 && c.dim % c.n_heads == 0, ErrorCode::bad_file, path,
                ": header dim ", c.dim, " is not a positive multiple of n_heads ", c.n_heads,
                " (not a llama2.c checkpoint?)");
  c.head_dim = c.dim / c.n_heads;
  c.rope_layout = RopeLayout::interleaved;
  c.rope_theta = 10000.0f;  // hard-coded in run.c
  c.norm_eps = 1e-5f;       // hard-coded in run.c
  c.bos_id = 1;
  c.eos_id = 2;
  try {
    c.validate(path);
  } catch (const Error& e) {
    fail(ErrorCode::bad_file, e.what(), " (header ", h[0], " ", h[1], " ", h[2], " ", h[3], " ", h[4], " ",
         h[5], " ", h[6], ")");
  }

  const int64_t L = c.n_layers, D = c.dim, Hd = c.hidden_dim, hs = c.head_dim;
  std::vector<Array> arrays = {
      {"token_embedding_table", {c.vocab_size, D}},
      {"rms_att_weight", {L, D}},
      {"wq", {L, c.q_dim(), D}},
      {"wk", {L, c.kv_dim(), D}},
      {"wv", {L, c.kv_dim(), D}},
      {"wo", {L, D, c.q_dim()}},
      {"rms_ffn_weight", {L, D}},
      {"w1", {L, Hd, D}},
      {"w2", {L, D, Hd}},
      {"w3", {L, Hd, D}},
      {"rms_final_weight", {D}},
      {"freq_cis_real", {c.max_seq_len, hs / 2}},
      {"freq_cis_imag", {c.max_seq_len, hs / 2}},
  };
  if (!c.tied_embeddings) arrays.push_back({"wcls", {c.vocab_size, D}});

  // Header fields are int32, so a product of three of them fits in 128 bits but not always in 64.
  unsigned __int128 expected = 28;
  std::string first_missing;
  for (Array& a : arrays) {
    unsigned __int128 n = 4;
    for (int64_t d : a.shape) n *= uint64_t(d);
    a.offset = size_t(expected);
    if (first_missing.empty() && expected + n > size)
      first_missing = str_cat(a.name, " ", shape_str(a.shape), " at byte offset ", uint64_t(expected));
    expected += n;
  }
  auto expected_str = [&] {
    return expected > (unsigned __int128)UINT64_MAX ? std::string("more than 2^64") : str_cat(uint64_t(expected));
  };
  if (!first_missing.empty())
    fail(ErrorCode::bad_file, path, " is truncated: expected ", expected_str(), " bytes for header ", h[0], " ", h[1],
         " ", h[2], " ", h[3], " ", h[4], " ", h[5], " ", h[6], ", got ", size, "; first tensor that does not fit: ",
         first_missing);
  if (expected != size)
    fail(ErrorCode::bad_file, path, " has ", size - uint64_t(expected), " trailing bytes: expected ", expected_str(),
         " bytes for header ", h[0], " ", h[1], " ", h[2], " ", h[3], " ", h[4], " ", h[5], " ", h[6], ", got ", size,
         " (a version-0 export with a different header, or not a llama2.c checkpoint?)");

  Checkpoint ck;
  ck.config = c;
  ck.format = "llama2c";
  if (opts.config_only) return ck;
  ck.tensors.origin = path;
  std::shared_ptr<void> keep = file;
  // The map is read-only: writing through these views would fault, and nothing in Latte does.
  auto* base = const_cast<uint8_t*>(file->data());
  auto whole = [&](size_t k) { return Tensor::borrow(base + arrays[k].offset, arrays[k].shape, DType::f32, Device::cpu(), keep); };
  auto put_layers = [&](size_t k, const char* hf_suffix) {
    Tensor t = whole(k);
    for (int64_t i = 0; i < L; ++i)
      ck.tensors.put(str_cat("model.layers.", i, ".", hf_suffix), t.select(i), path);
  };
  ck.tensors.put("model.embed_tokens.weight", whole(0), path);
  put_layers(1, "input_layernorm.weight");
  put_layers(2, "self_attn.q_proj.weight");
  put_layers(3, "self_attn.k_proj.weight");
  put_layers(4, "self_attn.v_proj.weight");
  put_layers(5, "self_attn.o_proj.weight");
  put_layers(6, "post_attention_layernorm.weight");
  put_layers(7, "mlp.gate_proj.weight");
  put_layers(8, "mlp.down_proj.weight");
  put_layers(9, "mlp.up_proj.weight");
  ck.tensors.put("model.norm.weight", whole(10), path);
  if (!c.tied_embeddings) ck.tensors.put("lm_head.weight", whole(13), path);

  check_model_tensors(ck.config, ck.tensors);
  if (opts.check_finite) ck.tensors.check_all_finite();
  return ck;
}

}  // namespace latte
