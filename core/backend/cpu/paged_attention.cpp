// The paged KV cache: writes into it and attention over it (Backend::PagedBatch, backend.h).
//   paged_cache_write:   cache[slots[n]] = rows[n]  (f32 copy, bf16 round to nearest even, or i8
//                        with a per-row scale max|x|/127)
//   paged_attention:     attention_forward with the keys of each sequence found through its
//                        block table; q[N,Hq,Dk] -> out[N,Hq,Dv]
//   paged_mla_attention: mla_absorbed_attention likewise; q_rope[N,Hq,R], q_lat[N,Hq,L] ->
//                        out[N,Hq,L]
// Softmax as in attention_forward: s_j = scale q.k_j, m = max_j s_j, p_j = exp(s_j - m) (the
// vectorised cpu::exp8), l = cpu::sum(p), out = (sum_j p_j v_j) * (1/l), the weighted sum
// accumulated as cpu::axpy does, over keys in index order. A bf16 or i8 row is first widened
// (dequantized) to f32 and then goes through the same f32 code, so a bf16 cache gives the same
// bits as an f32 cache holding the same values. References: reference::paged_*.
//
// Two forms, chosen per sequence by its number of query rows (never by thread count):
//  - rows (decode, short chunks: n_s < kMinBlockedQueries). The heads that share a
//    cache row form a group (paged_attention: the G = Hq/Hkv heads of a KV head; MLA: all Hq
//    heads, which share the latent) and each cache row is loaded once for its group: dot_rows and
//    axpy_rows below give every head exactly cpu::dot's and cpu::axpy's result. Per (row, group):
//      A. the group's scores over the row's keys,  B. a softmax per head,
//      C. the weighted sum of the value (latent) rows.
//    Fused: one work item per (row, group) runs A, B, C on thread-local scores. Split, when there
//    are too few items to keep the threads busy (one long decode row): A runs per chunk of
//    kKeyChunk keys and C per chunk of kValueChunk output columns, with barriers in between, so
//    one row uses every core. Either way every output element is computed start to finish in the
//    same order - a score is one full dot, the softmax one pass, column e of the weighted sum runs
//    over the keys in order (an axpy is elementwise, so cutting columns changes nothing) - which is
//    why the choice may depend on the thread count without changing a bit, and why a decode row
//    equals attention_forward's per-row form on the same keys in a contiguous cache bit for bit.
//  - blocked (rows of a sequence with n_s >= kMinBlockedQueries: chunked prefill).
//    attention_forward's blocked form: per (sequence, KV head, block of kQueryBlock
//    queries) the visible keys and values of that head are gathered (widened) into contiguous
//    scratch, then S = scale Q K^T, row softmax, O = P V with single-threaded OpenBLAS GEMMs.
//    Same blocks, same GEMM shapes, so again the same bits as attention_forward (OpenBLAS packs
//    its operands, so the leading dimension of K and V does not enter the arithmetic; the tests
//    check it). paged_mla_attention's blocked form is the same with keys [latent | RoPE key of the
//    KV head] and the latents as values (mla_blocked_item); mla_absorbed_attention has no blocked
//    form, so there it agrees to rounding only, as the row form does.
// No reduction is ever split across items, so results do not depend on the thread count.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "core/backend/cpu/attention_blocks.h"
#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

constexpr int64_t kKeyChunk = 128;           // keys per phase-A item
constexpr int64_t kValueChunk = 32;          // output columns per phase-C item (a multiple of 8)
constexpr int64_t kMaxWaveScores = 1 << 23;  // split form: score floats per wave of rows (32 MiB)
using cpu::kMinBlockedQueries;
using cpu::kQueryBlock;
using cpu::scratch;

// ---- validation -------------------------------------------------------------------------------

// One sequence of a validated batch.
struct Seq {
  int64_t q0, n, ctx;     // first query row, query rows, keys
  const int32_t* blocks;  // its block_table row
};

void require_cache(const Tensor& t, int rank, const char* layout, const char* op, const char* name) {
  cpu::require_host(t, op, name);
  cpu::require_rank(t, rank, layout, op, name);
  cpu::require_contiguous(t, op, name);
}

