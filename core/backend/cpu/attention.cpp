// Causal grouped-query attention, forward and backward.
//   q[B,T,Hq,Dk], k[B,S,Hkv,Dk], v[B,S,Hkv,Dv] -> out[B,T,Hq,Dv], lse[B,Hq,T] (optional)
//   Query head h reads KV head h / (Hq/Hkv). Query t sits at position S-T+t and sees keys
//   0..S-T+t (the first S-T keys are a cached prefix). k and v (and dk, dv) may be strided in
//   dim 0, i.e. views of a larger KV cache; their inner [S,H,D] must be contiguous.
//
//   forward ("="):  s_j = scale q.k_j,  m = max_j s_j,  l = sum_j exp(s_j - m),
//                   out = sum_j exp(s_j - m) v_j / l,  lse = m + log(l)
//   backward ("=" on dq, dk, dv), recomputing P_tj = exp(s_tj - lse_t) from the saved lse:
//                   Delta_t = dout_t . out_t,  dS_tj = P_tj (dout_t . v_j - Delta_t)
//                   dq_t = scale sum_j dS_tj k_j,  dk_j = scale sum_t dS_tj q_t,  dv_j = sum_t P_tj dout_t
//                   (dk_j and dv_j also sum over the Hq/Hkv query heads that share KV head j)
// All f32, with f32 accumulation; dots use the fixed cpu::dot order, sums over keys or queries
// run in index order. The max subtraction keeps exp() in (0, 1]. Reference: reference::attention_*.
//
// Two implementations of the same formulas, chosen by shape only (never by thread count):
//  - blocked (T >= kMinBlockedQueries: prefill and training): for each (b, KV head) and block of
//    up to kQueryBlock queries, the G query heads sharing that KV head form the rows of GEMMs
//    (single-threaded OpenBLAS): S = scale Q K^T, then a row softmax with the vectorised
//    cpu::exp8, then O = P V; backward recomputes P from lse and runs dP = dO V^T, dQ = scale
//    dS K, dK += scale dS^T Q, dV += P^T dO. One task per (b, KV head, query block) in the
//    forward; in the backward one task per (b, KV head), walking its query blocks in order so
//    the dK/dV sums over blocks have a fixed order. Scores past a query's causal limit are
//    computed with the block and set to weight 0.
//  - per row (decode and short prompts), below.
//
// Parallelism (per-row form): the forward and dq are independent per (b, h, t) query row: OpenMP over rows,
// dynamically scheduled because causal rows grow with t. dk and dv reduce over queries and
// query heads, so they get their own pass over (b, kv head, key j) rows, each summing its
// (head, query) terms in a fixed order; no reduction is split across threads, so results are
// bit-identical for any thread count. The price is computing the scores twice in backward.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/attention_blocks.h"
#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

struct AttnDims {
  int64_t B, T, S, Hq, Hkv, Dk, Dv;
  int64_t group;  // Hq / Hkv query heads per KV head
  int64_t n_rows() const { return B * Hq * T; }
  int64_t prefix() const { return S - T; }  // query t sits at position prefix() + t
};

// A [B, S, H, D] tensor whose inner [S, H, D] is contiguous; dim 0 may have any stride.
void require_inner_contiguous(const Tensor& t, const char* op, const char* name) {
  const Shape& sh = t.shape();
  const Shape& st = t.strides();
  LATTE_REQUIRE(st[3] == 1 && st[2] == sh[3] && st[1] == sh[2] * sh[3], ErrorCode::invalid_argument, op, ": ", name,
                ": its inner [S, H, D] must be contiguous (shape ", shape_str(sh), ", strides ", shape_str(st), ")");
}

void require_kv(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  cpu::require_host(t, op, name);
  cpu::require_dtype(t, DType::f32, op, name);
  cpu::require_shape(t, shape, op, name);
  require_inner_contiguous(t, op, name);
}

