// MLA with one shared RoPE key (DeepSeek's layout, config.h shared_rope_dim) against an explicit
// float64 computation written from the definition alone, loop by loop:
//   c_t = W_dkv x_t,  kr_t = RoPE_t(W_kr x_t) (pair s at frequency shared_rope_freqs[l][s]),
//   q_{t,i} = W_q,i x_t = [q_rope | q_nope] with q_rope rotated the same way,
//   score(i, t, tau) = (q_rope_{t,i} . kr_tau + q_nope_{t,i} . W_uk,g(i) c_tau) / sqrt(head_dim),
//   o_{t,i} = sum_tau softmax(score) W_uv,g(i) c_tau,   x += W_o o,   then the SwiGLU MLP.
// The model's three paths (training forward, expanded and absorbed inference) must all give its
// logits. Also: a shared-key config survives config.json, and bad shared-key configs are refused
// naming the field. (The transformer and paged tests run the shared cases of tiny_models.h through
// gradients, cached decode and the paged cache.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/backend/registry.h"
#include "core/model/transformer.h"
#include "tests/unit/model/tiny_models.h"

namespace latte {
namespace {

using Vec = std::vector<double>;

Vec values(const Tensor& t) {
  std::vector<float> f = t.to_vector();
  return Vec(f.begin(), f.end());
}

// y[rows] = W[rows, cols] x[cols]
Vec matvec(const Vec& w, const Vec& x, int64_t rows, int64_t cols) {
  Vec y(size_t(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) y[size_t(r)] += w[size_t(r * cols + k)] * x[size_t(k)];
  return y;
}

Vec rmsnorm(const Vec& x, const Vec& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / double(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// Rotates pairs (2s, 2s+1) of v[offset ..] by pos * theta^(-2 f_s / head_dim).
void rotate(Vec& v, size_t offset, const std::vector<int32_t>& freqs, int64_t pos, const ModelConfig& c) {
  for (size_t s = 0; s < freqs.size(); ++s) {
    const double angle = double(pos) * std::pow(double(c.rope_theta), -2.0 * freqs[s] / double(c.head_dim));
    const double a = v[offset + 2 * s], b = v[offset + 2 * s + 1];
    v[offset + 2 * s] = a * std::cos(angle) - b * std::sin(angle);
    v[offset + 2 * s + 1] = a * std::sin(angle) + b * std::cos(angle);
  }
}

// Logits [T, V] of one sequence.
Vec reference_logits(const ModelConfig& c, const ModelWeights& w, const std::vector<int32_t>& tokens) {
  const int64_t T = int64_t(tokens.size()), D = c.dim, hd = c.head_dim, R = c.shared_rope_dim, qk = R + hd;
  const int64_t L = c.kv_lora_rank(), G = c.n_heads / c.n_kv_heads, F = c.hidden_dim;
  const Vec emb = values(w.tok_embeddings);
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) x[size_t(t)] = Vec(emb.begin() + tokens[size_t(t)] * D, emb.begin() + (tokens[size_t(t)] + 1) * D);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[size_t(l)];
    const Vec wq = values(lw.wq), wdkv = values(lw.w_dkv), wkr = values(lw.w_kr), wuk = values(lw.w_uk);
    const Vec wuv = values(lw.w_uv), wo = values(lw.wo), an = values(lw.attn_norm), fn = values(lw.ffn_norm);
    const Vec wg = values(lw.w_gate), wu = values(lw.w_up), wd = values(lw.w_down);
    const std::vector<int32_t>& freqs = c.shared_rope_freqs[size_t(l)];
    std::vector<Vec> q(static_cast<size_t>(T)), kr(q.size()), knope(q.size()), v(q.size());
    for (int64_t t = 0; t < T; ++t) {
      const Vec xn = rmsnorm(x[size_t(t)], an, c.norm_eps);
      const Vec lat = matvec(wdkv, xn, L, D);
      kr[size_t(t)] = matvec(wkr, xn, R, D);
      rotate(kr[size_t(t)], 0, freqs, t, c);
      knope[size_t(t)] = matvec(wuk, lat, c.n_kv_heads * hd, L);
      v[size_t(t)] = matvec(wuv, lat, c.n_kv_heads * hd, L);
      q[size_t(t)] = matvec(wq, xn, c.n_heads * qk, D);
      for (int64_t i = 0; i < c.n_heads; ++i) rotate(q[size_t(t)], size_t(i * qk), freqs, t, c);
    }
    std::vector<Vec> next(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      Vec o(static_cast<size_t>(c.n_heads * hd), 0.0);
      for (int64_t i = 0; i < c.n_heads; ++i) {
        const int64_t g = i / G;
        Vec score(static_cast<size_t>(t + 1));
        double m = -INFINITY;
        for (int64_t tau = 0; tau <= t; ++tau) {
          double s = 0;
          for (int64_t e = 0; e < R; ++e) s += q[size_t(t)][size_t(i * qk + e)] * kr[size_t(tau)][size_t(e)];
          for (int64_t e = 0; e < hd; ++e) s += q[size_t(t)][size_t(i * qk + R + e)] * knope[size_t(tau)][size_t(g * hd + e)];
          score[size_t(tau)] = s / std::sqrt(double(hd));
          m = std::max(m, score[size_t(tau)]);
        }
        double z = 0;
        for (double& s : score) z += (s = std::exp(s - m));
        for (int64_t tau = 0; tau <= t; ++tau)
          for (int64_t e = 0; e < hd; ++e) o[size_t(i * hd + e)] += score[size_t(tau)] / z * v[size_t(tau)][size_t(g * hd + e)];
      }
      Vec h = x[size_t(t)];
      const Vec att = matvec(wo, o, D, c.n_heads * hd);
      for (int64_t e = 0; e < D; ++e) h[size_t(e)] += att[size_t(e)];
      const Vec hn = rmsnorm(h, fn, c.norm_eps);
      const Vec gate = matvec(wg, hn, F, D), up = matvec(wu, hn, F, D);
      Vec act(static_cast<size_t>(F));
      for (int64_t e = 0; e < F; ++e) act[size_t(e)] = gate[size_t(e)] / (1 + std::exp(-gate[size_t(e)])) * up[size_t(e)];
      const Vec down = matvec(wd, act, D, F);
      for (int64_t e = 0; e < D; ++e) h[size_t(e)] += down[size_t(e)];
      next[size_t(t)] = h;
    }
    x = next;
  }
  const Vec norm = values(w.norm), head = values(w.lm_head.defined() ? w.lm_head : w.tok_embeddings);
  Vec out;
  for (int64_t t = 0; t < T; ++t) {
    const Vec logits = matvec(head, rmsnorm(x[size_t(t)], norm, c.norm_eps), c.vocab_size, D);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

double relative_error(const Vec& want, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

TEST(SharedRopeKeyTest, EveryForwardPathMatchesTheExplicitComputation) {
  for (const test::Case& k : test::kCases) {
    if (k.shared_rope_dim == 0) continue;
    SCOPED_TRACE(k.name);
    const ModelConfig c = test::tiny_config(k);
    ASSERT_TRUE(c.shared_rope());
    ModelWeights w = test::random_weights(c, 31);
    if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
    std::vector<int32_t> tokens;
    for (int32_t i = 0; i < 11; ++i) tokens.push_back((7 * i + 3) % int32_t(c.vocab_size));
    const Vec want = reference_logits(c, w, tokens);
    Transformer model(c, w, cpu_backend());

    Activations acts;
    model.forward_train(tokens, tokens, 1, acts);
    EXPECT_LT(relative_error(want, acts.logits.to_vector()), 1e-5) << "training forward";
    KvCache ce = KvCache::create(c, 1, 16);
    EXPECT_LT(relative_error(want, model.forward(tokens, 1, ce, LogitsFor::all_positions, MlaForm::expanded).to_vector()),
              1e-5)
        << "expanded inference";
    KvCache ca = KvCache::create(c, 1, 16);
    EXPECT_LT(relative_error(want, model.forward(tokens, 1, ca, LogitsFor::all_positions, MlaForm::absorbed).to_vector()),
              1e-5)
        << "absorbed inference";
    // One RoPE key per token, not one per KV head.
    EXPECT_EQ(ca.k_rope[0].shape(), (Shape{1, 16, 1, c.shared_rope_dim}));
    EXPECT_EQ(c.kv_cache_elements_per_token(), c.n_layers * (c.shared_rope_dim + c.kv_lora_rank()));
  }
}

// The check above can fail: the reference with one frequency changed disagrees.
TEST(SharedRopeKeyTest, AnotherFrequencyIsCaught) {
  const ModelConfig c = test::tiny_config(test::kCases[7]);
  ASSERT_TRUE(c.shared_rope());
  ModelWeights w = test::random_weights(c, 31);
  const std::vector<int32_t> tokens{1, 5, 9, 2, 7, 3, 8};
  ModelConfig other = c;
  other.shared_rope_freqs[1][0] = (other.shared_rope_freqs[1][0] + 1) % int32_t(c.head_dim / 2);
  Transformer model(c, w, cpu_backend());
  KvCache cache = KvCache::create(c, 1, 8);
  const std::vector<float> got = model.forward(tokens, 1, cache, LogitsFor::all_positions).to_vector();
  EXPECT_LT(relative_error(reference_logits(c, w, tokens), got), 1e-5);
  EXPECT_GT(relative_error(reference_logits(other, w, tokens), got), 1e-3);
}

TEST(SharedRopeKeyTest, ConfigJsonRoundTripsAndTheTableHasTheSharedShapes) {
  const ModelConfig c = test::tiny_config(test::kCases[7]);
  const std::string text = config_to_json_text(c);
  EXPECT_NE(text.find("\"mla_shared_rope_dim\": 6"), std::string::npos) << text;
  EXPECT_EQ(text.find("mla_rope_freqs"), std::string::npos) << text;
  const ModelConfig back = config_from_json_text(text, "config.json");
  EXPECT_EQ(back.shared_rope_dim, c.shared_rope_dim);
  EXPECT_EQ(back.shared_rope_freqs, c.shared_rope_freqs);
  EXPECT_EQ(config_to_json_text(back), text);
  // q heads [d_r | hd], one replicated [d_r, D] RoPE key projection, o_proj over hd-wide heads.
  EXPECT_EQ(find_model_tensor(c, "model.layers.0.self_attn.q_proj.weight").shape,
            (Shape{c.n_heads * (6 + c.head_dim), c.dim}));
  const ModelTensor kr = find_model_tensor(c, "model.layers.1.self_attn.k_rope_proj.weight");
  EXPECT_EQ(kr.shape, (Shape{6, c.dim}));
  EXPECT_EQ(kr.split, TpSplit::replicated);
  EXPECT_EQ(find_model_tensor(c, "model.layers.0.self_attn.o_proj.weight").shape,
            (Shape{c.dim, c.n_heads * c.head_dim}));
}

TEST(SharedRopeKeyTest, BadSharedKeyConfigsAreRefusedNamingTheField) {
  auto message = [](const ModelConfig& c) {
    try {
      c.validate("test");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const ModelConfig good = test::tiny_config(test::kCases[7]);
  EXPECT_EQ(message(good), "accepted");
  ModelConfig odd = good;
  odd.shared_rope_dim = 5;
  EXPECT_NE(message(odd).find("mla_shared_rope_dim (5) must be even"), std::string::npos) << message(odd);
  ModelConfig short_list = good;
  short_list.shared_rope_freqs[1].pop_back();
  EXPECT_NE(message(short_list).find("mla_shared_rope_freqs[1] has 2 pairs"), std::string::npos) << message(short_list);
  ModelConfig far = good;
  far.shared_rope_freqs[0][0] = int32_t(good.head_dim / 2);
  EXPECT_NE(message(far).find("outside [0, head_dim/2"), std::string::npos) << message(far);
  ModelConfig both = good;
  both.rope_pairs = 1;
  EXPECT_NE(message(both).find("mla_rope_pairs (1) must be 0"), std::string::npos) << message(both);
  std::string text = config_to_json_text(good);
  text.insert(text.find("\"mla_shared_rope_dim\""), "\"mla_rope_freqs\": [],\n  ");
  try {
    config_from_json_text(text, "config.json");
    ADD_FAILURE() << "both RoPE key layouts accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exclude each other"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace latte
