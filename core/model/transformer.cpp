#include "core/model/transformer.h"

#include <cmath>
#include <cstring>

#include "core/model/attention_block.h"
#include "core/model/model_tensors.h"

namespace latte {

namespace {

Tensor* slot(const ModelConfig& c, ModelWeights& w, const std::string& name) {
  if (name == "model.embed_tokens.weight") return &w.tok_embeddings;
  if (name == "model.norm.weight") return &w.norm;
  if (name == "lm_head.weight") return &w.lm_head;
  const std::string prefix = "model.layers.";
  LATTE_ASSERT(name.rfind(prefix, 0) == 0);
  size_t dot = name.find('.', prefix.size());
  size_t layer = size_t(std::stoll(name.substr(prefix.size(), dot - prefix.size())));
  std::string leaf = name.substr(dot + 1);
  LATTE_ASSERT(layer < w.layers.size());
  LayerWeights& L = w.layers[layer];
  if (leaf == "input_layernorm.weight") return &L.attn_norm;
  if (leaf == "self_attn.q_proj.weight") return &L.wq;
  if (leaf == "self_attn.k_proj.weight") return &L.wk;
  if (leaf == "self_attn.v_proj.weight") return &L.wv;
  if (leaf == "self_attn.kv_a_proj.weight") return &L.w_dkv;
  if (leaf == "self_attn.k_rope_proj.weight") return &L.w_kr;
  if (leaf == "self_attn.k_b_proj.weight") return &L.w_uk;
  if (leaf == "self_attn.v_b_proj.weight") return &L.w_uv;
  if (leaf == "self_attn.o_proj.weight") return &L.wo;
  if (leaf == "post_attention_layernorm.weight") return &L.ffn_norm;
  if (leaf == "mlp.gate_proj.weight") return &L.w_gate;
  if (leaf == "mlp.up_proj.weight") return &L.w_up;
  if (leaf == "mlp.down_proj.weight") return &L.w_down;
  fail(ErrorCode::internal, "no weight slot for ", name);
}

ModelWeights skeleton(const ModelConfig& c) {
  ModelWeights w;
  w.layers.resize(size_t(c.n_layers));
  return w;
}

}  // namespace

void for_each_weight(const ModelConfig& c, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f) {
  if (int64_t(w.layers.size()) != c.n_layers) w.layers.resize(size_t(c.n_layers));
  for (const auto& [name, shape] : model_tensor_shapes(c)) f(name, shape, *slot(c, w, name));
}

ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store) {
  c.validate(store.origin);
  ModelWeights w = skeleton(c);
  for_each_weight(c, w, [&](const std::string& name, const Shape& shape, Tensor& t) {
    t = store.get(name, shape);
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::bad_file, "tensor ", name, " in ", store.file_of(name),
                  " is not contiguous");
    // Kernels read f32 or bf16 weights; f16 widens to f32 exactly (bf16 would drop 3 mantissa bits).
    if (t.dtype() == DType::f16) t = t.to(DType::f32);
  });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w) {
  TensorStore store;
  ModelWeights copy = w;
  for_each_weight(c, copy, [&](const std::string& name, const Shape&, Tensor& t) { store.put(name, t, "(memory)"); });
  store.origin = "(memory)";
  return store;
}

