#include "bench/profiling_backend.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

namespace latte::bench {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 2*M*N*K for out[M,N] = a[M,K] . b[K,N], rows M taken as numel / last dim.
double matmul_flops(int64_t M, int64_t N, int64_t K) { return 2.0 * double(M) * double(N) * double(K); }

int64_t rows_of(const Tensor& x) { return x.numel() / std::max<int64_t>(x.dim(-1), 1); }

// Causal (query, key) pairs per batch row and head: query t of T sees keys 0..S-T+t.
double causal_pairs(int64_t T, int64_t S) { return double(T) * double(S - T) + double(T) * double(T + 1) / 2.0; }

// Causal pairs of a paged batch summed over its sequences (0 for a malformed batch: the inner
// backend reports that).
double paged_pairs(const PagedBatch& b) {
  if (b.query_start.size() != b.context_len.size() + 1) return 0;
  double pairs = 0;
  for (size_t s = 0; s < b.context_len.size(); ++s)
    pairs += causal_pairs(b.query_start[s + 1] - b.query_start[s], b.context_len[s]);
  return pairs;
}

std::vector<std::pair<std::string, OpStats>> sorted_by_time(const std::map<std::string, OpStats>& m) {
  std::vector<std::pair<std::string, OpStats>> v(m.begin(), m.end());
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  return v;
}

void print_row(std::FILE* out, const std::string& name, const OpStats& s, double total) {
  // Summary rows (calls == 0) leave the per-call columns blank.
  std::fprintf(out, "  %-28s ", name.c_str());
  if (s.calls) std::fprintf(out, "%8lld", (long long)s.calls);
  else std::fprintf(out, "%8s", "-");
  std::fprintf(out, " %11.2f %6.1f%%", s.seconds * 1e3, total > 0 ? 100.0 * s.seconds / total : 0.0);
  if (s.calls) std::fprintf(out, " %10.3f", s.seconds * 1e3 / double(s.calls));
  else std::fprintf(out, " %10s", "-");
  if (s.flops > 0 && s.seconds > 0) std::fprintf(out, " %9.2f", s.flops / s.seconds * 1e-9);
  else std::fprintf(out, " %9s", "-");
  std::fprintf(out, "\n");
}

}  // namespace

template <class F>
void ProfilingBackend::timed(const char* op, double flops, F&& f) {
  const double t0 = now_seconds();
  f();
  const double dt = now_seconds() - t0;
  OpStats& s = ops_[op];
  ++s.calls;
  s.seconds += dt;
  s.flops += flops;
}

double ProfilingBackend::op_seconds() const {
  double t = 0;
  for (const auto& [name, s] : ops_) t += s.seconds;
  return t;
}

void ProfilingBackend::report(std::FILE* out, double wall_seconds) const {
  const double ops_total = op_seconds();
  const double total = wall_seconds > 0 ? wall_seconds : ops_total;
  std::fprintf(out, "  %-28s %8s %11s %7s %10s %9s\n", "op", "calls", "total ms", "%", "ms/call", "GFLOP/s");
  double flops = 0;
  for (const auto& [name, s] : sorted_by_time(ops_)) {
    print_row(out, name, s, total);
    flops += s.flops;
  }
  OpStats sum{0, ops_total, flops};
  print_row(out, "(all backend ops)", sum, total);
  if (wall_seconds > 0) {
    OpStats other{0, std::max(0.0, wall_seconds - ops_total), 0};
    print_row(out, "(outside backend ops)", other, total);
    OpStats wall{0, wall_seconds, flops};
    print_row(out, "(wall)", wall, total);
  }
  if (!regions_.empty()) {
    std::fprintf(out, "  regions (each includes the ops run inside it):\n");
    for (const auto& [name, s] : sorted_by_time(regions_)) print_row(out, name, s, total);
  }
}

std::string ProfilingBackend::json(const std::string& tag) const {
  std::string r;
  char buf[512];
  auto emit = [&](const char* kind, const std::string& name, const OpStats& s) {
    std::snprintf(buf, sizeof buf, "{\"bench\":\"profile\",%s%s\"%s\":\"%s\",\"calls\":%lld,\"ms\":%.3f,\"gflops\":%.3f,"
                  "\"gflop_per_s\":%.3f}\n",
                  tag.c_str(), tag.empty() ? "" : ",", kind, name.c_str(), (long long)s.calls, s.seconds * 1e3,
                  s.flops * 1e-9, s.seconds > 0 ? s.flops / s.seconds * 1e-9 : 0.0);
    r += buf;
  };
  for (const auto& [name, s] : sorted_by_time(ops_)) emit("op", name, s);
  for (const auto& [name, s] : sorted_by_time(regions_)) emit("region", name, s);
  return r;
}

