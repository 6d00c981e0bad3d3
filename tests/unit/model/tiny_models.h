// Tiny random decoders for the model tests: every attention variant (Llama MHA/GQA/MQA in both
// RoPE layouts, MLA with partial, full and no RoPE, MLA with one shared RoPE key), small enough for
// finite differences.
#pragma once
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/model/model_tensors.h"
#include "core/model/model_weights.h"

namespace latte::test {

struct Case {
  const char* name;
  std::string arch;
  RopeLayout layout;
  int64_t n_kv_heads;
  bool tied;
  int64_t rope_pairs = 0, kv_rank_per_head = 0;
  int64_t shared_rope_dim = 0;  // > 0: DeepSeek's layout, one shared RoPE key of this many dims
};

// Frequencies of a shared RoPE key: repeated and unordered indices, different per layer, as the
// RoRoPE conversion produces (several rotated components of one frequency).
inline std::vector<std::vector<int32_t>> tiny_shared_rope_freqs(const ModelConfig& c) {
  std::vector<std::vector<int32_t>> out;
  const int64_t half = c.head_dim / 2;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    std::vector<int32_t> f;
    for (int64_t s = 0; s < c.shared_rope_dim / 2; ++s) f.push_back(int32_t((half - 1 - s / 2 + l) % half));
    out.push_back(f);
  }
  return out;
}

inline ModelConfig tiny_config(const Case& k) {
  ModelConfig c;
  c.architecture = k.arch;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = k.n_kv_heads;
  c.head_dim = 8;
  c.vocab_size = 29;
  c.max_seq_len = 96;
  c.rope_layout = k.layout;
  c.tied_embeddings = k.tied;
  if (c.is_mla()) {
    c.rope_layout = RopeLayout::interleaved;
    c.rope_pairs = k.rope_pairs;
    c.kv_rank_per_head = k.kv_rank_per_head;
    if (k.shared_rope_dim > 0) {
      c.shared_rope_dim = k.shared_rope_dim;
      c.shared_rope_freqs = tiny_shared_rope_freqs(c);
      return c;
    }
    // Different kept frequencies per layer and KV head, as the 2-norm strategy produces.
    c.rope_freqs.assign(size_t(c.n_layers), {});
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (int64_t j = 0; j < c.n_kv_heads; ++j) {
        std::vector<int32_t> f;
        for (int64_t s = 0; s < c.rope_pairs; ++s) f.push_back(int32_t((s * 4 / std::max<int64_t>(c.rope_pairs, 1) + l + j) % 4));
        std::sort(f.begin(), f.end());
        f.erase(std::unique(f.begin(), f.end()), f.end());
        for (int32_t i = 0; int64_t(f.size()) < c.rope_pairs; ++i)
          if (std::find(f.begin(), f.end(), i) == f.end()) f.push_back(i);
        std::sort(f.begin(), f.end());
        c.rope_freqs[size_t(l)].push_back(f);
      }
  }
  return c;
}

inline ModelWeights random_weights(const ModelConfig& c, uint32_t seed) {
  ModelWeights w = weights_zeros_like(c);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for_each_weight(c, w, [&](const std::string& name, const Shape&, Tensor& t) {
    float* p = t.f32();
    bool is_norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f + 0.2f * normal(rng) : normal(rng);
  });
  return w;
}

inline const Case kCases[] = {
    {"llama_gqa_interleaved_tied", "llama", RopeLayout::interleaved, 2, true},
    {"llama_mha_rotate_half", "llama", RopeLayout::rotate_half, 4, false},
    {"llama_mqa", "llama", RopeLayout::rotate_half, 1, true},
    {"mla_gqa_r1", "mla", RopeLayout::interleaved, 2, true, 1, 5},
    {"mla_mha_r2", "mla", RopeLayout::interleaved, 4, false, 2, 3},
    {"mla_full_rope", "mla", RopeLayout::interleaved, 2, true, 4, 4},
    {"mla_nope", "mla", RopeLayout::interleaved, 2, false, 0, 6},
    {"mla_shared_rope_gqa", "mla", RopeLayout::interleaved, 2, true, 0, 3, 6},
    {"mla_shared_rope_mha", "mla", RopeLayout::interleaved, 4, false, 0, 2, 4},
};

}  // namespace latte::test
