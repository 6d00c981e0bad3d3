#include "core/model/config.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_integer.h"

namespace latte {

int64_t ModelConfig::parameter_count() const {
  // K/V projections: llama k, v [kv_dim, dim]; MLA W_kr [n_kv*2r, dim] (shared layout: [d_r, dim]),
  // W_dkv [D, dim], W_uk [n_kv*d_c, D], W_uv [n_kv*head_dim, D] (spec section 3.6).
  const int64_t kv_params = is_mla() ? dim * rope_key_heads(n_kv_heads) * rope_dim() + dim * kv_lora_rank() +
                                           kv_lora_rank() * n_kv_heads * nope_dim() + kv_lora_rank() * kv_dim()
                                     : 2 * dim * kv_dim();
  const int64_t per_layer = 2 * dim                              // input / post-attention RMSNorm
                            + dim * q_dim() + kv_params + o_dim() * dim  // q, k/v, o
                            + 3 * dim * hidden_dim;              // gate, up, down
  const int64_t embed = vocab_size * dim;
  return embed + n_layers * per_layer + dim + (tied_embeddings ? 0 : embed);
}

int64_t ModelConfig::kv_cache_elements_per_token() const {
  return is_mla() ? n_layers * (rope_key_heads(n_kv_heads) * rope_dim() + kv_lora_rank()) : 2 * n_layers * kv_dim();
}

void ModelConfig::validate(const std::string& source) const {
  auto bad = [&](auto&&... parts) {
    fail(ErrorCode::invalid_argument, "invalid model config in ", source, ": ", parts...);
  };
  if (architecture != "llama" && architecture != "mla")
    bad("architecture '", architecture, "' is not llama or mla");
  if (dim <= 0) bad("dim (hidden_size) is ", dim, ", must be positive");
  if (hidden_dim <= 0) bad("hidden_dim (intermediate_size) is ", hidden_dim, ", must be positive");
  if (n_layers <= 0) bad("n_layers (num_hidden_layers) is ", n_layers, ", must be positive");
  if (n_heads <= 0) bad("n_heads (num_attention_heads) is ", n_heads, ", must be positive");
  if (n_kv_heads <= 0) bad("n_kv_heads (num_key_value_heads) is ", n_kv_heads, ", must be positive");
  if (n_kv_heads > n_heads) bad("n_kv_heads (", n_kv_heads, ") exceeds n_heads (", n_heads, ")");
  if (n_heads % n_kv_heads != 0)
    bad("n_heads (", n_heads, ") is not a multiple of n_kv_heads (", n_kv_heads, ")");
  if (head_dim <= 0) bad("head_dim is ", head_dim, ", must be positive");
  // RoPE rotates pairs of features, in either layout.
  if (head_dim % 2 != 0) bad("head_dim (", head_dim, ") must be even for RoPE");
  if (vocab_size <= 0) bad("vocab_size is ", vocab_size, ", must be positive");
  if (max_seq_len <= 0) bad("max_seq_len (max_position_embeddings) is ", max_seq_len, ", must be positive");
  if (!(std::isfinite(rope_theta) && rope_theta > 0)) bad("rope_theta (", rope_theta, ") must be positive");
  if (!(std::isfinite(norm_eps) && norm_eps > 0)) bad("norm_eps (rms_norm_eps) (", norm_eps, ") must be positive");
  if (bos_id < -1 || bos_id >= vocab_size)
    bad("bos_id (bos_token_id) ", bos_id, " is outside the vocabulary of ", vocab_size);
  if (eos_id < -1 || eos_id >= vocab_size)
    bad("eos_id (eos_token_id) ", eos_id, " is outside the vocabulary of ", vocab_size);
  if (!is_mla()) return;
  if (shared_rope_dim < 0) bad("mla_shared_rope_dim (", shared_rope_dim, ") must not be negative");
  if (kv_rank_per_head <= 0) bad("mla_kv_rank_per_head (", kv_rank_per_head, ") must be positive");
  if (shared_rope()) {
    // RoPE rotates pairs; the frequencies are the source heads' (head_dim/2 of them).
    if (shared_rope_dim % 2 != 0) bad("mla_shared_rope_dim (", shared_rope_dim, ") must be even (RoPE pairs)");
    if (rope_pairs != 0)
      bad("mla_rope_pairs (", rope_pairs, ") must be 0 with a shared RoPE key (mla_shared_rope_dim ", shared_rope_dim, ")");
    if (!rope_freqs.empty()) bad("mla_rope_freqs must be absent with a shared RoPE key (mla_shared_rope_dim)");
    if (int64_t(shared_rope_freqs.size()) != n_layers)
      bad("mla_shared_rope_freqs has ", shared_rope_freqs.size(), " layers, expected ", n_layers);
    for (size_t l = 0; l < shared_rope_freqs.size(); ++l) {
      const auto& f = shared_rope_freqs[l];
      if (int64_t(f.size()) * 2 != shared_rope_dim)
        bad("mla_shared_rope_freqs[", l, "] has ", f.size(), " pairs, expected mla_shared_rope_dim/2 = ",
            shared_rope_dim / 2);
      for (int32_t i : f)
        if (i < 0 || i >= head_dim / 2)
          bad("mla_shared_rope_freqs[", l, "] holds frequency index ", i, ", outside [0, head_dim/2 = ", head_dim / 2, ")");
    }
    return;
  }
  if (!shared_rope_freqs.empty()) bad("mla_shared_rope_freqs needs mla_shared_rope_dim > 0");
  if (rope_pairs < 0 || 2 * rope_pairs > head_dim)
    bad("mla_rope_pairs (", rope_pairs, ") must be in [0, head_dim/2 = ", head_dim / 2, "]");
  if (int64_t(rope_freqs.size()) != n_layers)
    bad("mla_rope_freqs has ", rope_freqs.size(), " layers, expected ", n_layers);
  for (size_t l = 0; l < rope_freqs.size(); ++l) {
    if (int64_t(rope_freqs[l].size()) != n_kv_heads)
      bad("mla_rope_freqs[", l, "] has ", rope_freqs[l].size(), " kv heads, expected ", n_kv_heads);
    for (size_t j = 0; j < rope_freqs[l].size(); ++j) {
      const auto& f = rope_freqs[l][j];
      if (int64_t(f.size()) != rope_pairs)
        bad("mla_rope_freqs[", l, "][", j, "] has ", f.size(), " pairs, expected mla_rope_pairs = ", rope_pairs);
      for (size_t k = 0; k < f.size(); ++k)
        if (f[k] < 0 || f[k] >= head_dim / 2 || (k > 0 && f[k] <= f[k - 1]))
          bad("mla_rope_freqs[", l, "][", j, "] must be ascending frequency indices in [0, ", head_dim / 2, ")");
    }
  }
}

namespace {

using nlohmann::json;

int64_t get_int(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail(ErrorCode::bad_file, source, ": missing key \"", key, "\"");
  if (!it->is_number_integer())
    fail(ErrorCode::bad_file, source, ": key \"", key, "\" is ", it->type_name(), ", expected an integer");
  const std::optional<int64_t> v = json_integer<int64_t>(*it);
  if (!v) fail(ErrorCode::bad_file, source, ": key \"", key, "\" is ", it->dump(), ", beyond a 64-bit integer");
  return *v;
}

float get_float(const json& j, const char* key, float fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number())
    fail(ErrorCode::bad_file, source, ": key \"", key, "\" is ", it->type_name(), ", expected a number");
  const double v = it->get<double>();  // narrowing an out-of-range double to float is undefined
  if (!(std::fabs(v) <= double(std::numeric_limits<float>::max())))
    fail(ErrorCode::bad_file, source, ": key \"", key, "\" is ", it->dump(), ", outside the range of a float");
  return float(v);
}

// A nested array of int32 (depth 1: [a, b], 2: [[a], [b]], ...), every element checked: a float,
// a string or a value beyond int32 is refused naming the key.
template <int Depth>
auto int32_array(const json& v, const char* key, const std::string& source) {
  if (!v.is_array()) fail(ErrorCode::bad_file, source, ": \"", key, "\" must be a nested array of integers, got ", v.dump());
  if constexpr (Depth == 1) {
    std::vector<int32_t> out;
    for (const json& e : v) {
      const std::optional<int32_t> x = json_integer<int32_t>(e);
      if (!x) fail(ErrorCode::bad_file, source, ": \"", key, "\" holds ", e.dump(), ", not a 32-bit integer");
      out.push_back(*x);
    }
    return out;
  } else {
    std::vector<decltype(int32_array<Depth - 1>(v, key, source))> out;
    for (const json& e : v) out.push_back(int32_array<Depth - 1>(e, key, source));
    return out;
  }
}

// HF allows null, an int, or a list of ids (several EOS tokens); Latte keeps the first.
int32_t get_token_id(const json& j, const char* key, int32_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  const json* v = &*it;
  if (v->is_array()) {
    if (v->empty()) return fallback;
    v = &(*v)[0];
  }
  const std::optional<int32_t> id = json_integer<int32_t>(*v);
  if (!id) fail(ErrorCode::bad_file, source, ": key \"", key, "\" is ", v->dump(), ", expected a 32-bit token id");
  return *id;
}

// The shortest decimal that reads back as the same float, so 1e-5f is written as 1e-05 rather
// than 9.999999747378752e-06 (what widening to double would print).
json float_as_json(float v) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::stod(std::string(buf, res.ptr));
}

}  // namespace

