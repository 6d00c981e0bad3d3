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
  if (s_.zero1) reduced_ = Tensor::zeros({own_n_});
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

// Where the reduced gradient of parameter i's owned range starts: in place in the parameter's
// gradient tensor when unsharded (no flat copy of the model: the planner counts weights, grads
// and two moments, and that is all this mode holds), in the reduce-scattered chunk with ZeRO-1.
float* AdamW::reduced_grad(size_t i, int64_t begin) {
  return s_.zero1 ? reduced_.f32() + (begin - own0_) : params_[i].grad->f32() + (begin - offsets_[i]);
}

double AdamW::reduce_and_clip(double grad_scale) {
  const float inv_dp = float(grad_scale / double(dp_.size()));
  if (s_.zero1) {
    // One flat buffer of the whole model, reduce-scattered so this rank keeps its chunk.
    Tensor flat = Tensor::zeros({padded_});
    gather_grads(flat);
    if (dp_.size() > 1) {
      dp_.reduce_scatter(reduced_, flat);
    } else {
      std::memcpy(reduced_.f32(), flat.f32(), size_t(own_n_) * 4);
    }
    float* g = reduced_.f32();
    for (int64_t i = 0; i < own_n_; ++i) g[i] *= inv_dp;
  } else {
    for (OptimParam& p : params_) {
      if (!p.trainable) continue;
      if (dp_.size() > 1) dp_.all_reduce(*p.grad, ReduceOp::sum);
      float* g = p.grad->f32();
      for (int64_t k = 0; k < p.grad->numel(); ++k) g[k] *= inv_dp;
    }
  }

  // Squared norm of what this rank holds, TP-replicated tensors counted on TP rank 0 only.
  double sq = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].trainable || (params_[i].tp_replicated && tp_.rank() != 0)) continue;
    const int64_t b = std::max(offsets_[i], own0_);
    const int64_t e = std::min(offsets_[i] + params_[i].param->numel(), own0_ + own_n_);
    if (b >= e) continue;
    const float* g = reduced_grad(i, b);
    for (int64_t k = 0; k < e - b; ++k) sq += double(g[k]) * double(g[k]);
  }
  Tensor acc = Tensor::from_vector({float(sq)}, {1});
  if (s_.zero1 && dp_.size() > 1) dp_.all_reduce(acc, ReduceOp::sum);  // disjoint chunks
  if (tp_.size() > 1) tp_.all_reduce(acc, ReduceOp::sum);
  const double norm = std::sqrt(double(acc.f32()[0]));
  LATTE_REQUIRE(std::isfinite(norm), ErrorCode::numerics, "gradient norm is ", norm,
                " (NaN or Inf in the gradients); stopping without an update");
  if (s_.max_grad_norm > 0 && norm > s_.max_grad_norm) {
    const float k = float(s_.max_grad_norm / norm);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].trainable) continue;
      const int64_t b = std::max(offsets_[i], own0_);
      const int64_t e = std::min(offsets_[i] + params_[i].param->numel(), own0_ + own_n_);
      float* g = b < e ? reduced_grad(i, b) : nullptr;
      for (int64_t x = 0; x < e - b; ++x) g[x] *= k;
    }
  }
  return norm;
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(s_.beta1, double(t_)), bc2 = 1.0 - std::pow(s_.beta2, double(t_));
  const float b1 = float(s_.beta1), b2 = float(s_.beta2);
  // ZeRO-1: the owned chunk's new values go into one padded buffer that the all-gather fills
  // with every rank's chunk; unsharded: parameters are updated in place.
  Tensor gathered = s_.zero1 ? Tensor::zeros({padded_}) : Tensor();
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& p = params_[i];
    const int64_t b = std::max(offsets_[i], own0_);
    const int64_t e = std::min(offsets_[i] + p.param->numel(), own0_ + own_n_);
    if (b >= e) continue;
    float* w = p.param->f32() + (b - offsets_[i]);
    float* out = s_.zero1 ? gathered.f32() + b : w;
    const float* g = reduced_grad(i, b);
    float* m = m_.f32() + (b - own0_);
    float* v = v_.f32() + (b - own0_);
    for (int64_t k = 0; k < e - b; ++k) {
      float wk = w[k];
      if (p.trainable) {
        m[k] = b1 * m[k] + (1 - b1) * g[k];
        v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k];
        const double mhat = double(m[k]) / bc1, vhat = double(v[k]) / bc2;
        double nw = double(wk) - lr * (mhat / (std::sqrt(vhat) + s_.eps));
        if (p.decay) nw -= lr * s_.weight_decay * double(wk);
        wk = float(nw);
      }
      out[k] = wk;
    }
  }
  if (!s_.zero1) return;
  if (dp_.size() > 1) {
    Tensor mine = Tensor::empty({own_n_});
    std::memcpy(mine.f32(), gathered.f32() + own0_, size_t(own_n_) * 4);
    dp_.all_gather(gathered, mine);
  }
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].trainable)
      std::memcpy(params_[i].param->f32(), gathered.f32() + offsets_[i], size_t(params_[i].param->numel()) * 4);
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
