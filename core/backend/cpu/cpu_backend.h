// The CPU backend: OpenBLAS for GEMMs, OpenMP over rows/heads elsewhere. One file per op family
// (memory.cpp, linear.cpp, embedding.cpp, rmsnorm.cpp, rope.cpp, attention.cpp, mla_attention.cpp,
// paged_attention.cpp, swiglu.cpp, cross_entropy.cpp, elementwise.cpp), each with forward and
// backward side by side.
#pragma once
#include "core/backend/backend.h"

namespace latte {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cpu"; }

  Tensor empty(const Shape& shape, DType dtype = DType::f32) override;
  void fill(Tensor& t, float value) override;
  void copy(Tensor& dst, const Tensor& src) override;
  Tensor to_host(const Tensor& t) override;
  Tensor to_device(const Tensor& host) override;

  void linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) override;
  void linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) override;
  void linear_forward_group(std::span<Tensor* const> ys, const Tensor& x, std::span<const Tensor* const> ws) override;
  void embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) override;
  void embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) override;
  void embedding_slice_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table,
                               int64_t vocab_begin) override;
  void embedding_slice_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout,
                                int64_t vocab_begin) override;
  void rmsnorm_forward(Tensor& y, Tensor* rstd, const Tensor& x, const Tensor& w, float eps) override;
  void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                        const Tensor& rstd) override;
  void rope_forward(Tensor& x, std::span<const int32_t> positions, const RopeParams& p) override;
  void rope_backward(Tensor& dx, std::span<const int32_t> positions, const RopeParams& p) override;
  void attention_forward(Tensor& out, Tensor* lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         float scale) override;
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          float scale) override;
  void mla_absorbed_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat, const Tensor& k_rope,
                              const Tensor& latent, float scale) override;
  void paged_cache_write(Tensor& cache, Tensor* scales, const Tensor& rows, std::span<const int32_t> slots) override;
  void paged_attention(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const PagedBatch& b,
                       float scale) override;
  void paged_mla_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat, const Tensor& k_rope_cache,
                           const Tensor* k_rope_scales, const Tensor& latent_cache, const Tensor* latent_scales,
                           const PagedBatch& b, float scale) override;
  void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate,
                       const Tensor& up) override;
  void cross_entropy_forward(Tensor& losses, const Tensor& logits, std::span<const int32_t> targets) override;
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, std::span<const int32_t> targets,
                              float scale) override;
  void cross_entropy_slice_max(Tensor& row_max, const Tensor& logits) override;
  void cross_entropy_slice_sums(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits, const Tensor& row_max,
                                std::span<const int32_t> targets, int64_t vocab_begin) override;
  void cross_entropy_slice_losses(Tensor& losses, Tensor& lse, const Tensor& row_max, const Tensor& sum_exp,
                                  const Tensor& target_logit, std::span<const int32_t> targets) override;
  void cross_entropy_slice_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                    std::span<const int32_t> targets, int64_t vocab_begin, float scale) override;
  void add_inplace(Tensor& y, const Tensor& x) override;
};

}  // namespace latte
