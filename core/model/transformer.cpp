#include "core/model/transformer.h"

#include <algorithm>
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

void for_each_weight(const ModelConfig& c, const TpLayout& tp, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f) {
  if (int64_t(w.layers.size()) != c.n_layers) w.layers.resize(size_t(c.n_layers));
  for (const auto& [name, shape] : model_tensor_shapes(c, tp)) f(name, shape, *slot(c, w, name));
}

void for_each_weight(const ModelConfig& c, ModelWeights& w,
                     const std::function<void(const std::string&, const Shape&, Tensor&)>& f) {
  for_each_weight(c, tp_layout(c, 0, 1), w, f);
}

ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store) {
  return weights_from_store(c, store, tp_layout(c, 0, 1));
}

ModelWeights weights_from_store(const ModelConfig& c, const TensorStore& store, const TpLayout& tp) {
  c.validate(store.origin);
  ModelWeights w = skeleton(c);
  for_each_weight(c, tp, w, [&](const std::string& name, const Shape& shape, Tensor& t) {
    t = store.get(name, shape);
    LATTE_REQUIRE(t.is_contiguous(), ErrorCode::bad_file, "tensor ", name, " in ", store.file_of(name),
                  " is not contiguous");
    // Kernels read f32 or bf16 weights; f16 widens to f32 exactly (bf16 would drop 3 mantissa bits).
    if (t.dtype() == DType::f16) t = t.to(DType::f32);
  });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w, const TpLayout& tp) {
  TensorStore store;
  ModelWeights copy = w;
  for_each_weight(c, tp, copy, [&](const std::string& name, const Shape&, Tensor& t) { store.put(name, t, "(memory)"); });
  store.origin = "(memory)";
  return store;
}

TensorStore weights_to_store(const ModelConfig& c, const ModelWeights& w) {
  return weights_to_store(c, w, tp_layout(c, 0, 1));
}

