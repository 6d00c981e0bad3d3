// RoRoPE (trainer/mha2mla/rorope.h, --rope-mode rorope): the KV heads' RoPE components rotated
// into one shared RoPE key (DeepSeek's layout). On logits, relative L2 error over a 12-token prompt:
//  1. every component kept (d_r = n_kv_heads*head_dim) with a full-rank latent reproduces the
//     source (< 1e-5): stories260K (GQA 8/4) and its MHA twin in both RoPE layouts, a random GQA
//     model with head_dim 16 and 2 KV heads; SVD and PCA latents;
//  2. with fewer components, a full-rank latent reproduces the same rotation with no latent at
//     all (kv_a_proj = identity, k_b_proj = the dropped components' key rows P_f k, v_b_proj = the
//     value rows): the latent side is exact, only the RoPE removal changes the function — and it
//     does change it (> 1e-3 from the source);
//  3. the plan: U_f orthogonal, its eigenvalues the components' energies, the kept ones the
//     largest, the shared key's rows the mixed key rows;
//  4. refusals naming the problem (d_r odd or out of range, no calibration text, --rope-pairs,
//     --svd split, --rope-dims without rorope).
// Able to fail: mixing the queries with U_f[g, j] instead of U_f[j, g] (the transpose) fails (1)
// for every fixture with more than one KV head (checked by hand when this was written).
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend/registry.h"
#include "core/linalg/matmul.h"
#include "core/model/transformer.h"
#include "tests/unit/mha2mla/exactness_util.h"
#include "tests/unit/mha2mla/mha2mla_test_util.h"
#include "trainer/mha2mla/calibration.h"
#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/partial_rope.h"
#include "trainer/mha2mla/rorope.h"