// Checks b against N query rows and a cache of num_blocks blocks of block_size rows.
std::vector<Seq> check_batch(const PagedBatch& b, int64_t N, int64_t num_blocks, int64_t block_size, const char* op) {
  LATTE_REQUIRE(b.block_size == block_size, ErrorCode::shape_mismatch, op, ": batch block_size = ", b.block_size,
                " but the cache has blocks of ", block_size, " rows");
  LATTE_REQUIRE(block_size > 0, ErrorCode::invalid_argument, op, ": block_size must be positive, got ", block_size);
  const int64_t S = int64_t(b.context_len.size());
  LATTE_REQUIRE(int64_t(b.query_start.size()) == S + 1, ErrorCode::invalid_argument, op, ": query_start has ",
                b.query_start.size(), " entries, expected ", S + 1, " (context_len has ", S, " sequences)");
  LATTE_REQUIRE(b.query_start[0] == 0, ErrorCode::invalid_argument, op, ": query_start[0] = ", b.query_start[0],
                ", expected 0");
  LATTE_REQUIRE(b.query_start[size_t(S)] == N, ErrorCode::shape_mismatch, op, ": query_start[", S, "] = ",
                b.query_start[size_t(S)], " but q has ", N, " rows");
  LATTE_REQUIRE(b.max_blocks >= 0 && int64_t(b.block_table.size()) == S * b.max_blocks, ErrorCode::invalid_argument,
                op, ": block_table has ", b.block_table.size(), " entries, expected ", S, " sequences x max_blocks ",
                b.max_blocks);
  std::vector<Seq> seqs(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const int64_t q0 = b.query_start[size_t(s)], n = b.query_start[size_t(s + 1)] - q0;
    const int64_t ctx = b.context_len[size_t(s)];
    LATTE_REQUIRE(n >= 0, ErrorCode::invalid_argument, op, ": sequence ", s, ": query_start decreases (",
                  q0, " then ", q0 + n, ")");
    LATTE_REQUIRE(ctx >= n, ErrorCode::invalid_argument, op, ": sequence ", s, ": ", n,
                  " query rows but context_len = ", ctx, " (the keys include this step's)");
    LATTE_REQUIRE(ctx <= b.max_blocks * block_size, ErrorCode::invalid_argument, op, ": sequence ", s,
                  ": context_len = ", ctx, " exceeds max_blocks ", b.max_blocks, " x block_size ", block_size);
    const int32_t* blocks = b.block_table.data() + s * b.max_blocks;
    for (int64_t j = 0; j < (ctx + block_size - 1) / block_size; ++j)
      LATTE_REQUIRE(blocks[j] >= 0 && blocks[j] < num_blocks, ErrorCode::invalid_argument, op, ": sequence ", s,
                    ": block_table[", s, " * max_blocks + ", j, "] = ", blocks[j], " is outside [0, ", num_blocks,
                    ")");
    seqs[size_t(s)] = {q0, n, ctx, blocks};
  }
  return seqs;
}

// ---- one cache row against several query heads --------------------------------------------------
//
// The heads sharing a cache row are handled together so the row is loaded once per 8 floats
// instead of once per head. Each head's result is still exactly cpu::dot / cpu::axpy's: the same
// partial sums, fold and tail per head for the dot, and one multiply-add per element for the axpy
// (no reduction, so grouping cannot change it), written in the same vector-extension style so the
// compiler contracts them the same way.

// out[g] = cpu::dot(a + g * a_stride, b, n) for g < G (G <= 3: 12 accumulators + 2 in registers).
template <int G>
inline void dot_rows_g(const float* a, int64_t a_stride, const float* __restrict b, int64_t n, float* out) {
  using cpu::f32x8;
  using cpu::load8;
  // Unrolled by pragma so the accumulators stay in registers (an array of vectors indexed in a
  // loop would live on the stack).
  f32x8 s[G][4];
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) s[g][0] = s[g][1] = s[g][2] = s[g][3] = f32x8{};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const f32x8 bc = load8(b + i + 8 * c);
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) s[g][c] += load8(a + g * a_stride + i + 8 * c) * bc;
    }
  }
  for (; i + 8 <= n; i += 8) {
    const f32x8 bc = load8(b + i);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) s[g][0] += load8(a + g * a_stride + i) * bc;
  }
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    float r = cpu::hsum8((s[g][0] + s[g][2]) + (s[g][1] + s[g][3]));
    for (int64_t k = i; k < n; ++k) r += a[g * a_stride + k] * b[k];
    out[g] = r;
  }
}

// out[g] = cpu::dot(a + g * a_stride, b, n) for g < rows.
inline void dot_rows(const float* a, int64_t a_stride, int64_t rows, const float* b, int64_t n, float* out) {
  int64_t g = 0;
  for (; g + 3 <= rows; g += 3) dot_rows_g<3>(a + g * a_stride, a_stride, b, n, out + g);
  if (rows - g == 2) dot_rows_g<2>(a + g * a_stride, a_stride, b, n, out + g);
  if (rows - g == 1) dot_rows_g<1>(a + g * a_stride, a_stride, b, n, out + g);
}

// cpu::axpy(alpha[g * alpha_stride], x, y + g * y_stride, n) for g < G (G <= 4).
template <int G>
inline void axpy_rows_g(const float* alpha, int64_t alpha_stride, const float* __restrict x, float* __restrict y,
                        int64_t y_stride, int64_t n) {
  using cpu::f32x8;
  float al[G];
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) al[g] = alpha[g * alpha_stride];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 xv = cpu::load8(x + i);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      float* yg = y + g * y_stride + i;
      const f32x8 v = cpu::load8(yg) + al[g] * xv;
      std::memcpy(yg, &v, sizeof v);
    }
  }
  for (; i < n; ++i)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) y[g * y_stride + i] += al[g] * x[i];
}