AttnDims check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  cpu::require_host(q, op, "q");
  cpu::require_dtype(q, DType::f32, op, "q");
  cpu::require_rank(q, 4, "[B, T, Hq, Dk]", op, "q");
  cpu::require_contiguous(q, op, "q");
  cpu::require_rank(k, 4, "[B, S, Hkv, Dk]", op, "k");
  cpu::require_rank(v, 4, "[B, S, Hkv, Dv]", op, "v");
  AttnDims d{};
  d.B = q.dim(0);
  d.T = q.dim(1);
  d.Hq = q.dim(2);
  d.Dk = q.dim(3);
  d.S = k.dim(1);
  d.Hkv = k.dim(2);
  d.Dv = v.dim(3);
  require_kv(k, {d.B, d.S, d.Hkv, d.Dk}, op, "k");
  require_kv(v, {d.B, d.S, d.Hkv, d.Dv}, op, "v");
  LATTE_REQUIRE(d.T <= d.S, ErrorCode::shape_mismatch, op, ": q has T = ", d.T, " queries but k has only S = ", d.S,
                " keys (q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ")");
  LATTE_REQUIRE(d.Hkv > 0 && d.Hq % d.Hkv == 0, ErrorCode::shape_mismatch, op, ": Hq = ", d.Hq,
                " query heads is not a multiple of Hkv = ", d.Hkv, " KV heads (q ", shape_str(q.shape()), ", k ",
                shape_str(k.shape()), ")");
  d.group = d.Hq / d.Hkv;
  return d;
}

// Row pointers into [B, *, H, D] tensors: dim-0 stride from the tensor, inner layout contiguous.
struct HeadView {
  const float* base;
  int64_t batch_stride, row_stride, D;  // row_stride = H * D
  const float* at(int64_t b, int64_t s, int64_t h) const { return base + b * batch_stride + s * row_stride + h * D; }
};
struct MutHeadView {
  float* base;
  int64_t batch_stride, row_stride, D;
  float* at(int64_t b, int64_t s, int64_t h) const { return base + b * batch_stride + s * row_stride + h * D; }
};
HeadView view(const Tensor& t) { return {t.f32(), t.strides()[0], t.strides()[1], t.dim(3)}; }
MutHeadView mut_view(Tensor& t) { return {t.f32(), t.strides()[0], t.strides()[1], t.dim(3)}; }

// ---- blocked form ----------------------------------------------------------------------------

using cpu::kMinBlockedQueries;
using cpu::kQueryBlock;
using cpu::scratch;

bool use_blocked(const AttnDims& d) { return d.T >= kMinBlockedQueries; }

// One block of queries [t0, t0 + nq) of the G heads reading KV head hk: rows r = g * nq + i.
struct QueryBlock {
  int64_t b, hk, t0, nq, n_keys;  // n_keys: keys the block's last query sees
  int64_t rows(int64_t group) const { return group * nq; }
};

// dst[M, D] (contiguous) <- rows (b, t0 + i, hk * G + g) of a [B, T, H, D] view.
void gather_rows(float* dst, const HeadView& v, const QueryBlock& qb, int64_t group) {
  for (int64_t g = 0; g < group; ++g)
    for (int64_t i = 0; i < qb.nq; ++i)
      std::memcpy(dst + (g * qb.nq + i) * v.D, v.at(qb.b, qb.t0 + i, qb.hk * group + g), size_t(v.D) * 4);
}

// S[M, n_keys] = scale * Qm . K^T over the block's keys; K rows of head hk are strided.
void block_scores(float* S, const float* Qm, const HeadView& kv, const QueryBlock& qb, int64_t M, float scale) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(qb.n_keys), int(kv.D), scale, Qm, int(kv.D),
              kv.at(qb.b, 0, qb.hk), int(kv.row_stride), 0.0f, S, int(qb.n_keys));
}

// Keys row r of the block may see: prefix + t0 + i + 1.
int64_t keys_of_row(const AttnDims& d, const QueryBlock& qb, int64_t r) { return d.prefix() + qb.t0 + r % qb.nq + 1; }

