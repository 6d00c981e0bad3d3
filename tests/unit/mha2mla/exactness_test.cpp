// Exact before approximate (shared/notes/mha2mla-spec.md section 3.7), on logits:
//  1. r = head_dim/2 with a full-rank latent reproduces the source model, for the shipped GQA
//     model, its exact MHA twin and a random head_dim-64 model, each in both RoPE layouts;
//  2. for r < head_dim/2 a full-rank latent reproduces the partial-RoPE model exactly: the
//     reference is an MLA model whose "latent" is the token's input itself (kv_a_proj = identity,
//     k_b_proj / v_b_proj = the source's no-RoPE key rows and value rows), so it has partial RoPE
//     and no SVD at all;
//  3. the MHA twin (each KV head repeated for the query heads it serves) is the same function as
//     the GQA model it came from;
//  4. the same two exactness properties for the activation-aware latent (--init pca, issue 17),
//     and the key scale alpha alone (any value) leaves the logits unchanged at full rank while
//     changing them below it.
// Metric: relative error ||a - b||_2 / ||a||_2 over all logits of a prompt, < 1e-5 in f32 (the
// factorized weights change the order of the f32 sums; the errors seen are ~1e-7).
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "tests/unit/mha2mla/exactness_util.h"
#include "tests/unit/mha2mla/mha2mla_test_util.h"
#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/partial_rope.h"

namespace latte {
namespace {

ConvertOptions full_rank(const ModelConfig& c, int64_t r, RopeStrategy s = RopeStrategy::high) {
  ConvertOptions o;
  o.strategy = s;
  o.rope_pairs = r;
  // The rank bound of [k_nope; v] is min(dim, n_kv * (head_dim - 2r + head_dim)).
  const int64_t bound = std::min(c.dim, c.n_kv_heads * (2 * c.head_dim - 2 * r));
  o.kv_rank_per_head = (bound + c.n_kv_heads - 1) / c.n_kv_heads;
  while (o.kv_rank_per_head * c.n_kv_heads > bound) --o.kv_rank_per_head;
  if (o.kv_rank_per_head * c.n_kv_heads < bound) ADD_FAILURE() << "no per-head rank reaches the bound " << bound;
  return o;
}

// The random model has head_dim 64: 4 heads, MHA, dim 256 (so the rank bound n_kv * head_dim = dim
// is reachable).
std::vector<Fixture> fixtures() {
  return conversion_fixtures("random head_dim 64", [](RopeLayout layout) {
    return scaled_random_llama(random_llama(256, 4, 4, 64, 2, layout, 17), 0.08f);
  });
}

TEST(MlaExactness, MhaTwinIsTheSameFunction) {
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
    Checkpoint gqa = stories(layout);
    const auto t = prompt(gqa.config);
    EXPECT_LT(relative_error(logits(gqa, t), logits(mha_twin(gqa), t)), 1e-6) << rope_layout_name(layout);
  }
}

TEST(MlaExactness, FullRopeFullRankReproducesTheSource) {
  for (const Fixture& f : fixtures()) {
    const ModelConfig& c = f.ck.config;
    const Checkpoint mla = convert_to_mla(f.ck, full_rank(c, c.head_dim / 2), nullptr);
    const auto t = prompt(c);
    const double err = relative_error(logits(f.ck, t), logits(mla, t));
    EXPECT_LT(err, 1e-5) << f.name;
    EXPECT_GT(err, 0.0) << f.name << ": identical bits would mean the comparison saw one model twice";
  }
}

// The partial-RoPE model without any SVD: an MLA checkpoint whose latent is the input itself.
Checkpoint identity_latent(const Checkpoint& src, const Checkpoint& converted) {
  const ModelConfig& s = src.config;
  Checkpoint ref;
  ref.config = converted.config;
  ref.config.kv_rank_per_head = s.dim / s.n_kv_heads;  // D = dim
  ref.tensors = converted.tensors;
  const int64_t hd = s.head_dim, dc = converted.config.nope_dim();
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const std::string p = str_cat("model.layers.", l, ".self_attn.");
    Tensor k = src.tensors.get(p + "k_proj.weight").to(DType::f32);
    Tensor v = src.tensors.get(p + "v_proj.weight").to(DType::f32);
    Tensor eye = Tensor::zeros({s.dim, s.dim});
    for (int64_t i = 0; i < s.dim; ++i) eye.f32()[i * s.dim + i] = 1.0f;
    Tensor k_nope = Tensor::empty({s.n_kv_heads * dc, s.dim});
    for (int64_t j = 0; j < s.n_kv_heads; ++j) {
      const HeadRows rows = head_rows(converted.config.rope_freqs[size_t(l)][size_t(j)], s.rope_layout, hd);
      for (int64_t e = 0; e < dc; ++e)
        k_nope.slice(j * dc + e, j * dc + e + 1).copy_from(k.slice(j * hd + rows.nope[size_t(e)], j * hd + rows.nope[size_t(e)] + 1));
    }
    ref.tensors.put(p + "kv_a_proj.weight", eye, "identity");
    ref.tensors.put(p + "k_b_proj.weight", k_nope, "source k_proj");
    ref.tensors.put(p + "v_b_proj.weight", v, "source v_proj");
  }
  ref.tensors.origin = "identity-latent partial-RoPE reference";
  return ref;
}

