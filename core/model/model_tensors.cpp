#include "core/model/model_tensors.h"

#include <set>

namespace latte {

namespace {

const std::string kLayerPrefix = "model.layers.";

// The rows of one layer (name without the "model.layers.N." prefix), in file order.
std::vector<ModelTensor> layer_rows(const ModelConfig& c) {
  const int64_t D = c.dim, L = c.kv_lora_rank(), hd = c.head_dim;
  auto row = [](const char* leaf, Shape shape, TpSplit split, SplitUnit unit, int64_t width,
                Tensor LayerWeights::*field) {
    return ModelTensor{leaf, std::move(shape), split, unit, width, 0, field, nullptr};
  };
  const TpSplit rep = TpSplit::replicated, rows = TpSplit::rows, cols = TpSplit::cols;
  std::vector<ModelTensor> r;
  r.push_back(row("input_layernorm.weight", {D}, rep, SplitUnit::none, 1, &LayerWeights::attn_norm));
  r.push_back(row("self_attn.q_proj.weight", {c.q_dim(), D}, rows, SplitUnit::heads, c.qk_head_dim(),
                  &LayerWeights::wq));
  if (c.is_mla()) {
    r.push_back(row("self_attn.kv_a_proj.weight", {L, D}, rep, SplitUnit::none, 1, &LayerWeights::w_dkv));
    if (c.shared_rope()) {
      // One RoPE key for every query head: every rank needs all of it (DeepSeek's wkv_a rope part).
      r.push_back(row("self_attn.k_rope_proj.weight", {c.rope_dim(), D}, rep, SplitUnit::none, 1, &LayerWeights::w_kr));
    } else {
      r.push_back(row("self_attn.k_rope_proj.weight", {c.n_kv_heads * c.rope_dim(), D}, rows, SplitUnit::kv_heads,
                      c.rope_dim(), &LayerWeights::w_kr));
    }
    r.push_back(row("self_attn.k_b_proj.weight", {c.n_kv_heads * c.nope_dim(), L}, rows, SplitUnit::kv_heads,
                    c.nope_dim(), &LayerWeights::w_uk));
    r.push_back(row("self_attn.v_b_proj.weight", {c.kv_dim(), L}, rows, SplitUnit::kv_heads, hd, &LayerWeights::w_uv));
  } else {
    r.push_back(row("self_attn.k_proj.weight", {c.kv_dim(), D}, rows, SplitUnit::kv_heads, hd, &LayerWeights::wk));
    r.push_back(row("self_attn.v_proj.weight", {c.kv_dim(), D}, rows, SplitUnit::kv_heads, hd, &LayerWeights::wv));
  }
  r.push_back(row("self_attn.o_proj.weight", {D, c.o_dim()}, cols, SplitUnit::heads, hd, &LayerWeights::wo));
  r.push_back(row("post_attention_layernorm.weight", {D}, rep, SplitUnit::none, 1, &LayerWeights::ffn_norm));
  r.push_back(row("mlp.gate_proj.weight", {c.hidden_dim, D}, rows, SplitUnit::hidden, 1, &LayerWeights::w_gate));
  r.push_back(row("mlp.up_proj.weight", {c.hidden_dim, D}, rows, SplitUnit::hidden, 1, &LayerWeights::w_up));
  r.push_back(row("mlp.down_proj.weight", {D, c.hidden_dim}, cols, SplitUnit::hidden, 1, &LayerWeights::w_down));
  return r;
}

ModelTensor global_row(const char* name, Shape shape, TpSplit split, SplitUnit unit, Tensor ModelWeights::*field) {
  return ModelTensor{name, std::move(shape), split, unit, 1, -1, nullptr, field};
}

ModelTensor embed_row(const ModelConfig& c) {
  return global_row("model.embed_tokens.weight", {c.vocab_size, c.dim}, TpSplit::rows, SplitUnit::vocab,
                    &ModelWeights::tok_embeddings);
}
ModelTensor norm_row(const ModelConfig& c) {
  return global_row("model.norm.weight", {c.dim}, TpSplit::replicated, SplitUnit::none, &ModelWeights::norm);
}
ModelTensor lm_head_row(const ModelConfig& c) {
  return global_row("lm_head.weight", {c.vocab_size, c.dim}, TpSplit::rows, SplitUnit::vocab, &ModelWeights::lm_head);
}

}  // namespace

TensorSlice ModelTensor::slice(const TpLayout& tp) const {
  if (split == TpSplit::replicated) return TensorSlice{TpSplit::replicated, 0, shape.empty() ? 0 : shape[0]};
  int64_t begin = 0, count = 0;
  switch (unit) {
    case SplitUnit::heads: begin = tp.heads0, count = tp.heads; break;
    case SplitUnit::kv_heads: begin = tp.kv_heads0, count = tp.kv_heads; break;
    case SplitUnit::hidden: begin = tp.hidden0, count = tp.hidden; break;
    case SplitUnit::vocab: begin = tp.vocab0, count = tp.vocab; break;
    case SplitUnit::none: fail(ErrorCode::internal, "tensor ", name, " splits without a unit");
  }
  return TensorSlice{split, begin * unit_width, count * unit_width};
}

Shape ModelTensor::local_shape(const TpLayout& tp) const {
  Shape s = shape;
  const TensorSlice sl = slice(tp);
  if (sl.split == TpSplit::rows) s[0] = sl.count;
  if (sl.split == TpSplit::cols) s[1] = sl.count;
  return s;
}

Tensor& ModelTensor::in(ModelWeights& w) const {
  if (model_field) return w.*model_field;
  LATTE_ASSERT(layer >= 0 && layer < int64_t(w.layers.size()));
  return w.layers[size_t(layer)].*layer_field;
}

std::vector<ModelTensor> model_tensors(const ModelConfig& c) {
  std::vector<ModelTensor> out;
  out.push_back(embed_row(c));
  const std::vector<ModelTensor> rows = layer_rows(c);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string prefix = str_cat(kLayerPrefix, i, ".");
    for (ModelTensor t : rows) {
      t.name = prefix + t.name;
      t.layer = i;
      out.push_back(std::move(t));
    }
  }
  out.push_back(norm_row(c));
  if (!c.tied_embeddings) out.push_back(lm_head_row(c));
  return out;
}