void forward_blocked(const AttnDims& d, const HeadView& qv, const HeadView& kv, const HeadView& vv,
                     const MutHeadView& ov, float* lse_p, float scale) {
  const int64_t G = d.group, n_qblocks = (d.T + kQueryBlock - 1) / kQueryBlock;
  const int64_t n_tasks = d.B * d.Hkv * n_qblocks;
  cpu::blas_single_threaded();
#pragma omp parallel
  {
    std::vector<float> q_buf, s_buf, o_buf, l_buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t qb_i = task % n_qblocks, hk = (task / n_qblocks) % d.Hkv, b = task / (n_qblocks * d.Hkv);
      QueryBlock qb{b, hk, qb_i * kQueryBlock, 0, 0};
      qb.nq = std::min(kQueryBlock, d.T - qb.t0);
      qb.n_keys = d.prefix() + qb.t0 + qb.nq;
      const int64_t M = qb.rows(G);
      float* Qm = scratch(q_buf, M * d.Dk);
      float* S = scratch(s_buf, M * qb.n_keys);
      float* O = scratch(o_buf, M * d.Dv);
      gather_rows(Qm, qv, qb, G);
      float* row_sum = scratch(l_buf, 2 * M);
      float* row_max = row_sum + M;
      cpu::attend_query_block(Qm, M, qb.nq, d.prefix() + qb.t0, kv.at(b, 0, hk), kv.row_stride, vv.at(b, 0, hk),
                              vv.row_stride, qb.n_keys, d.Dk, d.Dv, scale, S, O, row_max, row_sum);
      for (int64_t r = 0; r < M; ++r) {
        const int64_t g = r / qb.nq, t = qb.t0 + r % qb.nq;
        if (lse_p) lse_p[(b * d.Hq + hk * G + g) * d.T + t] = row_max[r] + std::log(row_sum[r]);
        const float inv_l = 1.0f / row_sum[r];
        float* o = ov.at(b, t, hk * G + g);
        const float* src = O + r * d.Dv;
        for (int64_t i = 0; i < d.Dv; ++i) o[i] = src[i] * inv_l;
      }
    }
  }
}

void backward_blocked(const AttnDims& d, const HeadView& qv, const HeadView& kv, const HeadView& vv,
                      const HeadView& dov, const HeadView& ov, const float* lse_p, const MutHeadView& dqv,
                      const MutHeadView& dkv, const MutHeadView& dvv, float scale) {
  const int64_t G = d.group, n_qblocks = (d.T + kQueryBlock - 1) / kQueryBlock;
  cpu::blas_single_threaded();
#pragma omp parallel
  {
    std::vector<float> q_buf, do_buf, p_buf, dp_buf, dq_buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < d.B * d.Hkv; ++task) {
      const int64_t hk = task % d.Hkv, b = task / d.Hkv;
      for (int64_t j = 0; j < d.S; ++j) {  // "=": dK and dV start from zero
        std::fill(dkv.at(b, j, hk), dkv.at(b, j, hk) + d.Dk, 0.0f);
        std::fill(dvv.at(b, j, hk), dvv.at(b, j, hk) + d.Dv, 0.0f);
      }
      for (int64_t qb_i = 0; qb_i < n_qblocks; ++qb_i) {
        QueryBlock qb{b, hk, qb_i * kQueryBlock, 0, 0};
        qb.nq = std::min(kQueryBlock, d.T - qb.t0);
        qb.n_keys = d.prefix() + qb.t0 + qb.nq;
        const int64_t M = qb.rows(G), NK = qb.n_keys;
        float* Qm = scratch(q_buf, M * d.Dk);
        float* dOm = scratch(do_buf, M * d.Dv);
        float* P = scratch(p_buf, M * NK);
        float* dP = scratch(dp_buf, M * NK);
        float* dQm = scratch(dq_buf, M * d.Dk);
        gather_rows(Qm, qv, qb, G);
        gather_rows(dOm, dov, qb, G);
        block_scores(P, Qm, kv, qb, M, scale);
        // dP = dO . V^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(NK), int(d.Dv), 1.0f, dOm, int(d.Dv),
                    vv.at(b, 0, hk), int(vv.row_stride), 0.0f, dP, int(NK));
        for (int64_t r = 0; r < M; ++r) {
          const int64_t g = r / qb.nq, t = qb.t0 + r % qb.nq, h = hk * G + g;
          const int64_t n = keys_of_row(d, qb, r);
          float* p = P + r * NK;
          float* dp = dP + r * NK;
          const float delta = cpu::dot(dOm + r * d.Dv, ov.at(b, t, h), d.Dv);
          cpu::exp_shifted_inplace(p, lse_p[(b * d.Hq + h) * d.T + t], n);
          for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - delta);  // dS
          std::fill(p + n, p + NK, 0.0f);
          std::fill(dp + n, dp + NK, 0.0f);
        }
        // dQ = scale dS . K
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(d.Dk), int(NK), scale, dP, int(NK),
                    kv.at(b, 0, hk), int(kv.row_stride), 0.0f, dQm, int(d.Dk));
        for (int64_t r = 0; r < M; ++r)
          std::memcpy(dqv.at(b, qb.t0 + r % qb.nq, hk * G + r / qb.nq), dQm + r * d.Dk, size_t(d.Dk) * 4);
        // dK += scale dS^T . Q,  dV += P^T . dO  (keys 0..NK-1 of head hk, strided rows)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(NK), int(d.Dk), int(M), scale, dP, int(NK), Qm,
                    int(d.Dk), 1.0f, dkv.at(b, 0, hk), int(dkv.row_stride));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(NK), int(d.Dv), int(M), 1.0f, P, int(NK), dOm,
                    int(d.Dv), 1.0f, dvv.at(b, 0, hk), int(dvv.row_stride));
      }
    }
  }
}

}  // namespace