ModelWeights weights_zeros_like(const ModelConfig& c, const TpLayout& tp) {
  ModelWeights w = skeleton(c);
  for_each_weight(c, tp, w, [&](const std::string&, const Shape& shape, Tensor& t) { t = Tensor::zeros(shape); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

ModelWeights weights_zeros_like(const ModelConfig& c) { return weights_zeros_like(c, tp_layout(c, 0, 1)); }

ModelWeights weights_to_f32(const ModelConfig& c, const ModelWeights& src) {
  ModelWeights w = src;
  for_each_weight(c, w, [&](const std::string&, const Shape&, Tensor& t) { t = t.to(DType::f32); });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq) {
  return create(c, batch, max_seq, tp_layout(c, 0, 1));
}

KvCache KvCache::create(const ModelConfig& c, int64_t batch, int64_t max_seq, const TpLayout& tp) {
  LATTE_REQUIRE(batch > 0 && max_seq > 0, ErrorCode::invalid_argument, "KV cache needs batch > 0 and max_seq > 0");
  KvCache cache;
  cache.batch = batch;
  cache.max_seq = max_seq;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (c.is_mla()) {
      cache.latent.push_back(Tensor::zeros({batch, max_seq, c.kv_lora_rank()}));
      cache.k_rope.push_back(Tensor::zeros({batch, max_seq, tp.kv_heads, c.rope_dim()}));
    } else {
      cache.k.push_back(Tensor::zeros({batch, max_seq, tp.kv_heads, c.head_dim}));
      cache.v.push_back(Tensor::zeros({batch, max_seq, tp.kv_heads, c.head_dim}));
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

Transformer::Transformer(ModelConfig config, ModelWeights weights, Backend& backend, Communicator* tp_comm)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(&backend),
      comm_(tp_comm ? tp_comm : &solo_) {
  config_.validate("model");
  tp_ = tp_layout(config_, comm_->rank(), comm_->size());
  LATTE_REQUIRE(int64_t(weights_.layers.size()) == config_.n_layers, ErrorCode::shape_mismatch, "model has ",
                weights_.layers.size(), " layers of weights, config says ", config_.n_layers);
  for_each_weight(config_, tp_, weights_, [&](const std::string& name, const Shape& shape, Tensor& t) {
    LATTE_REQUIRE(t.shape() == shape, ErrorCode::shape_mismatch, "weight ", name, " has shape ", shape_str(t.shape()),
                  ", expected ", shape_str(shape), " for tensor-parallel rank ", tp_.rank, " of ", tp_.size);
  });
  if (!config_.is_mla()) return;
  // Head layout [rope | nope] (config.h): slot pair s < r of a head in KV group j rotates with
  // frequency rope_freqs[l][j][s]; the no-RoPE slots stay unrotated. Tables cover this rank's heads.
  const ModelConfig& c = config_;
  const int64_t half = c.head_dim / 2, group = c.n_heads / c.n_kv_heads;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    std::vector<int32_t> q(size_t(tp_.heads * half), -1), k;
    for (int64_t hl = 0; hl < tp_.heads; ++hl)
      for (int64_t s = 0; s < c.rope_pairs; ++s)
        q[size_t(hl * half + s)] = c.rope_freqs[size_t(l)][size_t((tp_.heads0 + hl) / group)][size_t(s)];
    for (int64_t jl = 0; jl < tp_.kv_heads; ++jl)
      for (int32_t f : c.rope_freqs[size_t(l)][size_t(tp_.kv_heads0 + jl)]) k.push_back(f);
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

detail::AttentionContext context(const Transformer& m, const LayerWeights& w, int64_t l, Communicator& comm) {
  return detail::AttentionContext{m.config(), m.backend(), w, l, m.tp().heads, m.tp().kv_heads, m.q_rope(l),
                                  m.k_rope(l), 1.0f / std::sqrt(float(m.config().head_dim)), comm};
}

}  // namespace

void Transformer::all_reduce(Tensor& t, ReduceOp op) {
  if (parallel()) comm_->all_reduce(t, op);
}

Tensor Transformer::embed(std::span<const int32_t> tokens) {
  const ModelConfig& c = config_;
  Tensor x = Tensor::empty({int64_t(tokens.size()), c.dim});
  if (!parallel()) {
    backend_->embedding_forward(x, tokens, weights_.tok_embeddings);
    return x;
  }
  // Vocab-parallel: this rank holds rows [vocab0, vocab0 + vocab); other tokens get zero rows and
  // the all-reduce fills them in from the rank that owns them.
  std::vector<int32_t> local(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    LATTE_REQUIRE(tokens[i] >= 0 && tokens[i] < c.vocab_size, ErrorCode::invalid_argument, "token id ", tokens[i],
                  " at position ", i, " is outside the vocabulary of ", c.vocab_size);
    int64_t id = tokens[i] - tp_.vocab0;
    local[i] = (id >= 0 && id < tp_.vocab) ? int32_t(id) : 0;
  }
  backend_->embedding_forward(x, local, weights_.tok_embeddings);
  for (size_t i = 0; i < tokens.size(); ++i) {
    int64_t id = tokens[i] - tp_.vocab0;
    if (id < 0 || id >= tp_.vocab) std::memset(x.f32() + int64_t(i) * c.dim, 0, size_t(c.dim) * 4);
  }
  comm_->all_reduce(x, ReduceOp::sum);
  return x;
}

void Transformer::embed_backward(std::span<const int32_t> tokens, const Tensor& dx, ModelWeights& g) {
  if (!parallel()) {
    backend_->embedding_backward(g.tok_embeddings, tokens, dx);
    return;
  }
  const int64_t D = config_.dim;
  Tensor masked = dx.clone();
  std::vector<int32_t> local(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    int64_t id = tokens[i] - tp_.vocab0;
    bool mine = id >= 0 && id < tp_.vocab;
    local[i] = mine ? int32_t(id) : 0;
    if (!mine) std::memset(masked.f32() + int64_t(i) * D, 0, size_t(D) * 4);
  }
  backend_->embedding_backward(g.tok_embeddings, local, masked);
}

void Transformer::row_parallel_accumulate(Tensor& y, const Tensor& x, const Tensor& w) {
  if (!parallel()) {
    backend_->linear_forward(y, x, w, true);
    return;
  }
  Tensor partial = Tensor::empty(y.shape());
  backend_->linear_forward(partial, x, w, false);
  comm_->all_reduce(partial, ReduceOp::sum);
  backend_->add_inplace(y, partial);
}

Tensor Transformer::gather_logits(const Tensor& local) {
  if (!parallel()) return local;
  const int64_t N = local.dim(0), Vl = tp_.vocab;
  Tensor blocks = Tensor::empty({tp_.size * N, Vl});
  comm_->all_gather(blocks, local);
  Tensor full = Tensor::empty({N, config_.vocab_size});
  for (int64_t r = 0; r < tp_.size; ++r)
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(full.f32() + n * config_.vocab_size + r * Vl, blocks.f32() + (r * N + n) * Vl, size_t(Vl) * 4);
  return full;
}

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

  Tensor x = embed(tokens);
  Tensor xn = Tensor::empty({BT, c.dim});
  Tensor att = Tensor::empty({batch, T, tp_.heads, c.head_dim});
  Tensor gate = Tensor::empty({BT, tp_.hidden}), up = Tensor::empty({BT, tp_.hidden});
  Tensor h = Tensor::empty({BT, tp_.hidden});

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    be.rmsnorm_forward(xn, nullptr, x, L.attn_norm, c.norm_eps);
    const detail::AttentionContext a = context(*this, L, l, *comm_);
    if (c.is_mla()) {
      detail::mla_attention_infer(a, xn, batch, T, cache, positions, att, form);
    } else {
      detail::gqa_attention_infer(a, xn, batch, T, cache, positions, att);
    }
    row_parallel_accumulate(x, att.reshape({BT, tp_.heads * c.head_dim}), L.wo);  // x += wo . att
    be.rmsnorm_forward(xn, nullptr, x, L.ffn_norm, c.norm_eps);
    be.linear_forward(gate, xn, L.w_gate, false);
    be.linear_forward(up, xn, L.w_up, false);
    be.swiglu_forward(h, gate, up);
    row_parallel_accumulate(x, h, L.w_down);
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
  Tensor logits = Tensor::empty({last.dim(0), tp_.vocab});
  be.linear_forward(logits, lastn, weights_.lm_head, false);
  return gather_logits(logits);
}

Tensor Transformer::layer_forward_train(int64_t l, const Tensor& x, int64_t batch, int64_t T,
                                       std::span<const int32_t> positions, Activations::Layer& A) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const int64_t BT = batch * T;
  const LayerWeights& L = weights_.layers[size_t(l)];
  A.x_in = x;
  A.rstd_attn = Tensor::empty({BT});
  A.xn_attn = Tensor::empty({BT, c.dim});
  be.rmsnorm_forward(A.xn_attn, &A.rstd_attn, x, L.attn_norm, c.norm_eps);
  const detail::AttentionContext ctx = context(*this, L, l, *comm_);
  if (c.is_mla()) {
    detail::mla_attention_train(ctx, A, batch, T, positions);
  } else {
    detail::gqa_attention_train(ctx, A, batch, T, positions);
  }
  A.x_mid = x.clone();
  row_parallel_accumulate(A.x_mid, A.attn_out.reshape({BT, tp_.heads * c.head_dim}), L.wo);
  A.rstd_ffn = Tensor::empty({BT});
  A.xn_ffn = Tensor::empty({BT, c.dim});
  be.rmsnorm_forward(A.xn_ffn, &A.rstd_ffn, A.x_mid, L.ffn_norm, c.norm_eps);
  A.gate = Tensor::empty({BT, tp_.hidden});
  A.up = Tensor::empty({BT, tp_.hidden});
  A.h = Tensor::empty({BT, tp_.hidden});
  be.linear_forward(A.gate, A.xn_ffn, L.w_gate, false);
  be.linear_forward(A.up, A.xn_ffn, L.w_up, false);
  be.swiglu_forward(A.h, A.gate, A.up);
  Tensor out = A.x_mid.clone();
  row_parallel_accumulate(out, A.h, L.w_down);
  return out;
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

  Tensor x = embed(tokens);
  a.recomputed = recompute_;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Activations::Layer& A = a.layers[size_t(l)];
    x = layer_forward_train(l, x, batch, T, a.positions, A);
    // With recomputation only the layer input stays; backward rebuilds the rest from it.
    if (recompute_) A = Activations::Layer{A.x_in};
  }
  a.x_final = x;
  a.rstd_final = Tensor::empty({BT});
  a.xn_final = Tensor::empty({BT, c.dim});
  be.rmsnorm_forward(a.xn_final, &a.rstd_final, x, weights_.norm, c.norm_eps);
  a.logits = Tensor::empty({BT, tp_.vocab});
  be.linear_forward(a.logits, a.xn_final, weights_.lm_head, false);
  a.losses = Tensor::empty({BT});
  if (parallel()) {
    vocab_parallel_cross_entropy(a, targets);
  } else {
    be.cross_entropy_forward(a.losses, a.logits, targets);
  }

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

void Transformer::backward(const Activations& a, ModelWeights& g, const Tensor* extra_dlogits) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const int64_t B = a.batch, T = a.seq, BT = B * T;
  LATTE_REQUIRE(int64_t(g.layers.size()) == c.n_layers, ErrorCode::shape_mismatch,
                "backward: gradients have ", g.layers.size(), " layers, the model ", c.n_layers);
  LATTE_REQUIRE(!tp_.kv_replicated, ErrorCode::unsupported, "training with --tp ", tp_.size, " larger than n_kv_heads (",
                c.n_kv_heads, ") is not supported: the shared KV heads' gradients would need a sub-group all-reduce");

  // Loss = mean over counted targets, hence the 1/n scale on every dlogits row.
  const float scale = 1.0f / float(a.n_targets);
  Tensor dlogits = Tensor::empty({BT, tp_.vocab});
  if (parallel()) {
    vocab_parallel_cross_entropy_backward(a, dlogits, scale);
  } else {
    be.cross_entropy_backward(dlogits, a.logits, a.targets, scale);
  }
  if (extra_dlogits) {
    extra_dlogits->expect_shape(dlogits.shape(), "backward: extra_dlogits");
    be.add_inplace(dlogits, *extra_dlogits);
  }
  Tensor dxn = Tensor::zeros({BT, c.dim});
  be.linear_backward(&dxn, &g.lm_head, dlogits, a.xn_final, weights_.lm_head);
  all_reduce(dxn);  // lm_head is column-parallel over the vocabulary
  Tensor dx = Tensor::zeros({BT, c.dim});  // gradient of the residual stream, accumulated (+=)
  be.rmsnorm_backward(dx, g.norm, dxn, a.x_final, weights_.norm, a.rstd_final);

  Tensor dh = Tensor::empty({BT, tp_.hidden});
  Tensor dgate = Tensor::empty({BT, tp_.hidden}), dup = Tensor::empty({BT, tp_.hidden});
  Tensor dxn_l = Tensor::empty({BT, c.dim});
  Tensor datt = Tensor::empty({B, T, tp_.heads, c.head_dim});

  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    // Recomputation: the same forward (and collectives) again from the saved layer input, so the
    // gradients are bit-identical to a run that kept everything.
    Activations::Layer rebuilt;
    if (a.recomputed) layer_forward_train(l, a.layers[size_t(l)].x_in, B, T, a.positions, rebuilt);
    const Activations::Layer& A = a.recomputed ? rebuilt : a.layers[size_t(l)];
    LayerWeights& G = g.layers[size_t(l)];
    // MLP: x_out = x_mid + w_down . h
    dh.fill(0.0f);
    be.linear_backward(&dh, &G.w_down, dx, A.h, L.w_down);
    be.swiglu_backward(dgate, dup, dh, A.gate, A.up);
    dxn_l.fill(0.0f);
    be.linear_backward(&dxn_l, &G.w_gate, dgate, A.xn_ffn, L.w_gate);
    be.linear_backward(&dxn_l, &G.w_up, dup, A.xn_ffn, L.w_up);
    all_reduce(dxn_l);  // gate/up are column-parallel
    be.rmsnorm_backward(dx, G.ffn_norm, dxn_l, A.x_mid, L.ffn_norm, A.rstd_ffn);
    // Attention: x_mid = x_in + wo . attn_out
    datt.fill(0.0f);
    Tensor datt2 = datt.reshape({BT, tp_.heads * c.head_dim});
    be.linear_backward(&datt2, &G.wo, dx, A.attn_out.reshape({BT, tp_.heads * c.head_dim}), L.wo);
    dxn_l.fill(0.0f);
    const detail::AttentionContext ctx = context(*this, L, l, *comm_);
    if (c.is_mla()) {
      detail::mla_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    } else {
      detail::gqa_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    }
    all_reduce(dxn_l);  // the attention projections are column-parallel over heads
    be.rmsnorm_backward(dx, G.attn_norm, dxn_l, A.x_in, L.attn_norm, A.rstd_attn);
  }
  embed_backward(a.tokens, dx, g);
}

// Cross-entropy over logits split by vocabulary rows: loss_t = logsumexp over all ranks' logits
// minus the target's logit, from three all-reduces of [B*T] vectors (max, sum of exponentials,
// target logit) instead of gathering [B*T, V].
void Transformer::vocab_parallel_cross_entropy(Activations& a, std::span<const int32_t> targets) {
  const int64_t N = a.logits.dim(0), Vl = tp_.vocab;
  Tensor mx = Tensor::empty({N}), sum = Tensor::zeros({N}), tgt = Tensor::zeros({N});
  const float* l = a.logits.f32();
  for (int64_t n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int64_t v = 0; v < Vl; ++v) m = std::max(m, l[n * Vl + v]);
    mx.f32()[n] = m;
  }
  comm_->all_reduce(mx, ReduceOp::max);
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[size_t(n)];
    LATTE_REQUIRE(t < config_.vocab_size, ErrorCode::invalid_argument, "target ", t, " at position ", n,
                  " is outside the vocabulary of ", config_.vocab_size);
    double s = 0;
    for (int64_t v = 0; v < Vl; ++v) s += std::exp(double(l[n * Vl + v] - mx.f32()[n]));
    sum.f32()[n] = float(s);
    if (t >= tp_.vocab0 && t < tp_.vocab0 + Vl) tgt.f32()[n] = l[n * Vl + (t - tp_.vocab0)];
  }
  comm_->all_reduce(sum, ReduceOp::sum);
  comm_->all_reduce(tgt, ReduceOp::sum);
  a.logsumexp = Tensor::empty({N});
  for (int64_t n = 0; n < N; ++n) {
    a.logsumexp.f32()[n] = mx.f32()[n] + std::log(sum.f32()[n]);
    a.losses.f32()[n] = targets[size_t(n)] < 0 ? 0.0f : a.logsumexp.f32()[n] - tgt.f32()[n];
  }
}

void Transformer::vocab_parallel_cross_entropy_backward(const Activations& a, Tensor& dlogits, float scale) {
  const int64_t N = a.logits.dim(0), Vl = tp_.vocab;
  const float* l = a.logits.f32();
  float* d = dlogits.f32();
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = a.targets[size_t(n)];
    for (int64_t v = 0; v < Vl; ++v) {
      d[n * Vl + v] = t < 0 ? 0.0f
                            : scale * (std::exp(l[n * Vl + v] - a.logsumexp.f32()[n]) -
                                       (t == tp_.vocab0 + v ? 1.0f : 0.0f));
    }
  }
}

namespace detail {

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

}  // namespace detail

}  // namespace latte