TEST(MlaExactness, PartialRopeWithFullRankLatentIsThePartialRopeModel) {
  for (const Fixture& f : fixtures()) {
    const ModelConfig& c = f.ck.config;
    if (c.dim % c.n_kv_heads != 0) continue;
    for (int64_t r : {int64_t(1), c.head_dim / 4}) {
      const Checkpoint mla = convert_to_mla(f.ck, full_rank(c, r), nullptr);
      const Checkpoint ref = identity_latent(f.ck, mla);
      const auto t = prompt(c);
      const std::vector<float> a = logits(ref, t), b = logits(mla, t);
      EXPECT_LT(relative_error(a, b), 1e-5) << f.name << " r=" << r;
      // And partial RoPE is a different function from the source (the test is not vacuous).
      EXPECT_GT(relative_error(logits(f.ck, t), a), 1e-3) << f.name << " r=" << r;
    }
  }
}

// The PCA needs calibration text and a tokenizer: the stories260K fixtures (the random model has
// no tokenizer). 2,000 tokens: more than any full-rank latent here (56 at most).
ConvertOptions full_rank_pca(const ModelConfig& c, int64_t r, const Tokenizer& tok, double key_scale = 0) {
  ConvertOptions o = full_rank(c, r);
  o.init = LatentInit::pca;
  o.pca_key_scale = key_scale;
  o.tokenizer = &tok;
  o.calibration.text_path = calib_text_path();
  o.calibration.max_tokens = 2000;
  return o;
}

std::vector<Fixture> stories_fixtures() {
  std::vector<Fixture> out;
  for (Fixture& f : fixtures())
    if (f.name.starts_with("stories260K")) out.push_back(std::move(f));
  return out;
}

TEST(MlaExactness, PcaFullRopeFullRankReproducesTheSource) {
  const Checkpoint tok_source = stories(RopeLayout::interleaved);
  for (const Fixture& f : stories_fixtures()) {
    const ModelConfig& c = f.ck.config;
    const Checkpoint mla = convert_to_mla(f.ck, full_rank_pca(c, c.head_dim / 2, *tok_source.tokenizer), nullptr);
    ASSERT_NE(mla.config.mla_provenance.find("\"init\":\"pca\""), std::string::npos) << f.name;
    const auto t = prompt(c);
    const double err = relative_error(logits(f.ck, t), logits(mla, t));
    EXPECT_LT(err, 1e-5) << f.name;
    EXPECT_GT(err, 0.0) << f.name;
  }
}

TEST(MlaExactness, PcaPartialRopeWithFullRankLatentIsThePartialRopeModel) {
  const Checkpoint tok_source = stories(RopeLayout::interleaved);
  for (const Fixture& f : stories_fixtures()) {
    const ModelConfig& c = f.ck.config;
    for (int64_t r : {int64_t(1), c.head_dim / 4}) {
      const Checkpoint mla = convert_to_mla(f.ck, full_rank_pca(c, r, *tok_source.tokenizer), nullptr);
      const auto t = prompt(c);
      EXPECT_LT(relative_error(logits(identity_latent(f.ck, mla), t), logits(mla, t)), 1e-5) << f.name << " r=" << r;
    }
  }
}

TEST(MlaExactness, KeyScaleAloneLeavesLogitsUnchanged) {
  const Checkpoint src = stories(RopeLayout::rotate_half);
  const ModelConfig& c = src.config;
  const auto t = prompt(c);
  // r = 1 leaves 6 no-RoPE key dims per head, so alpha has keys to scale.
  const std::vector<float> ref = logits(identity_latent(src, convert_to_mla(src, full_rank(c, 1), nullptr)), t);
  for (double alpha : {0.0 /* balanced */, 1.0, 1e-3, 1e3}) {
    const Checkpoint mla = convert_to_mla(src, full_rank_pca(c, 1, *src.tokenizer, alpha), nullptr);
    EXPECT_LT(relative_error(ref, logits(mla, t)), 1e-5) << "alpha " << alpha;
  }
  // Below full rank alpha decides how keys and values share the latent, so it must matter.
  ConvertOptions low = full_rank_pca(c, 1, *src.tokenizer, 1e-3);
  low.kv_rank_per_head = 4;
  const std::vector<float> keys_first = logits(convert_to_mla(src, low, nullptr), t);
  low.pca_key_scale = 1e3;
  EXPECT_GT(relative_error(keys_first, logits(convert_to_mla(src, low, nullptr), t)), 1e-3);
}

}  // namespace
}  // namespace latte