// cpu::axpy(alpha[g * alpha_stride], x, y + g * y_stride, n) for g < rows.
inline void axpy_rows(const float* alpha, int64_t alpha_stride, int64_t rows, const float* x, float* y,
                      int64_t y_stride, int64_t n) {
  int64_t g = 0;
  for (; g + 4 <= rows; g += 4)
    axpy_rows_g<4>(alpha + g * alpha_stride, alpha_stride, x, y + g * y_stride, y_stride, n);
  switch (rows - g) {
    case 3: axpy_rows_g<3>(alpha + g * alpha_stride, alpha_stride, x, y + g * y_stride, y_stride, n); break;
    case 2: axpy_rows_g<2>(alpha + g * alpha_stride, alpha_stride, x, y + g * y_stride, y_stride, n); break;
    case 1: axpy_rows_g<1>(alpha + g * alpha_stride, alpha_stride, x, y + g * y_stride, y_stride, n); break;
    default: break;
  }
}

// ---- cache rows as f32 ------------------------------------------------------------------------

// A cache [num_blocks, block_size, row...] of f32, bf16 or i8 (with per-slot scales).
struct CacheView {
  const void* base;
  DType dtype;
  int64_t slot_elems;    // elements per slot (the product of the row dims)
  const float* scales;   // i8 only
  // Elements [at, at + n) of slot `slot` as f32: a pointer into an f32 cache, else widened
  // (bf16, exact) or dequantized (i8: q * scale) into buf.
  const float* get(int64_t slot, int64_t at, int64_t n, float* buf) const {
    const int64_t i = slot * slot_elems + at;
    if (dtype == DType::f32) return static_cast<const float*>(base) + i;
    if (dtype == DType::bf16) {
      cpu::widen_bf16(static_cast<const uint16_t*>(base) + i, buf, n);
    } else {
      const int8_t* q = static_cast<const int8_t*>(base) + i;
      const float s = scales[slot];
      for (int64_t e = 0; e < n; ++e) buf[e] = float(q[e]) * s;
    }
    return buf;
  }
};

// A cache's dtype (f32, bf16, or i8 with scales [num_blocks, block_size]) and its scales: only i8
// takes them.
void require_cache_dtype(const Tensor& cache, const Tensor* scales, int64_t num_blocks, int64_t block_size,
                         const char* op, const char* name, const char* scales_name) {
  const DType dt = cache.dtype();
  LATTE_REQUIRE(dt == DType::f32 || dt == DType::bf16 || dt == DType::i8, ErrorCode::shape_mismatch, op, ": ",
                name, ": expected dtype f32, bf16 or i8, got ", dtype_name(dt));
  if (dt == DType::i8) {
    LATTE_REQUIRE(scales != nullptr, ErrorCode::invalid_argument, op, ": an i8 ", name, " needs ", scales_name,
                  " [num_blocks, block_size]");
    cpu::require_f32(*scales, {num_blocks, block_size}, op, scales_name);
  } else {
    LATTE_REQUIRE(scales == nullptr, ErrorCode::invalid_argument, op, ": ", scales_name, " are only for an i8 ",
                  name, " (", name, " is ", dtype_name(dt), ")");
  }
}

CacheView cache_view(const Tensor& t, const Tensor* scales) {
  return {t.raw(), t.dtype(), t.numel() / std::max<int64_t>(t.dim(0) * t.dim(1), 1),
          scales ? scales->f32() : nullptr};
}

// Calls f(j, slot) for keys j in [j0, j1) of a sequence, walking its blocks.
template <typename F>
void for_each_key(const Seq& sq, int64_t block_size, int64_t j0, int64_t j1, F&& f) {
  int64_t j = j0;
  while (j < j1) {
    const int64_t bi = j / block_size, first = bi * block_size;
    const int64_t slot0 = int64_t(sq.blocks[bi]) * block_size - first;
    const int64_t end = std::min(j1, first + block_size);
    for (; j < end; ++j) f(j, slot0 + j);
  }
}

// ---- row form ---------------------------------------------------------------------------------

struct Row {
  int64_t row;      // index into q / out
  int64_t visible;  // keys it sees
  const Seq* seq;
  int64_t score_off;  // split: its score rows [H][visible] in the wave's buffer
};

// The calling thread's buffers for the op's callbacks (widened rows, accumulators).
struct Scratch {
  std::vector<float> a, b, acc;
};

// Phase B: the score row of (row, head) becomes exp(s - max) in place; returns 1 / sum.
float softmax_row(float* p, int64_t n) {
  const float m = cpu::max_of(p, n);
  cpu::exp_shifted_inplace(p, m, n);
  return 1.0f / cpu::sum(p, n);
}