ModelConfig config_from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorCode::bad_file, source, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(ErrorCode::bad_file, source, ": expected a JSON object");

  if (auto it = j.find("model_type"); it != j.end() && it->is_string() && *it != "llama" && *it != "latte_mla")
    fail(ErrorCode::unsupported, source, ": model_type \"", it->get<std::string>(),
         "\" is not supported (llama, or latte_mla from latte convert)");
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    fail(ErrorCode::unsupported, source, ": rope_scaling ", it->dump(), " is not supported");
  if (auto it = j.find("hidden_act"); it != j.end() && it->is_string() && *it != "silu")
    fail(ErrorCode::unsupported, source, ": hidden_act \"", it->get<std::string>(),
         "\" is not supported (only silu)");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (auto it = j.find(key); it != j.end() && it->is_boolean() && it->get<bool>())
      fail(ErrorCode::unsupported, source, ": ", key, " = true is not supported");

  ModelConfig c;
  c.dim = get_int(j, "hidden_size", source);
  c.hidden_dim = get_int(j, "intermediate_size", source);
  c.n_layers = get_int(j, "num_hidden_layers", source);
  c.n_heads = get_int(j, "num_attention_heads", source);
  // HF's default when absent: plain multi-head attention.
  c.n_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                     ? get_int(j, "num_key_value_heads", source)
                     : c.n_heads;
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = get_int(j, "head_dim", source);
  } else {
    LATTE_REQUIRE(c.n_heads > 0 && c.dim % c.n_heads == 0, ErrorCode::bad_file, source,
                  ": hidden_size (", c.dim, ") is not a multiple of num_attention_heads (", c.n_heads,
                  ") and head_dim is not given");
    c.head_dim = c.dim / c.n_heads;
  }
  c.vocab_size = get_int(j, "vocab_size", source);
  c.max_seq_len = get_int(j, "max_position_embeddings", source);
  c.rope_theta = get_float(j, "rope_theta", 10000.0f, source);
  c.norm_eps = get_float(j, "rms_norm_eps", 1e-6f, source);  // HF LlamaConfig default
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      fail(ErrorCode::bad_file, source, ": key \"tie_word_embeddings\" is ", it->type_name(),
           ", expected a boolean");
    c.tied_embeddings = it->get<bool>();
  } else {
    c.tied_embeddings = false;  // HF LlamaConfig default
  }
  c.bos_id = get_token_id(j, "bos_token_id", -1, source);
  c.eos_id = get_token_id(j, "eos_token_id", -1, source);
  c.rope_layout = RopeLayout::rotate_half;
  if (auto it = j.find("latte_rope_layout"); it != j.end()) {
    if (!it->is_string())
      fail(ErrorCode::bad_file, source, ": key \"latte_rope_layout\" must be a string");
    try {
      c.rope_layout = rope_layout_from_name(it->get<std::string>());
    } catch (const Error& e) {
      fail(ErrorCode::bad_file, source, ": ", e.what());
    }
  }
  if (auto it = j.find("latte_architecture"); it != j.end() && it->is_string())
    c.architecture = it->get<std::string>();
  if (auto it = j.find("model_type"); it != j.end() && *it == "latte_mla") c.architecture = "mla";
  if (c.is_mla()) {
    c.rope_layout = RopeLayout::interleaved;  // the [rope | nope] head layout, see config.h
    c.kv_rank_per_head = get_int(j, "mla_kv_rank_per_head", source);
    if (j.contains("mla_shared_rope_dim")) c.shared_rope_dim = get_int(j, "mla_shared_rope_dim", source);
    if (c.shared_rope_dim > 0) {
      // DeepSeek's layout: one shared RoPE key; mla_rope_pairs, when given, must say 0 (validate).
      if (j.contains("mla_rope_pairs")) c.rope_pairs = get_int(j, "mla_rope_pairs", source);
      if (j.contains("mla_rope_freqs"))
        fail(ErrorCode::bad_file, source, ": \"mla_rope_freqs\" (per-KV-head RoPE keys) and \"mla_shared_rope_dim\" ",
             c.shared_rope_dim, " (one shared RoPE key) exclude each other");
      auto it = j.find("mla_shared_rope_freqs");
      if (it == j.end() || !it->is_array())
        fail(ErrorCode::bad_file, source, ": missing array \"mla_shared_rope_freqs\"");
      c.shared_rope_freqs = int32_array<2>(*it, "mla_shared_rope_freqs", source);  // [layer][pair]
    } else {
      c.rope_pairs = get_int(j, "mla_rope_pairs", source);
      auto it = j.find("mla_rope_freqs");
      if (it == j.end() || !it->is_array()) fail(ErrorCode::bad_file, source, ": missing array \"mla_rope_freqs\"");
      c.rope_freqs = int32_array<3>(*it, "mla_rope_freqs", source);  // [layer][kv head][pair]
    }
    if (auto p = j.find("mla_provenance"); p != j.end()) c.mla_provenance = p->dump();
    if (auto r = j.find("kv_lora_rank"); r != j.end() && r->is_number_integer() && r->get<int64_t>() != c.kv_lora_rank())
      fail(ErrorCode::bad_file, source, ": kv_lora_rank ", r->get<int64_t>(), " != num_key_value_heads * mla_kv_rank_per_head = ",
           c.kv_lora_rank());
  }
  c.validate(source);
  return c;
}