ModelWeights weights_zeros_like(const ModelConfig& c) {
  ModelWeights w = skeleton(c);
  for_each_weight(c, w, [&](const std::string&, const Shape& shape, Tensor& t) { t = Tensor::zeros(shape); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

ModelWeights weights_to_f32(const ModelConfig& c, const ModelWeights& src) {
  ModelWeights w = src;
  for_each_weight(c, w, [&](const std::string&, const Shape&, Tensor& t) { t = t.to(DType::f32); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq) {
  LATTE_REQUIRE(batch > 0 && max_seq > 0, ErrorCode::invalid_argument, "KV cache needs batch > 0 and max_seq > 0");
  KvCache cache;
  cache.batch = batch;
  cache.max_seq = max_seq;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (c.is_mla()) {
      cache.latent.push_back(Tensor::zeros({batch, max_seq, c.kv_lora_rank()}));
      cache.k_rope.push_back(Tensor::zeros({batch, max_seq, c.n_kv_heads, c.rope_dim()}));
    } else {
      cache.k.push_back(Tensor::zeros({batch, max_seq, c.n_kv_heads, c.head_dim}));
      cache.v.push_back(Tensor::zeros({batch, max_seq, c.n_kv_heads, c.head_dim}));
    }
  }
  return cache;
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const auto* list : {&k, &v, &latent, &k_rope})
    for (const Tensor& t : *list) n += int64_t(t.nbytes());
  return n;
}

Transformer::Transformer(ModelConfig config, ModelWeights weights, Backend& backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(&backend) {
  config_.validate("model");
  LATTE_REQUIRE(int64_t(weights_.layers.size()) == config_.n_layers, ErrorCode::shape_mismatch, "model has ",
                weights_.layers.size(), " layers of weights, config says ", config_.n_layers);
  if (!config_.is_mla()) return;
  // Head layout [rope | nope] (config.h): slot pair s < r of a head in KV group j rotates with
  // frequency rope_freqs[l][j][s]; the no-RoPE slots stay unrotated.
  const ModelConfig& c = config_;
  const int64_t half = c.head_dim / 2, group = c.n_heads / c.n_kv_heads;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    std::vector<int32_t> q(size_t(c.n_heads * half), -1), k;
    for (int64_t h = 0; h < c.n_heads; ++h)
      for (int64_t s = 0; s < c.rope_pairs; ++s) q[size_t(h * half + s)] = c.rope_freqs[size_t(l)][size_t(h / group)][size_t(s)];
    for (int64_t j = 0; j < c.n_kv_heads; ++j)
      for (int32_t f : c.rope_freqs[size_t(l)][size_t(j)]) k.push_back(f);
    q_pair_freqs_.push_back(std::move(q));
    k_pair_freqs_.push_back(std::move(k));
  }
}

RopeParams Transformer::q_rope(int64_t layer) const {
  RopeParams p{.layout = config_.rope_layout, .theta = config_.rope_theta, .head_dim = config_.head_dim};
  if (config_.is_mla()) p.pair_freqs = q_pair_freqs_[size_t(layer)];
  return p;
}

RopeParams Transformer::k_rope(int64_t layer) const {
  if (!config_.is_mla()) return q_rope(layer);
  return RopeParams{.layout = RopeLayout::interleaved, .theta = config_.rope_theta, .head_dim = config_.rope_dim(),
                    .pair_freqs = k_pair_freqs_[size_t(layer)], .freq_dim = config_.head_dim};
}

namespace {

detail::AttentionContext context(const Transformer& m, const LayerWeights& w, int64_t l) {
  return detail::AttentionContext{m.config(), m.backend(), w, l, m.q_rope(l), m.k_rope(l),
                                  1.0f / std::sqrt(float(m.config().head_dim))};
}

}  // namespace

Tensor Transformer::forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which,
                            MlaForm form) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  LATTE_REQUIRE(batch > 0 && int64_t(tokens.size()) % batch == 0 && !tokens.empty(), ErrorCode::invalid_argument,
                "forward: ", tokens.size(), " tokens do not split into ", batch, " rows");
  LATTE_REQUIRE(cache.batch == batch, ErrorCode::invalid_argument, "forward: KV cache has ", cache.batch,
                " rows, the batch has ", batch);
  LATTE_REQUIRE(int64_t(c.is_mla() ? cache.latent.size() : cache.k.size()) == c.n_layers, ErrorCode::invalid_argument,
                "forward: the KV cache was made for another architecture");
  const int64_t T = int64_t(tokens.size()) / batch;
  const int64_t pos0 = cache.length;
  LATTE_REQUIRE(pos0 + T <= cache.max_seq, ErrorCode::invalid_argument, "forward: ", pos0 + T,
                " positions exceed the context of ", cache.max_seq, " tokens");
  const int64_t BT = batch * T;

  std::vector<int32_t> positions(static_cast<size_t>(BT));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < T; ++t) positions[size_t(b * T + t)] = int32_t(pos0 + t);

  Tensor x = Tensor::empty({BT, c.dim});
  be.embedding_forward(x, tokens, weights_.tok_embeddings);
  Tensor xn = Tensor::empty({BT, c.dim});
  Tensor att = Tensor::empty({batch, T, c.n_heads, c.head_dim});
  Tensor gate = Tensor::empty({BT, c.hidden_dim}), up = Tensor::empty({BT, c.hidden_dim});
  Tensor h = Tensor::empty({BT, c.hidden_dim});

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    be.rmsnorm_forward(xn, nullptr, x, L.attn_norm, c.norm_eps);
    const detail::AttentionContext a = context(*this, L, l);
    if (c.is_mla()) {
      detail::mla_attention_infer(a, xn, batch, T, cache, positions, att, form);
    } else {
      detail::gqa_attention_infer(a, xn, batch, T, cache, positions, att);
    }
    be.linear_forward(x, att.reshape({BT, c.q_dim()}), L.wo, true);  // residual: x += wo . att
    be.rmsnorm_forward(xn, nullptr, x, L.ffn_norm, c.norm_eps);
    be.linear_forward(gate, xn, L.w_gate, false);
    be.linear_forward(up, xn, L.w_up, false);
    be.swiglu_forward(h, gate, up);
    be.linear_forward(x, h, L.w_down, true);
  }
  cache.length = pos0 + T;

  Tensor last = x;
  if (which == LogitsFor::last_position && T > 1) {
    last = Tensor::empty({batch, c.dim});
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(last.f32() + b * c.dim, x.f32() + ((b + 1) * T - 1) * c.dim, size_t(c.dim) * 4);
  }
  Tensor lastn = Tensor::empty(last.shape());
  be.rmsnorm_forward(lastn, nullptr, last, weights_.norm, c.norm_eps);
  Tensor logits = Tensor::empty({last.dim(0), c.vocab_size});
  be.linear_forward(logits, lastn, weights_.lm_head, false);
  return logits;
}

