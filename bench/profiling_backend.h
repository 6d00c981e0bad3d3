// Where the time goes: a Backend decorator that forwards every method to an inner backend and
// accumulates, per op name, the wall time, the call count and (for the matrix ops) the FLOPs, so a
// run can print a table sorted by time with GFLOP/s per op. The model code is unchanged: build a
// Transformer on a ProfilingBackend wrapping cpu_backend() and run it.
//
//   bench::ProfilingBackend prof(cpu_backend());
//   Transformer model(config, weights, prof);
//   { bench::ScopedRegion r(prof, "optimizer"); ... }  // time code that is not a backend op
//   prof.report(stdout, wall_seconds);
//
// Counted FLOPs (multiply-add = 2): linear 2*M*N*K per product (backward split into dx and dw, each
// its own row); attention 2*B*Hq*pairs*(Dk+Dv) forward, pairs = the causal (query, key) pairs;
// 2*B*Hq*pairs*(3*Dk+2*Dv) backward; absorbed MLA 2*B*Hq*pairs*(R+2*L); the paged forms the same
// with pairs summed over the batch's sequences. Other ops are memory-bound and get no GFLOP/s.
//
// Wall time is taken around each call on the calling thread. Right for the CPU backend (ops are
// synchronous); for an asynchronous device backend it measures launch time, not kernel time.
// Regions are reported apart from ops: a region's time includes the ops run inside it.
#pragma once
#include <cstdio>
#include <map>
#include <string>

#include "core/backend/backend.h"

namespace latte::bench {

struct OpStats {
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // 0: not counted for this op
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner) {}

  // ---- the profile ----
  void reset() { ops_.clear(), regions_.clear(); }
  const std::map<std::string, OpStats>& ops() const { return ops_; }
  const std::map<std::string, OpStats>& regions() const { return regions_; }
  double op_seconds() const;  // sum over ops
  // Table sorted by time: op, calls, total ms, % of the op total, ms per call, GFLOP/s. With
  // wall_seconds > 0 (the caller's timing of the whole run) one more row shows the time spent
  // outside backend ops, and percentages are of wall_seconds instead.
  void report(std::FILE* out, double wall_seconds = 0) const;
  // One JSON object per line per op, then per region; `tag` (already JSON, e.g. "\"threads\":2")
  // is spliced into each object when non-empty.
  std::string json(const std::string& tag = "") const;
  // Adds one measurement under `name` (what ScopedRegion calls; also usable for ad-hoc timings).
  void add_region(const std::string& name, double seconds) {
    OpStats& s = regions_[name];
    ++s.calls;
    s.seconds += seconds;
  }

  // ---- Backend: every method forwards to the inner backend ----
  Device device() const override { return inner_.device(); }
  std::string name() const override { return "profiling(" + inner_.name() + ")"; }
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
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) override;
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

 private:
  template <class F>
  void timed(const char* op, double flops, F&& f);

  Backend& inner_;
  std::map<std::string, OpStats> ops_, regions_;
};

// Times the enclosing scope into prof's regions under `name`.
class ScopedRegion {
 public:
  ScopedRegion(ProfilingBackend& prof, std::string name);
  ~ScopedRegion();
  ScopedRegion(const ScopedRegion&) = delete;
  ScopedRegion& operator=(const ScopedRegion&) = delete;

 private:
  ProfilingBackend& prof_;
  std::string name_;
  double t0_;
};

}  // namespace latte::bench
