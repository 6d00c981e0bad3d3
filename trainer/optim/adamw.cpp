#include "trainer/optim/adamw.h"

#include <cmath>
#include <cstring>

namespace latte {

AdamW::AdamW(std::vector<OptimParam> params, const AdamWSettings& s, Communicator& dp, Communicator& tp)
    : params_(std::move(params)), s_(s), dp_(dp), tp_(tp) {
  for (const OptimParam& p : params_) {
    LATTE_REQUIRE(p.param->dtype() == DType::f32 && p.grad->dtype() == DType::f32 && p.param->is_contiguous() &&
                      p.grad->shape() == p.param->shape(),
                  ErrorCode::invalid_argument, "optimizer: parameter ", p.name,
                  " must be a contiguous f32 tensor with an f32 gradient of the same shape");
    offsets_.push_back(total_);
    total_ += p.param->numel();
  }
  const int64_t dp_size = dp_.size();
  padded_ = (total_ + dp_size - 1) / dp_size * dp_size;
  if (s_.zero1) {
    own_n_ = padded_ / dp_size;
    own0_ = dp_.rank() * own_n_;
  } else {
    own0_ = 0;
    own_n_ = total_;
  }
  m_ = Tensor::zeros({own_n_});
  v_ = Tensor::zeros({own_n_});
  reduced_ = Tensor::zeros({own_n_});
}

void AdamW::zero_grad() {
  for (OptimParam& p : params_) p.grad->fill(0.0f);
}

void AdamW::gather_grads(Tensor& flat) const {
  float* f = flat.f32();
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    if (p.trainable) {
      std::memcpy(f + offsets_[i], p.grad->f32(), size_t(p.grad->numel()) * 4);
    } else {
      std::memset(f + offsets_[i], 0, size_t(p.grad->numel()) * 4);
    }
  }
}

double AdamW::reduce_and_clip(double grad_scale) {
  Tensor flat = Tensor::zeros({padded_});
  gather_grads(flat);
  const float inv_dp = float(grad_scale / double(dp_.size()));
  if (s_.zero1) {
    if (dp_.size() > 1) {
      dp_.reduce_scatter(reduced_, flat);
    } else {
      std::memcpy(reduced_.f32(), flat.f32(), size_t(own_n_) * 4);
    }
  } else {
    if (dp_.size() > 1) dp_.all_reduce(flat, ReduceOp::sum);
    std::memcpy(reduced_.f32(), flat.f32(), size_t(own_n_) * 4);
  }
  float* g = reduced_.f32();
  for (int64_t i = 0; i < own_n_; ++i) g[i] *= inv_dp;

  // Squared norm of what this rank holds, TP-replicated tensors counted on TP rank 0 only.
  double sq = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].tp_replicated && tp_.rank() != 0) continue;
    const int64_t b = std::max(offsets_[i], own0_);
    const int64_t e = std::min(offsets_[i] + params_[i].param->numel(), own0_ + own_n_);
    for (int64_t k = b; k < e; ++k) sq += double(g[k - own0_]) * double(g[k - own0_]);
  }
  Tensor acc = Tensor::from_vector({float(sq)}, {1});
  if (s_.zero1 && dp_.size() > 1) dp_.all_reduce(acc, ReduceOp::sum);  // disjoint chunks
  if (tp_.size() > 1) tp_.all_reduce(acc, ReduceOp::sum);
  const double norm = std::sqrt(double(acc.f32()[0]));
  LATTE_REQUIRE(std::isfinite(norm), ErrorCode::numerics, "gradient norm is ", norm,
                " (NaN or Inf in the gradients); stopping without an update");
  if (s_.max_grad_norm > 0 && norm > s_.max_grad_norm) {
    const float k = float(s_.max_grad_norm / norm);
    for (int64_t i = 0; i < own_n_; ++i) g[i] *= k;
  }
  return norm;
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(s_.beta1, double(t_)), bc2 = 1.0 - std::pow(s_.beta2, double(t_));
  const float b1 = float(s_.beta1), b2 = float(s_.beta2);
  float* m = m_.f32();
  float* v = v_.f32();
  const float* g = reduced_.f32();
  // Updated values of the owned range, written back to the parameters (and all-gathered).
  Tensor updated = Tensor::zeros({s_.zero1 ? padded_ : own_n_});
  float* u = updated.f32() + (s_.zero1 ? own0_ : 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    const int64_t b = std::max(offsets_[i], own0_);
    const int64_t e = std::min(offsets_[i] + p.param->numel(), own0_ + own_n_);
    const float* w = p.param->f32();
    for (int64_t k = b; k < e; ++k) {
      const int64_t o = k - own0_;
      float wk = w[k - offsets_[i]];
      if (p.trainable) {
        m[o] = b1 * m[o] + (1 - b1) * g[o];
        v[o] = b2 * v[o] + (1 - b2) * g[o] * g[o];
        const double mhat = double(m[o]) / bc1, vhat = double(v[o]) / bc2;
        double nw = double(wk) - lr * (mhat / (std::sqrt(vhat) + s_.eps));
        if (p.decay) nw -= lr * s_.weight_decay * double(wk);
        wk = float(nw);
      }
      u[o] = wk;
    }
  }
  if (s_.zero1 && dp_.size() > 1) {
    Tensor mine = Tensor::empty({own_n_});
    std::memcpy(mine.f32(), u, size_t(own_n_) * 4);
    dp_.all_gather(updated, mine);
  }
  const float* full = updated.f32();
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    if (!p.trainable) continue;
    // Unsharded: the owned range is everything. ZeRO-1: after the all-gather, `updated` holds
    // every parameter (at its flat offset).
    std::memcpy(p.param->f32(), full + offsets_[i], size_t(p.param->numel()) * 4);
  }
}

TensorStore AdamW::state() const {
  TensorStore s;
  s.put("adamw.m", m_, "(memory)");
  s.put("adamw.v", v_, "(memory)");
  return s;
}

void AdamW::load_state(const TensorStore& s, const Meta& meta) {
  LATTE_REQUIRE(meta.owned_begin == own0_ && meta.owned_count == own_n_ && meta.total == total_, ErrorCode::bad_file,
                "optimizer state in ", s.origin, " covers [", meta.owned_begin, ", +", meta.owned_count, ") of ",
                meta.total, " parameters; this run needs [", own0_, ", +", own_n_, ") of ", total_,
                " (another model or layout?)");
  m_.copy_from(s.get("adamw.m", {own_n_}));
  v_.copy_from(s.get("adamw.v", {own_n_}));
  t_ = meta.steps;
}

}  // namespace latte