ModelTensor find_model_tensor(const ModelConfig& c, const std::string& name) {
  if (name == "model.embed_tokens.weight") return embed_row(c);
  if (name == "model.norm.weight") return norm_row(c);
  if (name == "lm_head.weight" && !c.tied_embeddings) return lm_head_row(c);
  if (name.rfind(kLayerPrefix, 0) == 0) {
    const size_t dot = name.find('.', kLayerPrefix.size());
    const std::string index = name.substr(kLayerPrefix.size(), dot - kLayerPrefix.size());
    const bool numeric = dot != std::string::npos && !index.empty() && index.size() < 10 &&
                         index.find_first_not_of("0123456789") == std::string::npos;
    const int64_t layer = numeric ? std::stoll(index) : -1;
    if (layer >= 0 && layer < c.n_layers) {
      const std::string leaf = name.substr(dot + 1);
      for (ModelTensor t : layer_rows(c)) {
        if (t.name != leaf) continue;
        t.name = name;
        t.layer = layer;
        return t;
      }
    }
  }
  fail(ErrorCode::bad_file, "tensor ", name, " is not part of a ", c.architecture, " model with ", c.n_layers,
       " layers");
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

std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const ModelTensor& t : model_tensors(c)) out.emplace_back(t.name, t.shape);
  return out;
}

std::vector<std::pair<std::string, Shape>> model_tensor_shapes(const ModelConfig& c, const TpLayout& tp) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const ModelTensor& t : model_tensors(c)) out.emplace_back(t.name, t.local_shape(tp));
  return out;
}

TensorSlice tensor_slice(const ModelConfig& c, const TpLayout& tp, const std::string& name, const Shape&) {
  return find_model_tensor(c, name).slice(tp);
}

// Stores are host memory (files and their copies): shard_store and merge_shards copy on the host.
TensorStore shard_store(const ModelConfig& c, const TpLayout& tp, const TensorStore& full) {
  TensorStore local;
  local.origin = full.origin;
  for (const ModelTensor& mt : model_tensors(c)) {
    const Tensor& t = full.get(mt.name, mt.shape);
    const TensorSlice s = mt.slice(tp);
    Tensor part;
    if (s.split == TpSplit::rows) {
      part = t.slice(s.begin, s.begin + s.count);  // a contiguous view: no copy (TP 1 keeps the file's tensors)
    } else if (s.split == TpSplit::cols) {
      part = t.narrow(1, s.begin, s.begin + s.count).clone();
    } else {
      part = t;
    }
    local.put(mt.name, part, full.file_of(mt.name));
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
  for (const ModelTensor& mt : model_tensors(c)) {
    Tensor out = Tensor::empty(mt.shape, DType::f32);
    std::string file;
    for (int64_t r = 0; r < n; ++r) {
      const TensorSlice s = mt.slice(layouts[size_t(r)]);
      const Tensor& part = ranks[size_t(r)].get(mt.name);
      file = ranks[size_t(r)].file_of(mt.name);
      if (s.split == TpSplit::replicated) {
        if (r == 0) out.copy_from(part);
        continue;
      }
      Tensor dst = s.split == TpSplit::rows ? out.slice(s.begin, s.begin + s.count) : out.narrow(1, s.begin, s.begin + s.count);
      LATTE_REQUIRE(part.shape() == dst.shape(), ErrorCode::bad_file, "merge_shards: ", mt.name, " from rank ", r,
                    " in ", file, " has shape ", shape_str(part.shape()), ", expected ", shape_str(dst.shape()));
      dst.copy_from(part);  // ranks sharing a replicated KV head write the same rows again
    }
    full.put(mt.name, out, file);
  }
  return full;
}

void check_model_tensors(const ModelConfig& c, const TensorStore& tensors) {
  // The layer count comes from the file's own config, so it can be anything: a store with fewer
  // tensors than that many layers need is missing one, and finding which must not first list the
  // tensors of every claimed layer (a GGUF block_count of 83,886,081 ran out of memory after minutes;
  // found by tests/fuzz/gguf_fuzz). The search stops within the store's size.
  const std::vector<ModelTensor> rows = layer_rows(c);
  if (uint64_t(c.n_layers) > tensors.entries().size() / rows.size()) {
    for (int64_t i = 0;; ++i)
      for (const ModelTensor& row : rows)
        if (const std::string name = str_cat(kLayerPrefix, i, ".", row.name); !tensors.has(name))
          fail(ErrorCode::bad_file, "missing tensor ", name, " in ", tensors.origin, " (the config has ", c.n_layers,
               " layers, the file holds ", tensors.entries().size(), " tensors)");
  }
  std::set<std::string> names;
  for (const ModelTensor& mt : model_tensors(c)) {
    names.insert(mt.name);
    LATTE_REQUIRE(tensors.has(mt.name), ErrorCode::bad_file, "missing tensor ", mt.name, " in ", tensors.origin,
                  " (expected shape ", shape_str(mt.shape), ")");
    const Tensor& t = tensors.get(mt.name, mt.shape);  // throws bad_file naming tensor, file and shapes
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::internal, "tensor ", mt.name, " from ", tensors.file_of(mt.name),
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
