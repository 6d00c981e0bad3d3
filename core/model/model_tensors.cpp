#include "core/model/model_tensors.h"

#include <set>

namespace latte {

std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, Shape>> out;
  out.emplace_back("model.embed_tokens.weight", Shape{c.vocab_size, c.dim});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = str_cat("model.layers.", i, ".");
    out.emplace_back(p + "input_layernorm.weight", Shape{c.dim});
    out.emplace_back(p + "self_attn.q_proj.weight", Shape{c.q_dim(), c.dim});
    if (c.is_mla()) {
      out.emplace_back(p + "self_attn.kv_a_proj.weight", Shape{c.kv_lora_rank(), c.dim});
      out.emplace_back(p + "self_attn.k_rope_proj.weight", Shape{c.n_kv_heads * c.rope_dim(), c.dim});
      out.emplace_back(p + "self_attn.k_b_proj.weight", Shape{c.n_kv_heads * c.nope_dim(), c.kv_lora_rank()});
      out.emplace_back(p + "self_attn.v_b_proj.weight", Shape{c.kv_dim(), c.kv_lora_rank()});
    } else {
      out.emplace_back(p + "self_attn.k_proj.weight", Shape{c.kv_dim(), c.dim});
      out.emplace_back(p + "self_attn.v_proj.weight", Shape{c.kv_dim(), c.dim});
    }
    out.emplace_back(p + "self_attn.o_proj.weight", Shape{c.dim, c.q_dim()});
    out.emplace_back(p + "post_attention_layernorm.weight", Shape{c.dim});
    out.emplace_back(p + "mlp.gate_proj.weight", Shape{c.hidden_dim, c.dim});
    out.emplace_back(p + "mlp.up_proj.weight", Shape{c.hidden_dim, c.dim});
    out.emplace_back(p + "mlp.down_proj.weight", Shape{c.dim, c.hidden_dim});
  }
  out.emplace_back("model.norm.weight", Shape{c.dim});
  if (!c.tied_embeddings) out.emplace_back("lm_head.weight", Shape{c.vocab_size, c.dim});
  return out;
}

TpLayout tp_layout(const ModelConfig& c, int64_t rank, int64_t size) {
  LATTE_REQUIRE(size >= 1 && rank >= 0 && rank < size, ErrorCode::invalid_argument, "tensor parallel rank ", rank,
                " of ", size, " is out of range");
  auto need = [&](int64_t n, const char* what) {
    LATTE_REQUIRE(n % size == 0, ErrorCode::invalid_argument, "--tp ", size, " does not divide ", what, " (", n, ")");
  };
  need(c.n_heads, "n_heads");
  need(c.hidden_dim, "hidden_dim");
  need(c.vocab_size, "vocab_size");
  TpLayout t;
  t.rank = rank;
  t.size = size;
  t.heads = c.n_heads / size;
  t.heads0 = rank * t.heads;
  if (c.n_kv_heads % size == 0) {
    t.kv_heads = c.n_kv_heads / size;
    t.kv_heads0 = rank * t.kv_heads;
  } else {
    LATTE_REQUIRE(size % c.n_kv_heads == 0, ErrorCode::invalid_argument, "--tp ", size,
                  " neither divides nor is a multiple of n_kv_heads (", c.n_kv_heads, ")");
    t.kv_heads = 1;
    t.kv_heads0 = t.heads0 / (c.n_heads / c.n_kv_heads);
    t.kv_replicated = true;
  }
  t.hidden = c.hidden_dim / size;
  t.hidden0 = rank * t.hidden;
  t.vocab = c.vocab_size / size;
  t.vocab0 = rank * t.vocab;
  return t;
}

TensorSlice tensor_slice(const ModelConfig& c, const TpLayout& tp, const std::string& name, const Shape& shape) {
  auto leaf_is = [&](const char* leaf) {
    const std::string l(leaf);
    return name.size() >= l.size() && name.compare(name.size() - l.size(), l.size(), l) == 0;
  };
  auto rows = [&](int64_t begin, int64_t count) { return TensorSlice{TpSplit::rows, begin, count}; };
  if (leaf_is("embed_tokens.weight") || name == "lm_head.weight") return rows(tp.vocab0, tp.vocab);
  if (leaf_is("q_proj.weight")) return rows(tp.heads0 * c.head_dim, tp.heads * c.head_dim);
  if (leaf_is("k_proj.weight") || leaf_is("v_proj.weight") || leaf_is("v_b_proj.weight"))
    return rows(tp.kv_heads0 * c.head_dim, tp.kv_heads * c.head_dim);
  if (leaf_is("k_rope_proj.weight")) return rows(tp.kv_heads0 * c.rope_dim(), tp.kv_heads * c.rope_dim());
  if (leaf_is("k_b_proj.weight")) return rows(tp.kv_heads0 * c.nope_dim(), tp.kv_heads * c.nope_dim());
  if (leaf_is("gate_proj.weight") || leaf_is("up_proj.weight")) return rows(tp.hidden0, tp.hidden);
  if (leaf_is("o_proj.weight")) return TensorSlice{TpSplit::cols, tp.heads0 * c.head_dim, tp.heads * c.head_dim};
  if (leaf_is("down_proj.weight")) return TensorSlice{TpSplit::cols, tp.hidden0, tp.hidden};
  return TensorSlice{TpSplit::replicated, 0, shape.empty() ? 0 : shape[0]};  // norms, kv_a_proj (W_dkv)
}

