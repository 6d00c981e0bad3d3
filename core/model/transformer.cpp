#include "core/model/transformer.h"

#include <cmath>

#include "core/model/attention_block.h"
#include "parallel/tensor_parallel/column_parallel.h"
#include "parallel/tensor_parallel/row_parallel.h"
#include "parallel/tensor_parallel/vocab_parallel_cross_entropy.h"
#include "parallel/tensor_parallel/vocab_parallel_embedding.h"

namespace latte {

namespace tp = tensor_parallel;

namespace {

const ModelConfig& validated(const ModelConfig& c) {
  c.validate("model");
  return c;
}

// A buffer of the previous step that can be overwritten in place: same shape, f32, and nobody
// else holds it (see Activations::dlogits_workspace for why it is kept).
bool reusable(const Tensor& t, const Shape& shape) {
  return t.defined() && !t.storage_shared() && t.dtype() == DType::f32 && t.shape() == shape && t.is_contiguous();
}

detail::AttentionContext context(const Transformer& m, tp::TpGroup g, const LayerWeights& w, int64_t l) {
  return detail::AttentionContext{m.config(), g, w, l, m.tp().heads, m.tp().kv_heads, m.q_rope(l), m.k_rope(l),
                                  1.0f / std::sqrt(float(m.config().head_dim))};
}

}  // namespace

Transformer::Transformer(ModelConfig config, ModelWeights weights, Backend& backend, Communicator* tp_comm)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(&backend),
      comm_(tp_comm ? tp_comm : &solo_), tp_(tp_layout(validated(config_), comm_->rank(), comm_->size())),
      rope_(config_, tp_) {
  LATTE_REQUIRE(int64_t(weights_.layers.size()) == config_.n_layers, ErrorCode::shape_mismatch, "model has ",
                weights_.layers.size(), " layers of weights, config says ", config_.n_layers);
  for_each_weight(config_, tp_, weights_, [&](const std::string& name, const Shape& shape, Tensor& t) {
    LATTE_REQUIRE(t.shape() == shape, ErrorCode::shape_mismatch, "weight ", name, " has shape ", shape_str(t.shape()),
                  ", expected ", shape_str(shape), " for tensor-parallel rank ", tp_.rank, " of ", tp_.size);
    t = backend_->to_device(t);
  });
  if (config_.tied_embeddings) weights_.lm_head = weights_.tok_embeddings;
}

Tensor Transformer::forward(std::span<const int32_t> tokens, int64_t batch, KvCache& cache, LogitsFor which,
                            MlaForm form) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const tp::TpGroup g = group();
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

  Tensor x = infer_layers(tokens, [&](const detail::AttentionContext& a, const Tensor& xn, Tensor& att) {
    Tensor att4 = att.reshape({batch, T, tp_.heads, c.head_dim});
    if (c.is_mla()) {
      detail::mla_attention_infer(a, xn, batch, T, cache, positions, att4, form);
    } else {
      detail::gqa_attention_infer(a, xn, batch, T, cache, positions, att4);
    }
  });
  cache.length = pos0 + T;

  Tensor last = x;
  if (which == LogitsFor::last_position && T > 1) {
    last = be.empty({batch, c.dim});
    Tensor last3 = last.reshape({batch, 1, c.dim});
    be.copy(last3, x.reshape({batch, T, c.dim}).narrow(1, T - 1, T));
  }
  Tensor lastn = be.empty(last.shape());
  be.rmsnorm_forward(lastn, nullptr, last, weights_.norm, c.norm_eps);
  Tensor logits = be.empty({last.dim(0), tp_.vocab});
  tp::column_parallel_forward(g, logits, lastn, weights_.lm_head);
  return tp::gather_output(g, logits);
}

