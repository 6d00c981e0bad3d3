#include "core/model/llama.h"

#include <cmath>
#include <cstring>

namespace latte {

namespace {

Shape layer_shape(const ModelConfig& c, const std::string& leaf) {
  if (leaf == "input_layernorm.weight" || leaf == "post_attention_layernorm.weight") return {c.dim};
  if (leaf == "self_attn.q_proj.weight") return {c.q_dim(), c.dim};
  if (leaf == "self_attn.k_proj.weight" || leaf == "self_attn.v_proj.weight") return {c.kv_dim(), c.dim};
  if (leaf == "self_attn.o_proj.weight") return {c.dim, c.q_dim()};
  if (leaf == "mlp.gate_proj.weight" || leaf == "mlp.up_proj.weight") return {c.hidden_dim, c.dim};
  if (leaf == "mlp.down_proj.weight") return {c.dim, c.hidden_dim};
  fail(ErrorCode::internal, "no shape for ", leaf);
}

Shape weight_shape(const ModelConfig& c, const std::string& name) {
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {c.vocab_size, c.dim};
  if (name == "model.norm.weight") return {c.dim};
  size_t dot = name.find('.', std::string("model.layers.").size());
  return layer_shape(c, name.substr(dot + 1));
}

// Fills an empty skeleton with the right number of layers so for_each can name every slot.
LlamaWeights skeleton(const ModelConfig& c) {
  LlamaWeights w;
  w.layers.resize(size_t(c.n_layers));
  return w;
}

}  // namespace

LlamaWeights llama_weights_from_store(const ModelConfig& c, const TensorStore& store) {
  c.validate(store.origin);
  LlamaWeights w = skeleton(c);
  w.for_each(c.tied_embeddings, [&](const std::string& name, Tensor& t) {
    t = store.get(name, weight_shape(c, name));
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::bad_file, "tensor ", name, " in ", store.file_of(name),
                  " is not contiguous");
    // Kernels read f32 or bf16 weights; f16 widens to f32 exactly (bf16 would drop 3 mantissa bits).
    if (t.dtype() == DType::f16) t = t.to(DType::f32);
  });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

TensorStore llama_weights_to_store(const ModelConfig& c, const LlamaWeights& w) {
  TensorStore store;
  LlamaWeights copy = w;
  copy.for_each(c.tied_embeddings, [&](const std::string& name, Tensor& t) { store.put(name, t, "(memory)"); });
  store.origin = "(memory)";
  return store;
}

LlamaWeights llama_weights_zeros_like(const ModelConfig& c) {
  LlamaWeights w = skeleton(c);
  w.for_each(c.tied_embeddings, [&](const std::string& name, Tensor& t) { t = Tensor::zeros(weight_shape(c, name)); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

LlamaWeights llama_weights_to_f32(const ModelConfig& c, const LlamaWeights& src) {
  LlamaWeights w = src;
  w.for_each(c.tied_embeddings, [&](const std::string&, Tensor& t) { t = t.to(DType::f32); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq) {
  LATTE_REQUIRE(batch > 0 && max_seq > 0, ErrorCode::invalid_argument, "KV cache needs batch > 0 and max_seq > 0");
  KvCache cache;
  cache.batch = batch;
  cache.max_seq = max_seq;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    cache.k.push_back(Tensor::zeros({batch, max_seq, c.n_kv_heads, c.head_dim}));
    cache.v.push_back(Tensor::zeros({batch, max_seq, c.n_kv_heads, c.head_dim}));
  }
  return cache;
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (const Tensor& t : k) n += int64_t(t.nbytes());
  for (const Tensor& t : v) n += int64_t(t.nbytes());
  return n;
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights, Backend& backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(&backend) {
  config_.validate("model");
  LATTE_REQUIRE(int64_t(weights_.layers.size()) == config_.n_layers, ErrorCode::shape_mismatch, "model has ",
                weights_.layers.size(), " layers of weights, config says ", config_.n_layers);
}

namespace {

// Copies rows [0, T) of src [B*T, H, hd] into dst [B, max_seq, H, hd] at positions pos..pos+T-1.
void write_cache(Tensor& dst, const Tensor& src, int64_t batch, int64_t T, int64_t pos) {
  int64_t row = dst.dim(2) * dst.dim(3);
  const float* s = src.f32();
  float* d = dst.f32();
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(d + (b * dst.dim(1) + pos) * row, s + b * T * row, size_t(T * row) * 4);
}

}  // namespace

Tensor LlamaModel::forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  LATTE_REQUIRE(batch > 0 && int64_t(tokens.size()) % batch == 0 && !tokens.empty(), ErrorCode::invalid_argument,
                "forward: ", tokens.size(), " tokens do not split into ", batch, " rows");
  LATTE_REQUIRE(cache.batch == batch, ErrorCode::invalid_argument, "forward: KV cache has ", cache.batch,
                " rows, the batch has ", batch);
  const int64_t T = int64_t(tokens.size()) / batch;
  const int64_t pos0 = cache.length;
  LATTE_REQUIRE(pos0 + T <= cache.max_seq, ErrorCode::invalid_argument, "forward: ", pos0 + T,
                " positions exceed the context of ", cache.max_seq, " tokens");
  const int64_t BT = batch * T, S = pos0 + T;
  const RopeParams rope{c.rope_layout, c.rope_theta, c.head_dim};
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

  std::vector<int32_t> positions(static_cast<size_t>(BT));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < T; ++t) positions[size_t(b * T + t)] = int32_t(pos0 + t);

  Tensor x = Tensor::empty({BT, c.dim});
  be.embedding_forward(x, tokens, weights_.tok_embeddings);
  Tensor xn = Tensor::empty({BT, c.dim});
  Tensor q = Tensor::empty({BT, c.n_heads, c.head_dim});
  Tensor k = Tensor::empty({BT, c.n_kv_heads, c.head_dim});
  Tensor v = Tensor::empty({BT, c.n_kv_heads, c.head_dim});
  Tensor att = Tensor::empty({batch, T, c.n_heads, c.head_dim});
  Tensor gate = Tensor::empty({BT, c.hidden_dim}), up = Tensor::empty({BT, c.hidden_dim});
  Tensor h = Tensor::empty({BT, c.hidden_dim});

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LlamaLayerWeights& L = weights_.layers[size_t(l)];
    be.rmsnorm_forward(xn, nullptr, x, L.attn_norm, c.norm_eps);
    Tensor q2 = q.reshape({BT, c.q_dim()}), k2 = k.reshape({BT, c.kv_dim()}), v2 = v.reshape({BT, c.kv_dim()});
    be.linear_forward(q2, xn, L.wq, false);
    be.linear_forward(k2, xn, L.wk, false);
    be.linear_forward(v2, xn, L.wv, false);
    be.rope_forward(q, positions, rope);
    be.rope_forward(k, positions, rope);
    write_cache(cache.k[size_t(l)], k, batch, T, pos0);
    write_cache(cache.v[size_t(l)], v, batch, T, pos0);
    Tensor ks = cache.k[size_t(l)].narrow(1, 0, S), vs = cache.v[size_t(l)].narrow(1, 0, S);
    be.attention_forward(att, nullptr, q.reshape({batch, T, c.n_heads, c.head_dim}), ks, vs, scale);
    be.linear_forward(x, att.reshape({BT, c.q_dim()}), L.wo, true);  // residual: x += wo . att
    be.rmsnorm_forward(xn, nullptr, x, L.ffn_norm, c.norm_eps);
    be.linear_forward(gate, xn, L.w_gate, false);
    be.linear_forward(up, xn, L.w_up, false);
    be.swiglu_forward(h, gate, up);
    be.linear_forward(x, h, L.w_down, true);
  }
  cache.length = S;

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

float LlamaModel::forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                                LlamaActivations& a) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  LATTE_REQUIRE(batch > 0 && !tokens.empty() && int64_t(tokens.size()) % batch == 0, ErrorCode::invalid_argument,
                "forward_train: ", tokens.size(), " tokens do not split into ", batch, " rows");
  LATTE_REQUIRE(targets.size() == tokens.size(), ErrorCode::invalid_argument, "forward_train: ", targets.size(),
                " targets for ", tokens.size(), " tokens");
  const int64_t T = int64_t(tokens.size()) / batch, BT = batch * T;
  LATTE_REQUIRE(T <= c.max_seq_len, ErrorCode::invalid_argument, "forward_train: sequence of ", T,
                " tokens exceeds the model context of ", c.max_seq_len);
  const RopeParams rope{c.rope_layout, c.rope_theta, c.head_dim};
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

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
    const LlamaLayerWeights& L = weights_.layers[size_t(l)];
    LlamaActivations::Layer& A = a.layers[size_t(l)];
    A.x_in = x;
    A.rstd_attn = Tensor::empty({BT});
    A.xn_attn = Tensor::empty({BT, c.dim});
    be.rmsnorm_forward(A.xn_attn, &A.rstd_attn, x, L.attn_norm, c.norm_eps);
    A.q = Tensor::empty({batch, T, c.n_heads, c.head_dim});
    A.k = Tensor::empty({batch, T, c.n_kv_heads, c.head_dim});
    A.v = Tensor::empty({batch, T, c.n_kv_heads, c.head_dim});
    Tensor q2 = A.q.reshape({BT, c.q_dim()}), k2 = A.k.reshape({BT, c.kv_dim()}), v2 = A.v.reshape({BT, c.kv_dim()});
    be.linear_forward(q2, A.xn_attn, L.wq, false);
    be.linear_forward(k2, A.xn_attn, L.wk, false);
    be.linear_forward(v2, A.xn_attn, L.wv, false);
    Tensor q3 = A.q.reshape({BT, c.n_heads, c.head_dim}), k3 = A.k.reshape({BT, c.n_kv_heads, c.head_dim});
    be.rope_forward(q3, a.positions, rope);
    be.rope_forward(k3, a.positions, rope);
    A.attn_out = Tensor::empty({batch, T, c.n_heads, c.head_dim});
    A.lse = Tensor::empty({batch, c.n_heads, T});
    be.attention_forward(A.attn_out, &A.lse, A.q, A.k, A.v, scale);
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

void LlamaModel::backward(const LlamaActivations& a, LlamaWeights& g) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const int64_t B = a.batch, T = a.seq, BT = B * T;
  const RopeParams rope{c.rope_layout, c.rope_theta, c.head_dim};
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
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
  Tensor dq = Tensor::empty({B, T, c.n_heads, c.head_dim});
  Tensor dk = Tensor::empty({B, T, c.n_kv_heads, c.head_dim});
  Tensor dv = Tensor::empty({B, T, c.n_kv_heads, c.head_dim});

  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const LlamaLayerWeights& L = weights_.layers[size_t(l)];
    const LlamaActivations::Layer& A = a.layers[size_t(l)];
    LlamaLayerWeights& G = g.layers[size_t(l)];
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
    be.attention_backward(dq, dk, dv, datt, A.q, A.k, A.v, A.attn_out, A.lse, scale);
    Tensor dq3 = dq.reshape({BT, c.n_heads, c.head_dim}), dk3 = dk.reshape({BT, c.n_kv_heads, c.head_dim});
    be.rope_backward(dq3, a.positions, rope);
    be.rope_backward(dk3, a.positions, rope);
    dxn_l.fill(0.0f);
    Tensor dq2 = dq.reshape({BT, c.q_dim()}), dk2 = dk.reshape({BT, c.kv_dim()}), dv2 = dv.reshape({BT, c.kv_dim()});
    be.linear_backward(&dxn_l, &G.wq, dq2, A.xn_attn, L.wq);
    be.linear_backward(&dxn_l, &G.wk, dk2, A.xn_attn, L.wk);
    be.linear_backward(&dxn_l, &G.wv, dv2, A.xn_attn, L.wv);
    be.rmsnorm_backward(dx, G.attn_norm, dxn_l, A.x_in, L.attn_norm, A.rstd_attn);
  }
  be.embedding_backward(g.tok_embeddings, a.tokens, dx);
}

}  // namespace latte