std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c, const TpLayout& tp) {
  auto out = model_tensor_shapes(c);
  for (auto& [name, shape] : out) {
    TensorSlice s = tensor_slice(c, tp, name, shape);
    if (s.split == TpSplit::rows) shape[0] = s.count;
    if (s.split == TpSplit::cols) shape[1] = s.count;
  }
  return out;
}

TensorStore shard_store(const ModelConfig& c, const TpLayout& tp, const TensorStore& full) {
  TensorStore local;
  local.origin = full.origin;
  for (const auto& [name, shape] : model_tensor_shapes(c)) {
    const Tensor& t = full.get(name, shape);
    TensorSlice s = tensor_slice(c, tp, name, shape);
    Tensor part;
    if (s.split == TpSplit::rows) {
      part = t.slice(s.begin, s.begin + s.count);  // a contiguous view: no copy (TP 1 keeps the file's tensors)
    } else if (s.split == TpSplit::cols) {
      part = t.narrow(1, s.begin, s.begin + s.count).clone();
    } else {
      part = t;
    }
    local.put(name, part, full.file_of(name));
  }
  return local;
}

TensorStore merge_shards(const ModelConfig& c, const std::vector<TensorStore>& ranks) {
  const int64_t n = int64_t(ranks.size());
  LATTE_REQUIRE(n >= 1, ErrorCode::invalid_argument, "merge_shards: no ranks");
  std::vector<TpLayout> layouts;
  for (int64_t r = 0; r < n; ++r) layouts.push_back(tp_layout(c, r, n));
  TensorStore full;
  full.origin = ranks[0].origin;
  for (const auto& [name, shape] : model_tensor_shapes(c)) {
    Tensor out = Tensor::empty(shape, DType::f32);
    std::string file;
    for (int64_t r = 0; r < n; ++r) {
      const TensorSlice s = tensor_slice(c, layouts[size_t(r)], name, shape);
      const Tensor& part = ranks[size_t(r)].get(name);
      file = ranks[size_t(r)].file_of(name);
      if (s.split == TpSplit::replicated) {
        if (r == 0) out.copy_from(part);
        continue;
      }
      Tensor dst = s.split == TpSplit::rows ? out.slice(s.begin, s.begin + s.count) : out.narrow(1, s.begin, s.begin + s.count);
      LATTE_REQUIRE(part.shape() == dst.shape(), ErrorCode::bad_file, "merge_shards: ", name, " from rank ", r, " in ",
                    file, " has shape ", shape_str(part.shape()), ", expected ", shape_str(dst.shape()));
      dst.copy_from(part);  // ranks sharing a replicated KV head write the same rows again
    }
    full.put(name, out, file);
  }
  return full;
}

void check_model_tensors(const ModelConfig& c, const TensorStore& tensors) {
  const auto expected = model_tensor_shapes(c);
  std::set<std::string> names;
  for (const auto& [name, shape] : expected) {
    names.insert(name);
    LATTE_REQUIRE(tensors.has(name), ErrorCode::bad_file, "missing tensor ", name, " in ", tensors.origin,
                  " (expected shape ", shape_str(shape), ")");
    const Tensor& t = tensors.get(name, shape);  // throws bad_file naming tensor, file and shapes
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::internal, "tensor ", name, " from ", tensors.file_of(name),
                  " is not contiguous");
  }
  for (const auto& [name, entry] : tensors.entries()) {
    if (names.count(name)) continue;
    if (name == "lm_head.weight" && c.tied_embeddings)
      fail(ErrorCode::bad_file, "unexpected tensor lm_head.weight in ", entry.file,
           ": the config says tie_word_embeddings = true");
    fail(ErrorCode::bad_file, "unexpected tensor ", name, " in ", entry.file, " (not part of a ", c.architecture,
         " model with ", c.n_layers, " layers)");
  }
}

}  // namespace latte