Tensor Transformer::infer_layers(std::span<const int32_t> tokens, const AttendFn& attend) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const tp::TpGroup g = group();
  const int64_t N = int64_t(tokens.size());
  Tensor x = be.empty({N, c.dim});
  tp::vocab_parallel_embedding_forward(g, x, tokens, weights_.tok_embeddings, tp_.vocab0, c.vocab_size);
  Tensor xn = be.empty({N, c.dim});
  Tensor att = be.empty({N, tp_.heads, c.head_dim});
  Tensor gate = be.empty({N, tp_.hidden}), up = be.empty({N, tp_.hidden});
  Tensor h = be.empty({N, tp_.hidden});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    be.rmsnorm_forward(xn, nullptr, x, L.attn_norm, c.norm_eps);
    attend(context(*this, g, L, l), xn, att);
    tp::row_parallel_forward_accumulate(g, x, att.reshape({N, tp_.heads * c.head_dim}), L.wo);  // x += wo . att
    be.rmsnorm_forward(xn, nullptr, x, L.ffn_norm, c.norm_eps);
    Tensor* gate_up[] = {&gate, &up};
    const Tensor* w_gate_up[] = {&L.w_gate, &L.w_up};
    tp::column_parallel_forward_group(g, gate_up, xn, w_gate_up);
    be.swiglu_forward(h, gate, up);
    tp::row_parallel_forward_accumulate(g, x, h, L.w_down);
  }
  return x;
}

Tensor Transformer::forward_paged(const PagedStep& step, PagedKvCache& cache) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const tp::TpGroup g = group();
  const int64_t N = int64_t(step.tokens.size());
  const auto& qs = step.batch.query_start;
  LATTE_REQUIRE(N > 0 && step.positions.size() == step.tokens.size() && step.slots.size() == step.tokens.size(),
                ErrorCode::invalid_argument, "forward_paged: ", step.tokens.size(), " tokens, ",
                step.positions.size(), " positions and ", step.slots.size(), " slots (need one of each per token)");
  LATTE_REQUIRE(!qs.empty() && qs.back() == N, ErrorCode::invalid_argument, "forward_paged: query_start ends at ",
                qs.empty() ? -1 : qs.back(), ", the step has ", N, " tokens");
  LATTE_REQUIRE(int64_t(c.is_mla() ? cache.latent.size() : cache.k.size()) == c.n_layers &&
                    step.batch.block_size == cache.block_size,
                ErrorCode::invalid_argument, "forward_paged: the paged cache was made for another model or block size");
  for (size_t i = 0; i < step.positions.size(); ++i)
    LATTE_REQUIRE(step.positions[i] >= 0 && step.positions[i] < c.max_seq_len, ErrorCode::invalid_argument,
                  "forward_paged: position ", step.positions[i], " of token ", i, " is outside the context of ",
                  c.max_seq_len, " tokens");
  for (int32_t r : step.logit_rows)
    LATTE_REQUIRE(r >= 0 && r < N, ErrorCode::invalid_argument, "forward_paged: logit row ", r, " of ", N);

  const Tensor x = infer_layers(step.tokens, [&](const detail::AttentionContext& a, const Tensor& xn, Tensor& att) {
    if (c.is_mla()) {
      detail::mla_attention_paged(a, xn, step, cache, att);
    } else {
      detail::gqa_attention_paged(a, xn, step, cache, att);
    }
  });

  const int64_t R = int64_t(step.logit_rows.size());
  Tensor logits = be.empty({R, tp_.vocab});
  if (R == 0) return tp::gather_output(g, logits);
  Tensor rows = be.empty({R, c.dim});
  for (int64_t i = 0; i < R; ++i) {
    Tensor dst = rows.slice(i, i + 1);
    be.copy(dst, x.slice(step.logit_rows[size_t(i)], step.logit_rows[size_t(i)] + 1));
  }
  Tensor rows_n = be.empty({R, c.dim});
  be.rmsnorm_forward(rows_n, nullptr, rows, weights_.norm, c.norm_eps);
  tp::column_parallel_forward(g, logits, rows_n, weights_.lm_head);
  return tp::gather_output(g, logits);
}