std::string config_to_json_text(const ModelConfig& c) {
  json j = json::object();
  j["architectures"] = json::array({c.is_mla() ? "LatteMLAForCausalLM" : "LlamaForCausalLM"});
  j["model_type"] = c.is_mla() ? "latte_mla" : "llama";
  j["hidden_size"] = c.dim;
  j["intermediate_size"] = c.hidden_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rope_theta"] = float_as_json(c.rope_theta);
  j["rms_norm_eps"] = float_as_json(c.norm_eps);
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["bos_token_id"] = c.bos_id >= 0 ? json(c.bos_id) : json(nullptr);
  j["eos_token_id"] = c.eos_id >= 0 ? json(c.eos_id) : json(nullptr);
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["rope_scaling"] = nullptr;
  j["torch_dtype"] = "float32";
  if (c.is_mla()) {
    j["mla_rope_pairs"] = c.rope_pairs;
    j["mla_kv_rank_per_head"] = c.kv_rank_per_head;
    j["kv_lora_rank"] = c.kv_lora_rank();
    if (c.shared_rope()) {
      // The per-KV-head layout's keys stay as they were; these two appear only in the shared one.
      j["mla_shared_rope_dim"] = c.shared_rope_dim;
      j["mla_shared_rope_freqs"] = c.shared_rope_freqs;
    } else {
      j["mla_rope_freqs"] = c.rope_freqs;
    }
    if (!c.mla_provenance.empty()) j["mla_provenance"] = json::parse(c.mla_provenance);
  } else if (c.rope_layout == RopeLayout::interleaved) {
    j["latte_rope_layout"] = "interleaved";
  }
  return j.dump(2) + "\n";
}

}  // namespace latte