// Runs the row form of an op whose heads come in `groups` groups of `hpg` heads that share their
// key rows (paged_attention: the Hkv KV heads; MLA: one group of all Hq heads), `width` output
// columns per head. The op supplies
//   scores(row, grp, j0, j1, s, scratch): s[g * visible + j] for the group's heads g, keys [j0, j1)
//   weighted(row, grp, e0, e1, p, inv, scratch): out columns [e0, e1) of the group's heads from
//                                                the weights p (same layout) and inv[g] = 1 / l
// Fused (one item per (row, group) doing all three phases on thread-local scores) when there are
// enough items to keep every thread busy, else split into the phases A, B, C described at the
// top. Both run the same callbacks over the same ranges' elements in the same order, so the choice
// - the one place the thread count enters - does not change a bit of the result.
template <typename Scores, typename Weighted>
void run_rows(std::vector<Row>& rows, int64_t groups, int64_t hpg, int64_t width, bool parallel, Scores&& scores,
              Weighted&& weighted) {
  if (rows.empty()) return;
  const int64_t H = groups * hpg;
  const int64_t n_items = int64_t(rows.size()) * groups;
  const int64_t threads = omp_get_max_threads();
  const bool split = parallel && threads > 1 && n_items < 4 * threads;
  if (!split) {
#pragma omp parallel if (parallel)
    {
      Scratch sc;
      std::vector<float> s_buf, inv(static_cast<size_t>(hpg));
#pragma omp for schedule(dynamic, 1)
      for (int64_t it = 0; it < n_items; ++it) {
        const Row& rw = rows[size_t(it / groups)];
        const int64_t grp = it % groups, vis = rw.visible;
        float* s = scratch(s_buf, hpg * vis);
        scores(rw, grp, 0, vis, s, sc);
        for (int64_t g = 0; g < hpg; ++g) inv[size_t(g)] = softmax_row(s + g * vis, vis);
        weighted(rw, grp, 0, width, s, inv.data(), sc);
      }
    }
    return;
  }
  struct KeyItem {
    int64_t r, grp, j0, j1;  // r: index into rows
  };
  struct ColItem {
    int64_t r, grp, e0, e1;
  };
  std::vector<float> scores_buf, inv_l;
  std::vector<KeyItem> key_items;
  std::vector<ColItem> col_items;
  size_t first = 0;
  while (first < rows.size()) {  // waves: rows whose H * visible scores fit kMaxWaveScores
    int64_t total = 0;
    size_t last = first;
    key_items.clear();
    col_items.clear();
    while (last < rows.size() && (last == first || total + H * rows[last].visible <= kMaxWaveScores)) {
      Row& rw = rows[last];
      rw.score_off = total;
      total += H * rw.visible;
      for (int64_t grp = 0; grp < groups; ++grp) {
        for (int64_t j0 = 0; j0 < rw.visible; j0 += kKeyChunk)
          key_items.push_back({int64_t(last), grp, j0, std::min(rw.visible, j0 + kKeyChunk)});
        for (int64_t e0 = 0; e0 < width; e0 += kValueChunk)
          col_items.push_back({int64_t(last), grp, e0, std::min(width, e0 + kValueChunk)});
      }
      ++last;
    }
    float* sc_all = scratch(scores_buf, total);
    float* il = scratch(inv_l, int64_t(last - first) * H);
    const int64_t n_softmax = int64_t(last - first) * H;
#pragma omp parallel
    {
      Scratch sc;
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < key_items.size(); ++i) {  // A
        const KeyItem& ki = key_items[i];
        const Row& rw = rows[size_t(ki.r)];
        scores(rw, ki.grp, ki.j0, ki.j1, sc_all + rw.score_off + ki.grp * hpg * rw.visible, sc);
      }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n_softmax; ++i) {  // B
        const Row& rw = rows[first + size_t(i / H)];
        il[i] = softmax_row(sc_all + rw.score_off + (i % H) * rw.visible, rw.visible);
      }
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < col_items.size(); ++i) {  // C
        const ColItem& ci = col_items[i];
        const Row& rw = rows[size_t(ci.r)];
        weighted(rw, ci.grp, ci.e0, ci.e1, sc_all + rw.score_off + ci.grp * hpg * rw.visible,
                 il + (ci.r - int64_t(first)) * H + ci.grp * hpg, sc);
      }
    }
    first = last;
  }
}

// ---- blocked form (paged_attention, n_s >= kMinBlockedQueries) ---------------------------------

struct AttnDims {
  int64_t N, Hq, Hkv, Dk, Dv, G, block_size;
};

