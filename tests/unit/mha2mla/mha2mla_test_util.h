// Helpers shared by the MHA2MLA tests: the shipped model in both RoPE layouts, small random
// checkpoints of any shape, and row/matrix comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {

inline std::string calib_text_path() { return std::string(LATTE_MODELS_DIR) + "/stories260K/tinystories_valid_head.txt"; }
inline std::string smollm2_dir() { return std::string(LATTE_MODELS_DIR) + "/smollm2-135m-hf"; }

// stories260K as shipped (llama2.c, interleaved RoPE rows), or as `latte export` writes it for
// Hugging Face (rotate_half rows), loaded with its tokenizer.
inline Checkpoint stories(RopeLayout layout) {
  Checkpoint ck = load_checkpoint(stories_path());
  ck.tokenizer = load_llama2c_tokenizer(stories_tokenizer_path(), ck.config.vocab_size);
  if (layout != ck.config.rope_layout) convert_rope_layout(ck.config, ck.tensors, layout);
  return ck;
}

// A llama checkpoint of the given shape with N(0, 1) weights (norm weights around 1).
inline Checkpoint random_llama(int64_t dim, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t n_layers,
                               RopeLayout layout, uint32_t seed, int64_t vocab_size = 32) {
  Checkpoint ck;
  ModelConfig& c = ck.config;
  c.dim = dim;
  c.hidden_dim = 2 * dim + 3;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = vocab_size;
  c.max_seq_len = 16;
  c.rope_layout = layout;
  c.validate("random_llama");
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  for (const auto& [name, shape] : model_tensor_shapes(c)) {
    std::vector<float> v(size_t(shape_numel(shape)));
    const bool norm = shape.size() == 1;
    for (float& x : v) x = norm ? 1.0f + 0.1f * dist(rng) : dist(rng);
    ck.tensors.put(name, Tensor::from_vector(v, shape), "random_llama");
  }
  ck.tensors.origin = "random_llama";
  ck.format = "memory";
  return ck;
}

inline std::vector<float> values(const Checkpoint& ck, const std::string& name) {
  return ck.tensors.get(name).to_vector();
}

// Row `row` of a [*, cols] matrix.
inline std::vector<float> row_of(const std::vector<float>& m, int64_t cols, int64_t row) {
  return std::vector<float>(m.begin() + row * cols, m.begin() + (row + 1) * cols);
}

}  // namespace latte