void CpuBackend::attention_forward(Tensor& out, Tensor* lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                   float scale) {
  const char* op = "attention_forward";
  const AttnDims d = check_attention_inputs(q, k, v, op);
  cpu::require_f32(out, {d.B, d.T, d.Hq, d.Dv}, op, "out");
  if (lse) cpu::require_f32(*lse, {d.B, d.Hq, d.T}, op, "lse");

  const HeadView qv = view(q), kv = view(k), vv = view(v);
  const MutHeadView ov = mut_view(out);
  float* lse_p = lse ? lse->f32() : nullptr;
  if (d.n_rows() == 0) return;
  if (use_blocked(d)) {
    forward_blocked(d, qv, kv, vv, ov, lse_p, scale);
    return;
  }
  const int64_t work = d.n_rows() * d.S * (d.Dk + d.Dv);
#pragma omp parallel if (work >= cpu::kParallelMinWork)
  {
    std::vector<float> scores(size_t(std::max<int64_t>(d.S, 1)));
    std::vector<float> acc(size_t(d.Dv));
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < d.n_rows(); ++row) {  // row = (b * Hq + h) * T + t
      const int64_t t = row % d.T, h = (row / d.T) % d.Hq, b = row / (d.T * d.Hq);
      const int64_t hk = h / d.group;
      const int64_t n_keys = d.prefix() + t + 1;
      const float* qr = qv.at(b, t, h);
      for (int64_t j = 0; j < n_keys; ++j) scores[size_t(j)] = scale * cpu::dot(qr, kv.at(b, j, hk), d.Dk);
      const float m = cpu::max_of(scores.data(), n_keys);
      cpu::exp_shifted_inplace(scores.data(), m, n_keys);
      const float l = cpu::sum(scores.data(), n_keys);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < n_keys; ++j) cpu::axpy(scores[size_t(j)], vv.at(b, j, hk), acc.data(), d.Dv);
      float* o = ov.at(b, t, h);
      const float inv_l = 1.0f / l;
      for (int64_t i = 0; i < d.Dv; ++i) o[i] = acc[size_t(i)] * inv_l;
      if (lse_p) lse_p[row] = m + std::log(l);
    }
  }
}

void CpuBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                                    const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                    float scale) {
  const char* op = "attention_backward";
  const AttnDims d = check_attention_inputs(q, k, v, op);
  cpu::require_f32(dout, {d.B, d.T, d.Hq, d.Dv}, op, "dout");
  cpu::require_f32(out, {d.B, d.T, d.Hq, d.Dv}, op, "out");
  cpu::require_f32(lse, {d.B, d.Hq, d.T}, op, "lse");
  cpu::require_f32(dq, {d.B, d.T, d.Hq, d.Dk}, op, "dq");
  require_kv(dk, {d.B, d.S, d.Hkv, d.Dk}, op, "dk");
  require_kv(dv, {d.B, d.S, d.Hkv, d.Dv}, op, "dv");

  const HeadView qv = view(q), kv = view(k), vv = view(v), dov = view(dout), ov = view(out);
  const MutHeadView dqv = mut_view(dq), dkv = mut_view(dk), dvv = mut_view(dv);
  const float* lse_p = lse.f32();
  if (d.n_rows() > 0 && use_blocked(d)) {
    backward_blocked(d, qv, kv, vv, dov, ov, lse_p, dqv, dkv, dvv, scale);
    return;
  }
  std::vector<float> delta(size_t(d.n_rows()));  // Delta[(b * Hq + h) * T + t] = dout . out
  const int64_t work = d.n_rows() * d.S * (d.Dk + d.Dv);
  const bool parallel = work >= cpu::kParallelMinWork;

  // Pass 1, per query row: Delta and dq.
#pragma omp parallel if (parallel)
  {
    std::vector<float> acc(size_t(d.Dk));
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < d.n_rows(); ++row) {
      const int64_t t = row % d.T, h = (row / d.T) % d.Hq, b = row / (d.T * d.Hq);
      const int64_t hk = h / d.group;
      const float* qr = qv.at(b, t, h);
      const float* gr = dov.at(b, t, h);
      const float dl = cpu::dot(gr, ov.at(b, t, h), d.Dv);
      delta[size_t(row)] = dl;
      const float l = lse_p[row];
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0, n_keys = d.prefix() + t + 1; j < n_keys; ++j) {
        const float* kr = kv.at(b, j, hk);
        const float p = std::exp(scale * cpu::dot(qr, kr, d.Dk) - l);
        const float ds = p * (cpu::dot(gr, vv.at(b, j, hk), d.Dv) - dl);
        cpu::axpy(ds, kr, acc.data(), d.Dk);
      }
      float* o = dqv.at(b, t, h);
      for (int64_t i = 0; i < d.Dk; ++i) o[i] = scale * acc[size_t(i)];
    }
  }

  // Pass 2, per key row of each KV head: dk and dv, summed over the group's query heads and the
  // queries that see key j (t >= j - prefix).
  const int64_t n_key_rows = d.B * d.Hkv * d.S;
#pragma omp parallel if (parallel)
  {
    std::vector<float> acc_k(size_t(d.Dk)), acc_v(size_t(d.Dv));
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < n_key_rows; ++row) {  // row = (b * Hkv + hk) * S + j
      const int64_t j = row % d.S, hk = (row / d.S) % d.Hkv, b = row / (d.S * d.Hkv);
      const float* kr = kv.at(b, j, hk);
      const float* vr = vv.at(b, j, hk);
      std::fill(acc_k.begin(), acc_k.end(), 0.0f);
      std::fill(acc_v.begin(), acc_v.end(), 0.0f);
      for (int64_t h = hk * d.group; h < (hk + 1) * d.group; ++h) {
        const int64_t q_row0 = (b * d.Hq + h) * d.T;
        for (int64_t t = std::max<int64_t>(0, j - d.prefix()); t < d.T; ++t) {
          const float* qr = qv.at(b, t, h);
          const float* gr = dov.at(b, t, h);
          const float p = std::exp(scale * cpu::dot(qr, kr, d.Dk) - lse_p[q_row0 + t]);
          const float ds = p * (cpu::dot(gr, vr, d.Dv) - delta[size_t(q_row0 + t)]);
          cpu::axpy(p, gr, acc_v.data(), d.Dv);
          cpu::axpy(ds, qr, acc_k.data(), d.Dk);
        }
      }
      float* dkr = dkv.at(b, j, hk);
      float* dvr = dvv.at(b, j, hk);
      for (int64_t i = 0; i < d.Dk; ++i) dkr[i] = scale * acc_k[size_t(i)];
      for (int64_t i = 0; i < d.Dv; ++i) dvr[i] = acc_v[size_t(i)];
    }
  }
}

}  // namespace latte