// One (sequence, KV head, query block) item: attention.cpp's forward_blocked on gathered keys.
void blocked_item(const AttnDims& d, const Seq& sq, int64_t hk, int64_t t0, const float* q, const CacheView& kc,
                  const CacheView& vc, float* out, float scale, std::vector<float>* bufs) {
  const int64_t G = d.G, nq = std::min(kQueryBlock, sq.n - t0), M = G * nq;
  const int64_t prefix = sq.ctx - sq.n, n_keys = prefix + t0 + nq;
  float* K = scratch(bufs[0], n_keys * d.Dk);
  float* V = scratch(bufs[1], n_keys * d.Dv);
  float* Qm = scratch(bufs[2], M * d.Dk);
  float* S = scratch(bufs[3], M * n_keys);
  float* O = scratch(bufs[4], M * d.Dv);
  float* row_sum = scratch(bufs[5], 2 * M);
  float* row_max = row_sum + M;
  for_each_key(sq, d.block_size, 0, n_keys, [&](int64_t j, int64_t slot) {
    float* kr = K + j * d.Dk;
    float* vr = V + j * d.Dv;
    const float* ks = kc.get(slot, hk * d.Dk, d.Dk, kr);
    const float* vs = vc.get(slot, hk * d.Dv, d.Dv, vr);
    if (ks != kr) std::memcpy(kr, ks, size_t(d.Dk) * 4);
    if (vs != vr) std::memcpy(vr, vs, size_t(d.Dv) * 4);
  });
  for (int64_t g = 0; g < G; ++g)  // rows r = g * nq + i, as gather_rows in attention.cpp
    for (int64_t i = 0; i < nq; ++i)
      std::memcpy(Qm + (g * nq + i) * d.Dk, q + ((sq.q0 + t0 + i) * d.Hq + hk * G + g) * d.Dk, size_t(d.Dk) * 4);
  cpu::attend_query_block(Qm, M, nq, prefix + t0, K, d.Dk, V, d.Dv, n_keys, d.Dk, d.Dv, scale, S, O, row_max, row_sum);
  for (int64_t r = 0; r < M; ++r) {
    const float inv_l = 1.0f / row_sum[r];
    float* o = out + ((sq.q0 + t0 + r % nq) * d.Hq + hk * G + r / nq) * d.Dv;
    const float* src = O + r * d.Dv;
    for (int64_t i = 0; i < d.Dv; ++i) o[i] = src[i] * inv_l;
  }
}

}  // namespace

// ---- paged_cache_write --------------------------------------------------------------------------

void CpuBackend::paged_cache_write(Tensor& cache, Tensor* scales, const Tensor& rows, std::span<const int32_t> slots) {
  const char* op = "paged_cache_write";
  cpu::require_host(cache, op, "cache");
  LATTE_REQUIRE(cache.ndim() >= 3, ErrorCode::shape_mismatch, op,
                ": cache: expected [num_blocks, block_size, row dims...] (3-D or more), got shape ",
                shape_str(cache.shape()));
  cpu::require_contiguous(cache, op, "cache");
  const DType dt = cache.dtype();
  const int64_t num_blocks = cache.dim(0), block_size = cache.dim(1), num_slots = num_blocks * block_size;
  require_cache_dtype(cache, scales, num_blocks, block_size, op, "cache", "scales");
  const int64_t N = rows.ndim() >= 1 ? rows.dim(0) : 0;
  Shape want(cache.shape());
  want.erase(want.begin());
  want[0] = N;
  cpu::require_f32(rows, want, op, "rows");
  LATTE_REQUIRE(int64_t(slots.size()) == N, ErrorCode::shape_mismatch, op, ": slots has ", slots.size(),
                " entries but rows has ", N, " rows");
  for (size_t n = 0; n < slots.size(); ++n)
    LATTE_REQUIRE(slots[n] >= 0 && slots[n] < num_slots, ErrorCode::invalid_argument, op, ": slots[", n, "] = ",
                  slots[n], " is outside [0, ", num_slots, ") (", num_blocks, " blocks of ", block_size, ")");
  // Two rows into one slot would leave it to the thread schedule which one lands.
  std::vector<std::pair<int32_t, size_t>> sorted(slots.size());
  for (size_t n = 0; n < slots.size(); ++n) sorted[n] = {slots[n], n};
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i)
    LATTE_REQUIRE(sorted[i].first != sorted[i - 1].first, ErrorCode::invalid_argument, op, ": slot ",
                  sorted[i].first, " is written twice (slots[", sorted[i - 1].second, "] and slots[",
                  sorted[i].second, "])");

  const int64_t W = N > 0 ? rows.numel() / N : 0;
  const float* src = rows.f32();
  float* scale_p = scales ? scales->f32() : nullptr;
  float* c_f32 = dt == DType::f32 ? cache.f32() : nullptr;
  uint16_t* c_bf16 = dt == DType::bf16 ? cache.u16() : nullptr;
  int8_t* c_i8 = dt == DType::i8 ? cache.i8() : nullptr;
#pragma omp parallel for schedule(static) if (N * W >= cpu::kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t slot = slots[size_t(n)];
    const float* x = src + n * W;
    if (c_f32) {
      std::memcpy(c_f32 + slot * W, x, size_t(W) * 4);
    } else if (c_bf16) {
      uint16_t* dst = c_bf16 + slot * W;
      for (int64_t i = 0; i < W; ++i) dst[i] = f32_to_bf16(x[i]);
    } else {
      int8_t* dst = c_i8 + slot * W;
      float amax = 0.0f;
      for (int64_t i = 0; i < W; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float scale = amax / 127.0f;
      scale_p[slot] = scale;
      for (int64_t i = 0; i < W; ++i) {
        float q = scale > 0.0f ? std::nearbyint(x[i] / scale) : 0.0f;
        q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        dst[i] = q == q ? int8_t(q) : int8_t(0);  // NaN (from Inf or NaN input) -> 0: no UB in the cast
      }
    }
  }
}