float Transformer::forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                                 Activations& a) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  LATTE_REQUIRE(batch > 0 && !tokens.empty() && int64_t(tokens.size()) % batch == 0, ErrorCode::invalid_argument,
                "forward_train: ", tokens.size(), " tokens do not split into ", batch, " rows");
  LATTE_REQUIRE(targets.size() == tokens.size(), ErrorCode::invalid_argument, "forward_train: ", targets.size(),
                " targets for ", tokens.size(), " tokens");
  const int64_t T = int64_t(tokens.size()) / batch, BT = batch * T;
  LATTE_REQUIRE(T <= c.max_seq_len, ErrorCode::invalid_argument, "forward_train: sequence of ", T,
                " tokens exceeds the model context of ", c.max_seq_len);

  a.batch = batch;
  a.seq = T;
  a.tokens.assign(tokens.begin(), tokens.end());
  a.targets.assign(targets.begin(), targets.end());
  a.positions.resize(size_t(BT));
  for (int64_t i = 0; i < BT; ++i) a.positions[size_t(i)] = int32_t(i % T);
  a.layers.resize(size_t(c.n_layers));

  Tensor x = Tensor::empty({BT, c.dim});
  be.embedding_forward(x, tokens, weights_.tok_embeddings);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    Activations::Layer& A = a.layers[size_t(l)];
    A.x_in = x;
    A.rstd_attn = Tensor::empty({BT});
    A.xn_attn = Tensor::empty({BT, c.dim});
    be.rmsnorm_forward(A.xn_attn, &A.rstd_attn, x, L.attn_norm, c.norm_eps);
    const detail::AttentionContext ctx = context(*this, L, l);
    if (c.is_mla()) {
      detail::mla_attention_train(ctx, A, batch, T, a.positions);
    } else {
      detail::gqa_attention_train(ctx, A, batch, T, a.positions);
    }
    A.x_mid = x.clone();
    be.linear_forward(A.x_mid, A.attn_out.reshape({BT, c.q_dim()}), L.wo, true);
    A.rstd_ffn = Tensor::empty({BT});
    A.xn_ffn = Tensor::empty({BT, c.dim});
    be.rmsnorm_forward(A.xn_ffn, &A.rstd_ffn, A.x_mid, L.ffn_norm, c.norm_eps);
    A.gate = Tensor::empty({BT, c.hidden_dim});
    A.up = Tensor::empty({BT, c.hidden_dim});
    A.h = Tensor::empty({BT, c.hidden_dim});
    be.linear_forward(A.gate, A.xn_ffn, L.w_gate, false);
    be.linear_forward(A.up, A.xn_ffn, L.w_up, false);
    be.swiglu_forward(A.h, A.gate, A.up);
    x = A.x_mid.clone();
    be.linear_forward(x, A.h, L.w_down, true);
  }
  a.x_final = x;
  a.rstd_final = Tensor::empty({BT});
  a.xn_final = Tensor::empty({BT, c.dim});
  be.rmsnorm_forward(a.xn_final, &a.rstd_final, x, weights_.norm, c.norm_eps);
  a.logits = Tensor::empty({BT, c.vocab_size});
  be.linear_forward(a.logits, a.xn_final, weights_.lm_head, false);
  a.losses = Tensor::empty({BT});
  be.cross_entropy_forward(a.losses, a.logits, targets);

  a.n_targets = 0;
  double sum = 0;
  const float* lp = a.losses.f32();
  for (int64_t i = 0; i < BT; ++i) {
    if (targets[size_t(i)] < 0) continue;
    sum += lp[i];
    ++a.n_targets;
  }
  LATTE_REQUIRE(a.n_targets > 0, ErrorCode::invalid_argument, "forward_train: every target is ignored");
  return float(sum / double(a.n_targets));
}