namespace latte {
namespace {

std::vector<float> absorbed_logits(const Checkpoint& ck, const std::vector<int32_t>& tokens) {
  Transformer m(ck.config, weights_from_store(ck.config, ck.tensors), cpu_backend());
  KvCache cache = KvCache::create(ck.config, 1, int64_t(tokens.size()));
  std::vector<float> out;
  for (int32_t t : tokens) {
    const std::vector<float> step =
        m.forward(std::vector<int32_t>{t}, 1, cache, LogitsFor::last_position, MlaForm::absorbed).to_vector();
    out.insert(out.end(), step.begin(), step.end());
  }
  return out;
}

// Every fixture runs the stories260K tokenizer over its calibration text, so the random model
// gets stories260K's vocabulary size. Its 4 query heads on 2 KV heads of 16 dims make 16 components
// of which several share a frequency.
std::vector<Fixture> fixtures() {
  return conversion_fixtures("random GQA 4/2 head_dim 16", [](RopeLayout layout) {
    return scaled_random_llama(random_llama(64, 4, 2, 16, 2, layout, 23, 512), 0.15f);
  });
}

const Tokenizer& stories_tokenizer() {
  static const Checkpoint ck = stories(RopeLayout::interleaved);
  return *ck.tokenizer;
}

ConvertOptions rorope_options(const ModelConfig& c, int64_t d_r, LatentInit init) {
  ConvertOptions o;
  o.rope_mode = RopeMode::rorope;
  o.rope_dims = d_r;
  o.init = init;
  // The widest latent the rank bound allows: min(dim, n_kv * 2 head_dim) / n_kv.
  o.kv_rank_per_head = std::min(c.dim, 2 * c.kv_dim()) / c.n_kv_heads;
  o.tokenizer = &stories_tokenizer();
  o.calibration.text_path = calib_text_path();
  o.calibration.max_tokens = 2000;
  return o;
}

TEST(Rorope, AllComponentsWithAFullRankLatentReproduceTheSource) {
  for (const Fixture& f : fixtures()) {
    const ModelConfig& c = f.ck.config;
    for (LatentInit init : {LatentInit::svd, LatentInit::pca}) {
      SCOPED_TRACE(f.name + " init " + latent_init_name(init));
      ConversionReport rep;
      const Checkpoint mla = convert_to_mla(f.ck, rorope_options(c, c.kv_dim(), init), &rep);
      ASSERT_TRUE(mla.config.shared_rope());
      EXPECT_EQ(mla.config.shared_rope_dim, c.kv_dim());
      // Every frequency appears once per KV head, in ascending order.
      std::vector<int32_t> want;
      for (int32_t fq = 0; fq < int32_t(c.head_dim / 2); ++fq)
        for (int64_t j = 0; j < c.n_kv_heads; ++j) want.push_back(fq);
      EXPECT_EQ(mla.config.shared_rope_freqs[0], want);
      ASSERT_EQ(rep.rope_energy.size(), size_t(c.n_layers));
      EXPECT_NEAR(rep.rope_energy[0], 1.0, 1e-12);
      const auto t = prompt(c);
      const std::vector<float> src = logits(f.ck, t);
      const double err = relative_error(src, logits(mla, t));
      EXPECT_LT(err, 1e-5);
      EXPECT_GT(err, 0.0) << "identical bits would mean the comparison saw one model twice";
      EXPECT_LT(relative_error(src, absorbed_logits(mla, t)), 1e-5) << "absorbed decode";
    }
  }
}

MatrixD matrix_of(const Tensor& t) {
  MatrixD m(t.dim(0), t.dim(1));
  const std::vector<float> v = t.to_vector();
  for (size_t i = 0; i < v.size(); ++i) m.data[i] = v[i];
  return m;
}

Tensor tensor_of(const MatrixD& m) {
  std::vector<float> v(m.data.begin(), m.data.end());
  return Tensor::from_vector(v, {m.rows, m.cols});
}

TEST(Rorope, WithFewerComponentsTheLatentIsExactAndOnlyTheRopeRemovalChangesTheFunction) {
  for (const Fixture& f : fixtures()) {
    const ModelConfig& c = f.ck.config;
    if (f.name.find("MHA twin") != std::string::npos) continue;  // dim = n_kv * head_dim: no room to drop
    for (int64_t d_r : {int64_t(2), c.head_dim, c.kv_dim() - 2}) {
      SCOPED_TRACE(f.name + " d_r " + std::to_string(d_r));
      const ConvertOptions o = rorope_options(c, d_r, LatentInit::pca);
      const Checkpoint mla = convert_to_mla(f.ck, o, nullptr);
      // The reference: the same plan (same calibration moments), and as its "latent" the attention
      // input itself (kv_a_proj = identity): the rotation with no factorization at all.
      const CalibrationStats calib = collect_calibration(c, f.ck.tensors, stories_tokenizer(), o.calibration,
                                                         cpu_backend(), {.input_moments = true});
      Checkpoint ref;
      ref.config = mla.config;
      ref.config.kv_rank_per_head = c.dim / c.n_kv_heads;
      ASSERT_EQ(ref.config.kv_lora_rank(), c.dim);
      ref.format = "memory";
      for (const auto& [name, e] : mla.tensors.entries()) ref.tensors.put(name, e.tensor, "converted");
      MatrixD identity(c.dim, c.dim);
      for (int64_t i = 0; i < c.dim; ++i) identity(i, i) = 1;
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const std::string p = str_cat("model.layers.", l, ".self_attn.");
        const MatrixD wk = matrix_of(f.ck.tensors.get(p + "k_proj.weight").to(DType::f32));
        const MatrixD wq = matrix_of(f.ck.tensors.get(p + "q_proj.weight").to(DType::f32));
        const RoropePlan plan = rorope_plan(c, wk, calib.input_moments.second_moment(l), d_r);
        EXPECT_EQ(plan.freqs(), mla.config.shared_rope_freqs[size_t(l)]);
        const RoropeWeights rw = rorope_weights(c, wq, wk, plan);
        ref.tensors.put(p + "kv_a_proj.weight", tensor_of(identity), "reference");
        ref.tensors.put(p + "k_b_proj.weight", tensor_of(rw.k_nope), "reference");
        ref.tensors.put(p + "v_b_proj.weight", f.ck.tensors.get(p + "v_proj.weight").to(DType::f32), "reference");
      }
      const auto t = prompt(c);
      const std::vector<float> got = logits(mla, t);
      EXPECT_LT(relative_error(logits(ref, t), got), 1e-5) << "the full-rank latent is not the identity latent";
      EXPECT_GT(relative_error(logits(f.ck, t), got), 1e-4) << "dropping RoPE components changed nothing";
    }
  }
}

TEST(Rorope, PlanRotatesOrthogonallyAndKeepsTheLargestComponents) {
  const Checkpoint src = stories(RopeLayout::rotate_half);
  const ModelConfig& c = src.config;
  ConvertOptions o = rorope_options(c, 8, LatentInit::svd);
  const CalibrationStats calib =
      collect_calibration(c, src.tensors, stories_tokenizer(), o.calibration, cpu_backend(), {.input_moments = true});
  const MatrixD s = calib.input_moments.second_moment(1);
  const MatrixD wk = matrix_of(src.tensors.get("model.layers.1.self_attn.k_proj.weight").to(DType::f32));
  const RoropePlan plan = rorope_plan(c, wk, s, 8);
  ASSERT_EQ(plan.rotation.size(), size_t(c.head_dim / 2));
  ASSERT_EQ(plan.kept.size(), 4u);
  // The keys' moment over all rows: its trace is the total energy the eigenvalues split.
  const MatrixD km = matmul(matmul(wk, s), wk, Transpose::no, Transpose::yes);
  double trace = 0;
  for (int64_t i = 0; i < km.rows; ++i) trace += km(i, i);
  double eig_sum = 0, smallest_kept = INFINITY;
  std::vector<double> energies;
  for (int64_t f = 0; f < c.head_dim / 2; ++f) {
    const MatrixD& u = plan.rotation[size_t(f)];
    const MatrixD uut = matmul(u, u, Transpose::no, Transpose::yes);
    for (int64_t i = 0; i < c.n_kv_heads; ++i)
      for (int64_t j = 0; j < c.n_kv_heads; ++j) EXPECT_NEAR(uut(i, j), i == j ? 1.0 : 0.0, 1e-12);
    // Component j's energy is u_j C_f u_j^T, C_f the heads' pair moments at f.
    const PairDims p = pair_dims(f, c.rope_layout, c.head_dim);
    for (int64_t j = 0; j < c.n_kv_heads; ++j) {
      double e = 0;
      for (int64_t h = 0; h < c.n_kv_heads; ++h)
        for (int64_t h2 = 0; h2 < c.n_kv_heads; ++h2)
          e += u(j, h) * u(j, h2) *
               (km(h * c.head_dim + p.first, h2 * c.head_dim + p.first) +
                km(h * c.head_dim + p.second, h2 * c.head_dim + p.second));
      energies.push_back(e);
      eig_sum += e;
    }
  }
  EXPECT_NEAR(eig_sum, trace, 1e-9 * trace);
  for (const RoropeComponent& k : plan.kept) {
    EXPECT_NEAR(k.energy, energies[size_t(k.freq * c.n_kv_heads + k.component)], 1e-9 * trace);
    smallest_kept = std::min(smallest_kept, k.energy);
  }
  std::sort(energies.rbegin(), energies.rend());
  EXPECT_NEAR(smallest_kept, energies[3], 1e-9 * trace) << "the 4 kept components are not the 4 largest";
  EXPECT_NEAR(plan.energy_kept, (energies[0] + energies[1] + energies[2] + energies[3]) / trace, 1e-9);
  // The shared key's rows are the kept components' mixtures of the heads' pair rows.
  const MatrixD wq = matrix_of(src.tensors.get("model.layers.1.self_attn.q_proj.weight").to(DType::f32));
  const RoropeWeights rw = rorope_weights(c, wq, wk, plan);
  const RoropeComponent& k0 = plan.kept[0];
  const PairDims p0 = pair_dims(k0.freq, c.rope_layout, c.head_dim);
  for (int64_t col = 0; col < c.dim; col += 7) {
    double want = 0;
    for (int64_t h = 0; h < c.n_kv_heads; ++h)
      want += plan.rotation[size_t(k0.freq)](k0.component, h) * wk(h * c.head_dim + p0.second, col);
    EXPECT_NEAR(rw.k_rope(1, col), want, 1e-12);
  }
}

TEST(Rorope, BadOptionsAreRefusedNamingTheProblem) {
  const Checkpoint src = stories(RopeLayout::interleaved);
  const ModelConfig& c = src.config;  // 4 KV heads x 8 dims: d_r in [2, 32]
  auto message = [&](ConvertOptions o) {
    try {
      convert_to_mla(src, o, nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  ConvertOptions o = rorope_options(c, 7, LatentInit::svd);
  EXPECT_NE(message(o).find("--rope-dims d_r = 7 must be even and in [2, n_kv_heads*head_dim = 32]"), std::string::npos)
      << message(o);
  o.rope_dims = 34;
  EXPECT_NE(message(o).find("d_r = 34"), std::string::npos) << message(o);
  o.rope_dims = 0;
  EXPECT_NE(message(o).find("d_r = 0"), std::string::npos) << message(o);
  o = rorope_options(c, 8, LatentInit::svd);
  o.calibration.text_path.clear();
  EXPECT_NE(message(o).find("--rope-mode rorope needs a calibration text"), std::string::npos) << message(o);
  o = rorope_options(c, 8, LatentInit::svd);
  o.rope_pairs = 2;
  EXPECT_NE(message(o).find("--rope-pairs applies to --rope-mode partial"), std::string::npos) << message(o);
  o = rorope_options(c, 8, LatentInit::svd);
  o.svd = SvdMethod::split;
  EXPECT_NE(message(o).find("--svd split applies to --rope-mode partial"), std::string::npos) << message(o);
  o = rorope_options(c, 8, LatentInit::svd);
  o.kv_rank_per_head = 17;
  EXPECT_NE(message(o).find("d_kv 17 larger than possible: at most 16 for RoRoPE"), std::string::npos) << message(o);
  ConvertOptions partial;
  partial.strategy = RopeStrategy::high;
  partial.rope_dims = 8;
  EXPECT_NE(message(partial).find("--rope-dims applies to --rope-mode rorope only"), std::string::npos)
      << message(partial);
}

}  // namespace
}  // namespace latte