// ---- paged_attention ----------------------------------------------------------------------------

void CpuBackend::paged_attention(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const PagedBatch& b, float scale) {
  const char* op = "paged_attention";
  cpu::require_host(q, op, "q");
  cpu::require_dtype(q, DType::f32, op, "q");
  cpu::require_rank(q, 3, "[N, Hq, Dk]", op, "q");
  cpu::require_contiguous(q, op, "q");
  require_cache(k_cache, 4, "[num_blocks, block_size, Hkv, Dk]", op, "k_cache");
  require_cache(v_cache, 4, "[num_blocks, block_size, Hkv, Dv]", op, "v_cache");
  cpu::require_weight_dtype(k_cache, op, "k_cache");
  cpu::require_weight_dtype(v_cache, op, "v_cache");
  AttnDims d{};
  d.N = q.dim(0);
  d.Hq = q.dim(1);
  d.Dk = q.dim(2);
  d.Hkv = k_cache.dim(2);
  d.Dv = v_cache.dim(3);
  d.block_size = k_cache.dim(1);
  const int64_t num_blocks = k_cache.dim(0);
  cpu::require_shape(k_cache, {num_blocks, d.block_size, d.Hkv, d.Dk}, op, "k_cache");
  cpu::require_shape(v_cache, {num_blocks, d.block_size, d.Hkv, d.Dv}, op, "v_cache");
  LATTE_REQUIRE(d.Hkv > 0 && d.Hq % d.Hkv == 0, ErrorCode::shape_mismatch, op, ": Hq = ", d.Hq,
                " query heads is not a multiple of Hkv = ", d.Hkv, " KV heads (q ", shape_str(q.shape()),
                ", k_cache ", shape_str(k_cache.shape()), ")");
  d.G = d.Hq / d.Hkv;
  cpu::require_f32(out, {d.N, d.Hq, d.Dv}, op, "out");
  const std::vector<Seq> seqs = check_batch(b, d.N, num_blocks, d.block_size, op);

  const CacheView kc = cache_view(k_cache, nullptr), vc = cache_view(v_cache, nullptr);
  const float* qp = q.f32();
  float* op_out = out.f32();

  // Blocked items: (sequence, KV head, query block).
  struct BlockItem {
    const Seq* seq;
    int64_t hk, t0;
  };
  std::vector<BlockItem> blocked;
  std::vector<Row> rows;
  int64_t blocked_work = 0, row_work = 0;
  for (const Seq& sq : seqs) {
    if (sq.n >= kMinBlockedQueries) {
      for (int64_t hk = 0; hk < d.Hkv; ++hk)
        for (int64_t t0 = 0; t0 < sq.n; t0 += kQueryBlock) blocked.push_back({&sq, hk, t0});
      blocked_work += sq.n * sq.ctx;
    } else {
      for (int64_t i = 0; i < sq.n; ++i) {
        rows.push_back({sq.q0 + i, sq.ctx - sq.n + i + 1, &sq, 0});
        row_work += sq.ctx;
      }
    }
  }

  if (!blocked.empty()) {
    cpu::blas_single_threaded();
#pragma omp parallel if (blocked_work * d.Hq * (d.Dk + d.Dv) >= cpu::kParallelMinWork)
    {
      std::vector<float> bufs[6];
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < blocked.size(); ++i)
        blocked_item(d, *blocked[i].seq, blocked[i].hk, blocked[i].t0, qp, kc, vc, op_out, scale, bufs);
    }
  }
  if (rows.empty()) return;

  const int64_t G = d.G;
  auto scores = [&](const Row& rw, int64_t hk, int64_t j0, int64_t j1, float* s, Scratch& sc) {
    const float* qh = qp + (rw.row * d.Hq + hk * G) * d.Dk;
    float* kbuf = scratch(sc.a, d.Dk);
    float* dots = scratch(sc.b, G);
    for_each_key(*rw.seq, d.block_size, j0, j1, [&](int64_t j, int64_t slot) {
      const float* kr = kc.get(slot, hk * d.Dk, d.Dk, kbuf);
      dot_rows(qh, d.Dk, G, kr, d.Dk, dots);
      for (int64_t g = 0; g < G; ++g) s[g * rw.visible + j] = scale * dots[g];
    });
  };
  auto weighted = [&](const Row& rw, int64_t hk, int64_t e0, int64_t e1, const float* p, const float* inv,
                      Scratch& sc) {
    const int64_t w = e1 - e0;
    float* vbuf = scratch(sc.b, w);
    float* acc = scratch(sc.acc, G * w);
    std::fill(acc, acc + G * w, 0.0f);
    for_each_key(*rw.seq, d.block_size, 0, rw.visible, [&](int64_t j, int64_t slot) {
      const float* vr = vc.get(slot, hk * d.Dv + e0, w, vbuf);
      axpy_rows(p + j, rw.visible, G, vr, acc, w, w);
    });
    for (int64_t g = 0; g < G; ++g) {
      float* o = op_out + (rw.row * d.Hq + hk * G + g) * d.Dv + e0;
      for (int64_t e = 0; e < w; ++e) o[e] = acc[g * w + e] * inv[g];
    }
  };
  run_rows(rows, d.Hkv, G, d.Dv, row_work * d.Hq * (d.Dk + d.Dv) >= cpu::kParallelMinWork, scores, weighted);
}