void Transformer::backward(const Activations& a, ModelWeights& g) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const int64_t B = a.batch, T = a.seq, BT = B * T;
  LATTE_REQUIRE(int64_t(g.layers.size()) == c.n_layers, ErrorCode::shape_mismatch,
                "backward: gradients have ", g.layers.size(), " layers, the model ", c.n_layers);

  // Loss = mean over counted targets, hence the 1/n scale on every dlogits row.
  Tensor dlogits = Tensor::empty({BT, c.vocab_size});
  be.cross_entropy_backward(dlogits, a.logits, a.targets, 1.0f / float(a.n_targets));
  Tensor dxn = Tensor::zeros({BT, c.dim});
  be.linear_backward(&dxn, &g.lm_head, dlogits, a.xn_final, weights_.lm_head);
  Tensor dx = Tensor::zeros({BT, c.dim});  // gradient of the residual stream, accumulated (+=)
  be.rmsnorm_backward(dx, g.norm, dxn, a.x_final, weights_.norm, a.rstd_final);

  Tensor dh = Tensor::empty({BT, c.hidden_dim});
  Tensor dgate = Tensor::empty({BT, c.hidden_dim}), dup = Tensor::empty({BT, c.hidden_dim});
  Tensor dxn_l = Tensor::empty({BT, c.dim});
  Tensor datt = Tensor::empty({B, T, c.n_heads, c.head_dim});

  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    const Activations::Layer& A = a.layers[size_t(l)];
    LayerWeights& G = g.layers[size_t(l)];
    // MLP: x_out = x_mid + w_down . h
    dh.fill(0.0f);
    be.linear_backward(&dh, &G.w_down, dx, A.h, L.w_down);
    be.swiglu_backward(dgate, dup, dh, A.gate, A.up);
    dxn_l.fill(0.0f);
    be.linear_backward(&dxn_l, &G.w_gate, dgate, A.xn_ffn, L.w_gate);
    be.linear_backward(&dxn_l, &G.w_up, dup, A.xn_ffn, L.w_up);
    be.rmsnorm_backward(dx, G.ffn_norm, dxn_l, A.x_mid, L.ffn_norm, A.rstd_ffn);
    // Attention: x_mid = x_in + wo . attn_out
    datt.fill(0.0f);
    Tensor datt2 = datt.reshape({BT, c.q_dim()});
    be.linear_backward(&datt2, &G.wo, dx, A.attn_out.reshape({BT, c.q_dim()}), L.wo);
    dxn_l.fill(0.0f);
    const detail::AttentionContext ctx = context(*this, L, l);
    if (c.is_mla()) {
      detail::mla_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    } else {
      detail::gqa_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    }
    be.rmsnorm_backward(dx, G.attn_norm, dxn_l, A.x_in, L.attn_norm, A.rstd_attn);
  }
  be.embedding_backward(g.tok_embeddings, a.tokens, dx);
}

namespace detail {

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

}  // namespace detail

}  // namespace latte
