#include "core/checkpoint/deepseek_layout.h"

#include <cstring>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_integer.h"
#include "core/model/model_tensors.h"

namespace latte {

namespace {

using nlohmann::json;

std::string layer_prefix(int64_t l) { return str_cat("model.layers.", l, ".self_attn."); }

// dst rows [at, at + n) = src rows [from, from + n), as f32.
void copy_rows(Tensor& dst, int64_t at, const Tensor& src, int64_t from, int64_t n) {
  Tensor d = dst.slice(at, at + n);
  d.copy_from(src.slice(from, from + n));
}

bool same_rows(const Tensor& a, int64_t at, const Tensor& b, int64_t from, int64_t n) {
  const std::vector<float> x = a.slice(at, at + n).to_vector(), y = b.slice(from, from + n).to_vector();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

void require_shared(const ModelConfig& c) {
  LATTE_REQUIRE(c.shared_rope(), ErrorCode::invalid_argument,
                "the DeepSeek-V3 layout has one shared RoPE key: this model ",
                c.is_mla() ? "keeps a RoPE key per KV head (convert with --rope-mode rorope)" : "is not MLA");
}

}  // namespace

std::string deepseek_config_json(const ModelConfig& c) {
  require_shared(c);
  json j = json::parse(config_to_json_text(c));
  for (const char* k : {"mla_rope_pairs", "mla_kv_rank_per_head", "mla_shared_rope_dim", "mla_shared_rope_freqs",
                        "mla_provenance", "head_dim"})
    j.erase(k);
  j["architectures"] = json::array({"DeepseekV3ForCausalLM"});
  j["model_type"] = "deepseek_v3";
  j["num_key_value_heads"] = c.n_heads;
  j["kv_lora_rank"] = c.kv_lora_rank();
  j["q_lora_rank"] = nullptr;
  j["qk_rope_head_dim"] = c.shared_rope_dim;
  j["qk_nope_head_dim"] = c.head_dim;
  j["v_head_dim"] = c.head_dim;
  j["n_routed_experts"] = nullptr;
  j["n_shared_experts"] = nullptr;
  j["first_k_dense_replace"] = c.n_layers;  // every layer dense
  // What Latte needs to read it back as the same function (deepseek_layout.h says why).
  j["latte_kv_groups"] = c.n_kv_heads;
  j["latte_rope_freqs"] = c.shared_rope_freqs;
  j["latte_softmax_scale_dim"] = c.head_dim;
  j["latte_kv_a_layernorm"] = false;
  if (!c.mla_provenance.empty()) j["latte_mla_provenance"] = json::parse(c.mla_provenance);
  return j.dump(2) + "\n";
}

TensorStore to_deepseek_tensors(const ModelConfig& c, const TensorStore& latte) {
  require_shared(c);
  check_model_tensors(c, latte);
  const int64_t hd = c.head_dim, R = c.shared_rope_dim, qk = c.qk_head_dim(), L = c.kv_lora_rank(), D = c.dim;
  const int64_t G = c.n_heads / c.n_kv_heads;
  const std::string made = "latte export --format deepseek-v3";
  TensorStore out;
  out.origin = latte.origin;
  for (const auto& [name, e] : latte.entries())
    if (name.find(".self_attn.") == std::string::npos || name.ends_with("o_proj.weight")) out.put(name, e.tensor, e.file);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = layer_prefix(l);
    const Tensor& wq = latte.get(p + "q_proj.weight");
    Tensor q = Tensor::empty({c.n_heads * qk, D});
    for (int64_t h = 0; h < c.n_heads; ++h) {  // [rope | nope] -> [nope | rope]
      copy_rows(q, h * qk, wq, h * qk + R, hd);
      copy_rows(q, h * qk + hd, wq, h * qk, R);
    }
    out.put(p + "q_proj.weight", q, made);
    Tensor kv_a = Tensor::empty({L + R, D});
    copy_rows(kv_a, 0, latte.get(p + "kv_a_proj.weight"), 0, L);
    copy_rows(kv_a, L, latte.get(p + "k_rope_proj.weight"), 0, R);
    out.put(p + "kv_a_proj_with_mqa.weight", kv_a, made);
    out.put(p + "kv_a_layernorm.weight", Tensor::from_vector(std::vector<float>(size_t(L), 1.0f), {L}), made);
    const Tensor& k_b = latte.get(p + "k_b_proj.weight");
    const Tensor& v_b = latte.get(p + "v_b_proj.weight");
    Tensor kv_b = Tensor::empty({c.n_heads * 2 * hd, L});
    for (int64_t h = 0; h < c.n_heads; ++h) {  // each query head gets its KV group's up-projections
      copy_rows(kv_b, h * 2 * hd, k_b, (h / G) * hd, hd);
      copy_rows(kv_b, h * 2 * hd + hd, v_b, (h / G) * hd, hd);
    }
    out.put(p + "kv_b_proj.weight", kv_b, made);
  }
  return out;
}

bool is_deepseek_config(const std::string& config_json) {
  try {
    const json j = json::parse(config_json);
    return j.is_object() && j.value("model_type", "") == "deepseek_v3";
  } catch (const json::exception&) {
    return false;  // config_from_json_text names the parse error
  }
}

ModelConfig config_from_deepseek_json(const std::string& config_json, const std::string& source) {
  json j = json::parse(config_json);
  for (const char* k : {"latte_kv_groups", "latte_rope_freqs", "latte_softmax_scale_dim", "latte_kv_a_layernorm"})
    LATTE_REQUIRE(j.contains(k), ErrorCode::unsupported, source, ": a deepseek_v3 config without \"", k,
                  "\": Latte reads only the DeepSeek-layout folders latte export writes (no latent norm, "
                  "its own RoPE frequencies and score scale)");
  for (const char* k : {"q_lora_rank", "n_routed_experts"})
    LATTE_REQUIRE(!j.contains(k) || j[k].is_null(), ErrorCode::unsupported, source, ": ", k, " ", j[k].dump(),
                  " is not supported");
  auto integer = [&](const char* k) {
    const std::optional<int64_t> v = j.contains(k) ? json_integer<int64_t>(j[k]) : std::nullopt;
    LATTE_REQUIRE(v.has_value(), ErrorCode::bad_file, source, ": missing integer \"", k, "\"");
    return *v;
  };
  const int64_t hd = integer("v_head_dim"), groups = integer("latte_kv_groups"), rank = integer("kv_lora_rank");
  LATTE_REQUIRE(integer("qk_nope_head_dim") == hd && integer("latte_softmax_scale_dim") == hd, ErrorCode::bad_file, source,
                ": qk_nope_head_dim and latte_softmax_scale_dim must equal v_head_dim (", hd, ")");
  LATTE_REQUIRE(groups > 0 && rank % groups == 0, ErrorCode::bad_file, source, ": kv_lora_rank ", rank,
                " is not a multiple of latte_kv_groups ", groups);
  LATTE_REQUIRE(!j["latte_kv_a_layernorm"].get<bool>(), ErrorCode::unsupported, source,
                ": a latent RMSNorm (latte_kv_a_layernorm true) is not supported");
  // Latte's own keys, then its config reader (it validates everything else).
  j["model_type"] = "latte_mla";
  j["num_key_value_heads"] = groups;
  j["head_dim"] = hd;
  j["mla_kv_rank_per_head"] = rank / groups;
  j["mla_shared_rope_dim"] = integer("qk_rope_head_dim");
  j["mla_shared_rope_freqs"] = j["latte_rope_freqs"];
  if (j.contains("latte_mla_provenance")) j["mla_provenance"] = j["latte_mla_provenance"];
  for (const char* k : {"latte_kv_groups", "latte_rope_freqs", "latte_softmax_scale_dim", "latte_kv_a_layernorm",
                        "latte_mla_provenance", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                        "n_routed_experts", "n_shared_experts", "first_k_dense_replace"})
    j.erase(k);
  return config_from_json_text(j.dump(), source);
}

TensorStore from_deepseek_tensors(const ModelConfig& c, const TensorStore& ds) {
  require_shared(c);
  const int64_t hd = c.head_dim, R = c.shared_rope_dim, qk = c.qk_head_dim(), L = c.kv_lora_rank(), D = c.dim;
  const int64_t G = c.n_heads / c.n_kv_heads;
  TensorStore out;
  out.origin = ds.origin;
  for (const auto& [name, e] : ds.entries())
    if (name.find(".self_attn.") == std::string::npos || name.ends_with("o_proj.weight")) out.put(name, e.tensor, e.file);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = layer_prefix(l);
    const Tensor& wq = ds.get(p + "q_proj.weight", {c.n_heads * qk, D});
    Tensor q = Tensor::empty({c.n_heads * qk, D});
    for (int64_t h = 0; h < c.n_heads; ++h) {  // [nope | rope] -> [rope | nope]
      copy_rows(q, h * qk, wq, h * qk + hd, R);
      copy_rows(q, h * qk + R, wq, h * qk, hd);
    }
    out.put(p + "q_proj.weight", q, ds.file_of(p + "q_proj.weight"));
    const Tensor& kv_a = ds.get(p + "kv_a_proj_with_mqa.weight", {L + R, D});
    out.put(p + "kv_a_proj.weight", kv_a.slice(0, L), ds.file_of(p + "kv_a_proj_with_mqa.weight"));
    out.put(p + "k_rope_proj.weight", kv_a.slice(L, L + R), ds.file_of(p + "kv_a_proj_with_mqa.weight"));
    for (float x : ds.get(p + "kv_a_layernorm.weight", {L}).to_vector())
      LATTE_REQUIRE(x == 1.0f, ErrorCode::bad_file, "tensor ", p, "kv_a_layernorm.weight in ",
                    ds.file_of(p + "kv_a_layernorm.weight"), " is not all ones: Latte's latent has no norm");
    const Tensor& kv_b = ds.get(p + "kv_b_proj.weight", {c.n_heads * 2 * hd, L});
    Tensor k_b = Tensor::empty({c.n_kv_heads * hd, L}), v_b = Tensor::empty({c.n_kv_heads * hd, L});
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t g = h / G;
      if (h % G == 0) {
        copy_rows(k_b, g * hd, kv_b, h * 2 * hd, hd);
        copy_rows(v_b, g * hd, kv_b, h * 2 * hd + hd, hd);
        continue;
      }
      LATTE_REQUIRE(same_rows(kv_b, h * 2 * hd, k_b, g * hd, hd) && same_rows(kv_b, h * 2 * hd + hd, v_b, g * hd, hd),
                    ErrorCode::bad_file, "tensor ", p, "kv_b_proj.weight in ", ds.file_of(p + "kv_b_proj.weight"),
                    ": query head ", h, " does not repeat its KV group ", g, "'s up-projections (latte_kv_groups ",
                    c.n_kv_heads, ")");
    }
    out.put(p + "k_b_proj.weight", k_b, ds.file_of(p + "kv_b_proj.weight"));
    out.put(p + "v_b_proj.weight", v_b, ds.file_of(p + "kv_b_proj.weight"));
  }
  for (const auto& [name, e] : ds.entries()) {
    const bool known = name.find(".self_attn.") == std::string::npos || name.ends_with("o_proj.weight") ||
                       name.ends_with("q_proj.weight") || name.ends_with("kv_a_proj_with_mqa.weight") ||
                       name.ends_with("kv_a_layernorm.weight") || name.ends_with("kv_b_proj.weight");
    LATTE_REQUIRE(known, ErrorCode::bad_file, "unexpected tensor ", name, " in ", e.file, " (a DeepSeek-layout folder)");
  }
  return out;
}

}  // namespace latte