Tensor Transformer::layer_forward_train(int64_t l, const Tensor& x, int64_t batch, int64_t T,
                                        std::span<const int32_t> positions, Activations::Layer& A) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const tp::TpGroup g = group();
  const int64_t BT = batch * T;
  const LayerWeights& L = weights_.layers[size_t(l)];
  A.x_in = x;
  A.rstd_attn = be.empty({BT});
  A.xn_attn = be.empty({BT, c.dim});
  be.rmsnorm_forward(A.xn_attn, &A.rstd_attn, x, L.attn_norm, c.norm_eps);
  const detail::AttentionContext ctx = context(*this, g, L, l);
  if (c.is_mla()) {
    detail::mla_attention_train(ctx, A, batch, T, positions);
  } else {
    detail::gqa_attention_train(ctx, A, batch, T, positions);
  }
  A.x_mid = be.clone(x);
  tp::row_parallel_forward_accumulate(g, A.x_mid, A.attn_out.reshape({BT, tp_.heads * c.head_dim}), L.wo);
  A.rstd_ffn = be.empty({BT});
  A.xn_ffn = be.empty({BT, c.dim});
  be.rmsnorm_forward(A.xn_ffn, &A.rstd_ffn, A.x_mid, L.ffn_norm, c.norm_eps);
  A.gate = be.empty({BT, tp_.hidden});
  A.up = be.empty({BT, tp_.hidden});
  A.h = be.empty({BT, tp_.hidden});
  tp::column_parallel_forward(g, A.gate, A.xn_ffn, L.w_gate);
  tp::column_parallel_forward(g, A.up, A.xn_ffn, L.w_up);
  be.swiglu_forward(A.h, A.gate, A.up);
  Tensor out = be.clone(A.x_mid);
  tp::row_parallel_forward_accumulate(g, out, A.h, L.w_down);
  return out;
}

Tensor Transformer::embed_train(std::span<const int32_t> tokens) {
  LATTE_REQUIRE(!tokens.empty(), ErrorCode::invalid_argument, "embed_train: no tokens");
  Tensor x = backend_->empty({int64_t(tokens.size()), config_.dim});
  tp::vocab_parallel_embedding_forward(group(), x, tokens, weights_.tok_embeddings, tp_.vocab0, config_.vocab_size);
  return x;
}

Tensor Transformer::layer_forward_train(int64_t l, const Tensor& x, int64_t batch, Activations::Layer& A) {
  LATTE_REQUIRE(l >= 0 && l < config_.n_layers, ErrorCode::invalid_argument, "layer_forward_train: layer ", l,
                " of a ", config_.n_layers, "-layer model");
  LATTE_REQUIRE(x.ndim() == 2 && x.dim(1) == config_.dim && batch > 0 && x.dim(0) % batch == 0,
                ErrorCode::invalid_argument, "layer_forward_train: input ", shape_str(x.shape()), " is not [B*T, ",
                config_.dim, "] with B = ", batch);
  const int64_t T = x.dim(0) / batch;
  LATTE_REQUIRE(T <= config_.max_seq_len, ErrorCode::invalid_argument, "layer_forward_train: sequence of ", T,
                " tokens exceeds the model context of ", config_.max_seq_len);
  std::vector<int32_t> positions(size_t(x.dim(0)));
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = int32_t(int64_t(i) % T);
  return layer_forward_train(l, x, batch, T, positions, A);
}