ScopedRegion::ScopedRegion(ProfilingBackend& prof, std::string name)
    : prof_(prof), name_(std::move(name)), t0_(now_seconds()) {}
ScopedRegion::~ScopedRegion() { prof_.add_region(name_, now_seconds() - t0_); }

// ---- forwarding ----

Tensor ProfilingBackend::empty(const Shape& shape, DType dtype) {
  Tensor t;
  timed("empty", 0, [&] { t = inner_.empty(shape, dtype); });
  return t;
}
void ProfilingBackend::fill(Tensor& t, float value) {
  timed("fill", 0, [&] { inner_.fill(t, value); });
}
void ProfilingBackend::copy(Tensor& dst, const Tensor& src) {
  timed("copy", 0, [&] { inner_.copy(dst, src); });
}
Tensor ProfilingBackend::to_host(const Tensor& t) {
  Tensor r;
  timed("to_host", 0, [&] { r = inner_.to_host(t); });
  return r;
}
Tensor ProfilingBackend::to_device(const Tensor& host) {
  Tensor r;
  timed("to_device", 0, [&] { r = inner_.to_device(host); });
  return r;
}

void ProfilingBackend::linear_forward(Tensor& y, const Tensor& x, const Tensor& w, bool accumulate) {
  timed("linear_forward", matmul_flops(rows_of(x), w.dim(0), x.dim(-1)),
        [&] { inner_.linear_forward(y, x, w, accumulate); });
}
void ProfilingBackend::linear_forward_group(std::span<Tensor* const> ys, const Tensor& x,
                                            std::span<const Tensor* const> ws) {
  double f = 0;
  for (const Tensor* w : ws) f += matmul_flops(rows_of(x), w->dim(0), x.dim(-1));
  timed("linear_forward_group", f, [&] { inner_.linear_forward_group(ys, x, ws); });
}
void ProfilingBackend::linear_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  // Split into its two products (each is "+=" and independent of the other, so the result is the
  // same), so the table shows which one is slow.
  const double f = matmul_flops(rows_of(x), w.dim(0), x.dim(-1));
  if (dx) timed("linear_backward_dx", f, [&] { inner_.linear_backward(dx, nullptr, dy, x, w); });
  if (dw) timed("linear_backward_dw", f, [&] { inner_.linear_backward(nullptr, dw, dy, x, w); });
}

void ProfilingBackend::embedding_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table) {
  timed("embedding_forward", 0, [&] { inner_.embedding_forward(out, tokens, table); });
}
void ProfilingBackend::embedding_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout) {
  timed("embedding_backward", 0, [&] { inner_.embedding_backward(dtable, tokens, dout); });
}
void ProfilingBackend::embedding_slice_forward(Tensor& out, std::span<const int32_t> tokens, const Tensor& table,
                                               int64_t vocab_begin) {
  timed("embedding_slice_forward", 0, [&] { inner_.embedding_slice_forward(out, tokens, table, vocab_begin); });
}
void ProfilingBackend::embedding_slice_backward(Tensor& dtable, std::span<const int32_t> tokens, const Tensor& dout,
                                                int64_t vocab_begin) {
  timed("embedding_slice_backward", 0, [&] { inner_.embedding_slice_backward(dtable, tokens, dout, vocab_begin); });
}

void ProfilingBackend::rmsnorm_forward(Tensor& y, Tensor* rstd, const Tensor& x, const Tensor& w, float eps) {
  timed("rmsnorm_forward", 0, [&] { inner_.rmsnorm_forward(y, rstd, x, w, eps); });
}
void ProfilingBackend::rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                        const Tensor& rstd) {
  timed("rmsnorm_backward", 0, [&] { inner_.rmsnorm_backward(dx, dw, dy, x, w, rstd); });
}

void ProfilingBackend::rope_forward(Tensor& x, std::span<const int32_t> positions, const RopeParams& p) {
  timed("rope_forward", 0, [&] { inner_.rope_forward(x, positions, p); });
}
void ProfilingBackend::rope_backward(Tensor& dx, std::span<const int32_t> positions, const RopeParams& p) {
  timed("rope_backward", 0, [&] { inner_.rope_backward(dx, positions, p); });
}