// ---- paged_mla_attention ------------------------------------------------------------------------

struct MlaDims {
  int64_t Hq, Hkv, G, L, R, block_size;
};

struct MlaBlockItem {
  const Seq* seq;
  int64_t hk, t0;  // KV head (whose RoPE keys, and whose G query heads), first query of the block
};

// Chunked prefill of an MLA sequence (n_s >= kMinBlockedQueries) in GEMM form, as blocked_item
// does for paged_attention: for KV head hk the keys are [latent_j | k_rope_j[hk]] (L + R wide), the
// values the latents themselves (the first L columns of the same rows), and the G heads' queries
// [q_lat | q_rope]; so the scores are q_lat . latent_j + q_rope . k_rope_j, the absorbed form's.
void mla_blocked_item(const MlaDims& d, const MlaBlockItem& it, const float* q_rope, const float* q_lat,
                      const CacheView& kc, const CacheView& lc, float* out, float scale, std::vector<float>* bufs) {
  const Seq& sq = *it.seq;
  const int64_t G = d.G, Dk = d.L + d.R, nq = std::min(kQueryBlock, sq.n - it.t0), M = G * nq;
  const int64_t prefix = sq.ctx - sq.n, n_keys = prefix + it.t0 + nq;
  float* K = scratch(bufs[0], n_keys * Dk);
  float* Qm = scratch(bufs[1], M * Dk);
  float* S = scratch(bufs[2], M * n_keys);
  float* O = scratch(bufs[3], M * d.L);
  float* row_sum = scratch(bufs[4], 2 * M);
  float* row_max = row_sum + M;
  for_each_key(sq, d.block_size, 0, n_keys, [&](int64_t j, int64_t slot) {
    float* kr = K + j * Dk;
    const float* lat = lc.get(slot, 0, d.L, kr);
    if (lat != kr) std::memcpy(kr, lat, size_t(d.L) * 4);
    if (d.R == 0) return;
    const float* rope = kc.get(slot, it.hk * d.R, d.R, kr + d.L);
    if (rope != kr + d.L) std::memcpy(kr + d.L, rope, size_t(d.R) * 4);
  });
  for (int64_t g = 0; g < G; ++g)  // rows r = g * nq + i
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t row = sq.q0 + it.t0 + i, h = it.hk * G + g;
      float* qm = Qm + (g * nq + i) * Dk;
      std::memcpy(qm, q_lat + (row * d.Hq + h) * d.L, size_t(d.L) * 4);
      std::memcpy(qm + d.L, q_rope + (row * d.Hq + h) * d.R, size_t(d.R) * 4);
    }
  cpu::attend_query_block(Qm, M, nq, prefix + it.t0, K, Dk, K, Dk, n_keys, Dk, d.L, scale, S, O, row_max, row_sum);
  for (int64_t r = 0; r < M; ++r) {
    const float inv_l = 1.0f / row_sum[r];
    float* o = out + ((sq.q0 + it.t0 + r % nq) * d.Hq + it.hk * G + r / nq) * d.L;
    const float* src = O + r * d.L;
    for (int64_t e = 0; e < d.L; ++e) o[e] = src[e] * inv_l;
  }
}