float Transformer::forward_train(std::span<const int32_t> tokens, std::span<const int32_t> targets, int64_t batch,
                                 Activations& a) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const tp::TpGroup g = group();
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

  Tensor x = be.empty({BT, c.dim});
  tp::vocab_parallel_embedding_forward(g, x, tokens, weights_.tok_embeddings, tp_.vocab0, c.vocab_size);
  a.recomputed = recompute_;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Activations::Layer& A = a.layers[size_t(l)];
    x = layer_forward_train(l, x, batch, T, a.positions, A);
    // With recomputation only the layer input stays; backward rebuilds the rest from it.
    if (recompute_) A = Activations::Layer{A.x_in};
  }
  a.x_final = x;
  a.rstd_final = be.empty({BT});
  a.xn_final = be.empty({BT, c.dim});
  be.rmsnorm_forward(a.xn_final, &a.rstd_final, x, weights_.norm, c.norm_eps);
  if (!reusable(a.logits, {BT, tp_.vocab})) a.logits = be.empty({BT, tp_.vocab});
  tp::column_parallel_forward(g, a.logits, a.xn_final, weights_.lm_head);
  a.losses = be.empty({BT});
  tp::vocab_parallel_cross_entropy_forward(g, a.losses, a.logsumexp, a.logits, targets, tp_.vocab0, c.vocab_size);

  // The mean is a host scalar for the caller: the per-token losses come back to the host once.
  const Tensor losses = be.to_host(a.losses);
  const float* lp = losses.f32();  // host: read after to_host
  a.n_targets = 0;
  double sum = 0;
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
  const tp::TpGroup tg = group();
  const int64_t B = a.batch, T = a.seq, BT = B * T;
  LATTE_REQUIRE(int64_t(g.layers.size()) == c.n_layers, ErrorCode::shape_mismatch,
                "backward: gradients have ", g.layers.size(), " layers, the model ", c.n_layers);
  LATTE_REQUIRE(!tp_.kv_replicated, ErrorCode::unsupported, "training with --tp ", tp_.size, " larger than n_kv_heads (",
                c.n_kv_heads, ") is not supported: the shared KV heads' gradients would need a sub-group all-reduce");

  // Loss = mean over counted targets, hence the 1/n scale on every dlogits row.
  const float scale = 1.0f / float(a.n_targets);
  if (!reusable(a.dlogits_workspace, {BT, tp_.vocab})) a.dlogits_workspace = be.empty({BT, tp_.vocab});
  Tensor& dlogits = a.dlogits_workspace;
  tp::vocab_parallel_cross_entropy_backward(tg, dlogits, a.logits, a.logsumexp, a.targets, tp_.vocab0, scale);
  if (extra_dlogits) {
    extra_dlogits->expect_shape(dlogits.shape(), "backward: extra_dlogits");
    be.add_inplace(dlogits, *extra_dlogits);
  }
  Tensor dxn = be.zeros({BT, c.dim});
  tp::column_parallel_backward(tg, &dxn, &g.lm_head, dlogits, a.xn_final, weights_.lm_head);
  tp::reduce_input_grad(tg, dxn);
  Tensor dx = be.zeros({BT, c.dim});  // gradient of the residual stream, accumulated (+=)
  be.rmsnorm_backward(dx, g.norm, dxn, a.x_final, weights_.norm, a.rstd_final);

  Tensor dh = be.empty({BT, tp_.hidden});
  Tensor dgate = be.empty({BT, tp_.hidden}), dup = be.empty({BT, tp_.hidden});
  Tensor dxn_l = be.empty({BT, c.dim});
  Tensor datt = be.empty({B, T, tp_.heads, c.head_dim});

  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    // Recomputation: the same forward (and collectives) again from the saved layer input, so the
    // gradients are bit-identical to a run that kept everything.
    Activations::Layer rebuilt;
    if (a.recomputed) layer_forward_train(l, a.layers[size_t(l)].x_in, B, T, a.positions, rebuilt);
    const Activations::Layer& A = a.recomputed ? rebuilt : a.layers[size_t(l)];
    LayerWeights& G = g.layers[size_t(l)];
    // MLP: x_out = x_mid + w_down . h
    be.fill(dh, 0.0f);
    tp::row_parallel_backward(tg, &dh, &G.w_down, dx, A.h, L.w_down);
    be.swiglu_backward(dgate, dup, dh, A.gate, A.up);
    be.fill(dxn_l, 0.0f);
    tp::column_parallel_backward(tg, &dxn_l, &G.w_gate, dgate, A.xn_ffn, L.w_gate);
    tp::column_parallel_backward(tg, &dxn_l, &G.w_up, dup, A.xn_ffn, L.w_up);
    tp::reduce_input_grad(tg, dxn_l);
    be.rmsnorm_backward(dx, G.ffn_norm, dxn_l, A.x_mid, L.ffn_norm, A.rstd_ffn);
    // Attention: x_mid = x_in + wo . attn_out
    be.fill(datt, 0.0f);
    Tensor datt2 = datt.reshape({BT, tp_.heads * c.head_dim});
    tp::row_parallel_backward(tg, &datt2, &G.wo, dx, A.attn_out.reshape({BT, tp_.heads * c.head_dim}), L.wo);
    be.fill(dxn_l, 0.0f);
    const detail::AttentionContext ctx = context(*this, tg, L, l);
    if (c.is_mla()) {
      detail::mla_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    } else {
      detail::gqa_attention_backward(ctx, A, datt, B, T, a.positions, dxn_l, G);
    }
    tp::reduce_input_grad(tg, dxn_l);  // the attention projections are column-parallel over heads
    be.rmsnorm_backward(dx, G.attn_norm, dxn_l, A.x_in, L.attn_norm, A.rstd_attn);
  }
  tp::vocab_parallel_embedding_backward(tg, g.tok_embeddings, a.tokens, dx, tp_.vocab0);
}

}  // namespace latte