void ProfilingBackend::attention_forward(Tensor& out, Tensor* lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                         float scale) {
  const double f = 2.0 * double(q.dim(0)) * double(q.dim(2)) * causal_pairs(q.dim(1), k.dim(1)) *
                   double(q.dim(3) + v.dim(3));
  timed("attention_forward", f, [&] { inner_.attention_forward(out, lse, q, k, v, scale); });
}
void ProfilingBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                          float scale) {
  const double f = 2.0 * double(q.dim(0)) * double(q.dim(2)) * causal_pairs(q.dim(1), k.dim(1)) *
                   double(3 * q.dim(3) + 2 * v.dim(3));
  timed("attention_backward", f, [&] { inner_.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, scale); });
}
void ProfilingBackend::mla_absorbed_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat,
                                              const Tensor& k_rope, const Tensor& latent, float scale) {
  const double f = 2.0 * double(q_rope.dim(0)) * double(q_rope.dim(2)) * causal_pairs(q_rope.dim(1), latent.dim(1)) *
                   double(q_rope.dim(3) + 2 * q_lat.dim(3));
  timed("mla_absorbed_attention", f, [&] { inner_.mla_absorbed_attention(out, q_rope, q_lat, k_rope, latent, scale); });
}

void ProfilingBackend::paged_cache_write(Tensor& cache, Tensor* scales, const Tensor& rows,
                                         std::span<const int32_t> slots) {
  timed("paged_cache_write", 0, [&] { inner_.paged_cache_write(cache, scales, rows, slots); });
}
void ProfilingBackend::paged_attention(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                       const PagedBatch& b, float scale) {
  const double f = 2.0 * double(q.dim(1)) * paged_pairs(b) * double(q.dim(2) + v_cache.dim(3));
  timed("paged_attention", f, [&] { inner_.paged_attention(out, q, k_cache, v_cache, b, scale); });
}
void ProfilingBackend::paged_mla_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat,
                                           const Tensor& k_rope_cache, const Tensor* k_rope_scales,
                                           const Tensor& latent_cache, const Tensor* latent_scales, const PagedBatch& b, float scale) {
  const double f = 2.0 * double(q_rope.dim(1)) * paged_pairs(b) * double(q_rope.dim(2) + 2 * q_lat.dim(2));
  timed("paged_mla_attention", f, [&] {
    inner_.paged_mla_attention(out, q_rope, q_lat, k_rope_cache, k_rope_scales, latent_cache, latent_scales, b, scale);
  });
}

void ProfilingBackend::swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) {
  timed("swiglu_forward", 0, [&] { inner_.swiglu_forward(h, gate, up); });
}
void ProfilingBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate,
                                       const Tensor& up) {
  timed("swiglu_backward", 0, [&] { inner_.swiglu_backward(dgate, dup, dh, gate, up); });
}

void ProfilingBackend::cross_entropy_forward(Tensor& losses, const Tensor& logits, std::span<const int32_t> targets) {
  timed("cross_entropy_forward", 0, [&] { inner_.cross_entropy_forward(losses, logits, targets); });
}
void ProfilingBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits, std::span<const int32_t> targets,
                                              float scale) {
  timed("cross_entropy_backward", 0, [&] { inner_.cross_entropy_backward(dlogits, logits, targets, scale); });
}
void ProfilingBackend::cross_entropy_slice_max(Tensor& row_max, const Tensor& logits) {
  timed("cross_entropy_slice_max", 0, [&] { inner_.cross_entropy_slice_max(row_max, logits); });
}
void ProfilingBackend::cross_entropy_slice_sums(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits,
                                                const Tensor& row_max, std::span<const int32_t> targets,
                                                int64_t vocab_begin) {
  timed("cross_entropy_slice_sums", 0,
        [&] { inner_.cross_entropy_slice_sums(sum_exp, target_logit, logits, row_max, targets, vocab_begin); });
}
void ProfilingBackend::cross_entropy_slice_losses(Tensor& losses, Tensor& lse, const Tensor& row_max,
                                                  const Tensor& sum_exp, const Tensor& target_logit,
                                                  std::span<const int32_t> targets) {
  timed("cross_entropy_slice_losses", 0,
        [&] { inner_.cross_entropy_slice_losses(losses, lse, row_max, sum_exp, target_logit, targets); });
}
void ProfilingBackend::cross_entropy_slice_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                                    std::span<const int32_t> targets, int64_t vocab_begin,
                                                    float scale) {
  timed("cross_entropy_slice_backward", 0,
        [&] { inner_.cross_entropy_slice_backward(dlogits, logits, lse, targets, vocab_begin, scale); });
}

void ProfilingBackend::add_inplace(Tensor& y, const Tensor& x) {
  timed("add_inplace", 0, [&] { inner_.add_inplace(y, x); });
}

}  // namespace latte::bench