void CpuBackend::paged_mla_attention(Tensor& out, const Tensor& q_rope, const Tensor& q_lat,
                                     const Tensor& k_rope_cache, const Tensor* k_rope_scales,
                                     const Tensor& latent_cache, const Tensor* latent_scales, const PagedBatch& b,
                                     float scale) {
  const char* op = "paged_mla_attention";
  cpu::require_rank(q_lat, 3, "[N, Hq, L]", op, "q_lat");
  cpu::require_rank(q_rope, 3, "[N, Hq, R]", op, "q_rope");
  require_cache(k_rope_cache, 4, "[num_blocks, block_size, Hkv, R]", op, "k_rope_cache");
  require_cache(latent_cache, 3, "[num_blocks, block_size, L]", op, "latent_cache");
  const int64_t N = q_lat.dim(0), Hq = q_lat.dim(1), L = q_lat.dim(2), R = q_rope.dim(2);
  const int64_t num_blocks = latent_cache.dim(0), block_size = latent_cache.dim(1), Hkv = k_rope_cache.dim(2);
  cpu::require_f32(q_lat, {N, Hq, L}, op, "q_lat");
  cpu::require_f32(q_rope, {N, Hq, R}, op, "q_rope");
  require_cache_dtype(k_rope_cache, k_rope_scales, num_blocks, block_size, op, "k_rope_cache", "k_rope_scales");
  cpu::require_shape(k_rope_cache, {num_blocks, block_size, Hkv, R}, op, "k_rope_cache");
  require_cache_dtype(latent_cache, latent_scales, num_blocks, block_size, op, "latent_cache", "latent_scales");
  cpu::require_shape(latent_cache, {num_blocks, block_size, L}, op, "latent_cache");
  LATTE_REQUIRE(Hkv > 0 && Hq % Hkv == 0, ErrorCode::shape_mismatch, op, ": Hq = ", Hq,
                " query heads is not a multiple of Hkv = ", Hkv, " KV heads (q_rope ", shape_str(q_rope.shape()),
                ", k_rope_cache ", shape_str(k_rope_cache.shape()), ")");
  cpu::require_f32(out, {N, Hq, L}, op, "out");
  const std::vector<Seq> seqs = check_batch(b, N, num_blocks, block_size, op);
  const int64_t G = Hq / Hkv;

  const CacheView kc = cache_view(k_rope_cache, k_rope_scales), lc = cache_view(latent_cache, latent_scales);
  const float* qr = q_rope.f32();
  const float* ql = q_lat.f32();
  float* o_p = out.f32();
  std::vector<MlaBlockItem> blocked;
  std::vector<Row> rows;
  int64_t work = 0, blocked_work = 0;
  for (const Seq& sq : seqs) {
    if (sq.n >= kMinBlockedQueries) {
      for (int64_t hk = 0; hk < Hkv; ++hk)
        for (int64_t t0 = 0; t0 < sq.n; t0 += kQueryBlock) blocked.push_back({&sq, hk, t0});
      blocked_work += sq.n * sq.ctx;
      continue;
    }
    for (int64_t i = 0; i < sq.n; ++i) {
      rows.push_back({sq.q0 + i, sq.ctx - sq.n + i + 1, &sq, 0});
      work += sq.ctx;
    }
  }
  if (!blocked.empty()) {
    const MlaDims md{Hq, Hkv, G, L, R, block_size};
    cpu::blas_single_threaded();
#pragma omp parallel if (blocked_work * Hq * (R + 2 * L) >= cpu::kParallelMinWork)
    {
      std::vector<float> bufs[5];
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < blocked.size(); ++i) mla_blocked_item(md, blocked[i], qr, ql, kc, lc, o_p, scale, bufs);
    }
  }
  if (rows.empty()) return;

  // Every head reads the latent, so all Hq heads form one group; the RoPE key row of KV head hk
  // is read once for its G heads. Score sum and scale in mla_absorbed_attention's order.
  auto scores = [&](const Row& rw, int64_t, int64_t j0, int64_t j1, float* s, Scratch& sc) {
    const float* qlr = ql + rw.row * Hq * L;
    const float* qrr = qr + rw.row * Hq * R;
    float* lbuf = scratch(sc.a, L + R + 2 * Hq);
    float* kbuf = lbuf + L;
    float* lat_dots = kbuf + R;
    float* rope_dots = lat_dots + Hq;
    for_each_key(*rw.seq, block_size, j0, j1, [&](int64_t j, int64_t slot) {
      const float* lat = lc.get(slot, 0, L, lbuf);
      dot_rows(qlr, L, Hq, lat, L, lat_dots);
      if (R > 0)
        for (int64_t hk = 0; hk < Hkv; ++hk)
          dot_rows(qrr + hk * G * R, R, G, kc.get(slot, hk * R, R, kbuf), R, rope_dots + hk * G);
      for (int64_t h = 0; h < Hq; ++h) s[h * rw.visible + j] = (lat_dots[h] + (R > 0 ? rope_dots[h] : 0.0f)) * scale;
    });
  };
  auto weighted = [&](const Row& rw, int64_t, int64_t e0, int64_t e1, const float* p, const float* inv,
                      Scratch& sc) {
    const int64_t w = e1 - e0;
    float* lbuf = scratch(sc.a, w);
    float* acc = scratch(sc.acc, Hq * w);
    std::fill(acc, acc + Hq * w, 0.0f);
    for_each_key(*rw.seq, block_size, 0, rw.visible, [&](int64_t j, int64_t slot) {
      const float* lat = lc.get(slot, e0, w, lbuf);
      axpy_rows(p + j, rw.visible, Hq, lat, acc, w, w);
    });
    for (int64_t h = 0; h < Hq; ++h) {
      float* o = o_p + (rw.row * Hq + h) * L + e0;
      for (int64_t e = 0; e < w; ++e) o[e] = acc[h * w + e] * inv[h];
    }
  };
  run_rows(rows, /*groups=*/1, Hq, L, work * Hq * (R + 2 * L) >= cpu::kParallelMinWork, scores, weighted);
}

}  // namespace latte
