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
