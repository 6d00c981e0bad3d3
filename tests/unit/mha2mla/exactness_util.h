// What the exactness tests of the conversions share (exactness_test.cpp: partial RoPE, PCA;
// rorope_test.cpp: RoRoPE): the source's exact MHA twin, full logits through the expanded MLA
// form, and the relative error the "reproduces the source" checks hold below 1e-5.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/backend/registry.h"
#include "core/checkpoint/checkpoint.h"
#include "core/model/transformer.h"
#include "tests/unit/mha2mla/mha2mla_test_util.h"

namespace latte {

// The exact MHA twin of a GQA checkpoint: KV head h repeated for each query head it serves.
inline Checkpoint mha_twin(const Checkpoint& src) {
  Checkpoint twin;
  twin.config = src.config;
  twin.config.n_kv_heads = src.config.n_heads;
  twin.format = src.format;
  twin.tensors.origin = "mha twin of " + src.tensors.origin;
  const int64_t hd = src.config.head_dim, group = src.config.n_heads / src.config.n_kv_heads;
  for (const auto& [name, e] : src.tensors.entries()) {
    if (name.find("k_proj.weight") == std::string::npos && name.find("v_proj.weight") == std::string::npos) {
      twin.tensors.put(name, e.tensor, e.file);
      continue;
    }
    const Tensor full = e.tensor.to(DType::f32);
    Tensor out = Tensor::empty({src.config.n_heads * hd, src.config.dim});
    for (int64_t h = 0; h < src.config.n_heads; ++h)
      out.slice(h * hd, (h + 1) * hd).copy_from(full.slice((h / group) * hd, (h / group + 1) * hd));
    twin.tensors.put(name, out, e.file);
  }
  return twin;
}

// Logits at every position of `tokens` (MLA models in the expanded form).
inline std::vector<float> logits(const Checkpoint& ck, const std::vector<int32_t>& tokens) {
  Transformer m(ck.config, weights_from_store(ck.config, ck.tensors), cpu_backend());
  KvCache cache = KvCache::create(ck.config, 1, int64_t(tokens.size()));
  return m.forward(tokens, 1, cache, LogitsFor::all_positions, MlaForm::expanded).to_vector();
}

// ||a - b|| / ||a||.
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

// A fixed 12-token prompt inside the vocabulary.
inline std::vector<int32_t> prompt(const ModelConfig& c) {
  std::vector<int32_t> t;
  for (int i = 0; i < 12; ++i) t.push_back(int32_t((i * 37 + 5) % c.vocab_size));
  return t;
}

// A source model the exactness tests convert, named for the failure messages.
struct Fixture {
  std::string name;
  Checkpoint ck;
};

// random_llama with its matrices scaled by `scale`: N(0, 1) weights saturate the softmax, and the
// exactness checks want logits of order 1..10.
inline Checkpoint scaled_random_llama(Checkpoint r, float scale) {
  for (auto& [name, e] : r.tensors.entries())
    if (e.tensor.ndim() == 2) {
      float* p = const_cast<Tensor&>(e.tensor).f32();
      for (int64_t i = 0; i < e.tensor.numel(); ++i) p[i] *= scale;
    }
  return r;
}

// For both RoPE layouts: stories260K (GQA), its exact MHA twin, and the caller's random model.
inline std::vector<Fixture> conversion_fixtures(const std::string& random_name,
                                                const std::function<Checkpoint(RopeLayout)>& random_model) {
  std::vector<Fixture> out;
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
    const std::string l = rope_layout_name(layout);
    out.push_back({"stories260K GQA " + l, stories(layout)});
    out.push_back({"stories260K MHA twin " + l, mha_twin(stories(layout))});
    out.push_back({random_name + " " + l, random_model(layout)});
  }
  return out;
}

}  // namespace latte
