// The vocabulary-parallel ops (embedding_slice_*, cross_entropy_slice_*) against their float64
// references, and over 2-4 simulated ranks against the whole-vocabulary ops they stand in for:
//  - embedding: the per-rank outputs sum to embedding_forward on the whole table, and the per-rank
//    table gradients, stacked, are embedding_backward's (both exact: one rank contributes each
//    row, and a row's contributions add in token order either way);
//  - cross entropy: max over ranks of row_max, sum over ranks of sum_exp and target_logit, then
//    _losses, equals cross_entropy_forward on the full logits (atol 1e-6 + 1e-7 |offset|, rtol
//    1e-6, as cross_entropy_test.cpp); the per-rank _backward outputs, side by side, equal
//    cross_entropy_backward's (atol 1e-7 + rtol 1e-5).
// The cross-entropy steps must also reproduce, bit for bit, the arithmetic the tensor-parallel
// model used before these ops existed (legacy_* below), so printed perplexities keep their digits.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;

// Rank r of R holds rows [begin(r), begin(r + 1)) of a vocabulary of Vt; the first Vt % R ranks
// get one row more (uneven splits on purpose).
int64_t split_begin(int64_t Vt, int R, int r) {
  const int64_t base = Vt / R, extra = Vt % R;
  return r * base + std::min<int64_t>(r, extra);
}

// Columns [c0, c1) of a contiguous [N, V] tensor, as a contiguous tensor.
Tensor columns(const Tensor& t, int64_t c0, int64_t c1) { return t.narrow(1, c0, c1).clone(); }

std::vector<float> host(const Tensor& t) { return t.to_vector(); }

// ---- embedding ----

void check_embedding_slice(int64_t Vt, int64_t D, int64_t T, int R, DType dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "Vt=" << Vt << " D=" << D << " T=" << T << " R=" << R << " "
                                  << dtype_name(dtype));
  CpuBackend be;
  Rng rng(seed);
  Tensor table = random_f32(rng, {Vt, D}).to(dtype);
  const std::vector<int32_t> tokens = rng.ints(T, 0, int32_t(Vt - 1));
  Tensor dout = random_f32(rng, {T, D});

  Tensor full = nan_f32({T, D});
  be.embedding_forward(full, tokens, table);
  Tensor dfull = Tensor::zeros({Vt, D});
  be.embedding_backward(dfull, tokens, dout);

  Tensor summed = Tensor::zeros({T, D});
  Tensor dstacked = Tensor::empty({Vt, D});
  for (int r = 0; r < R; ++r) {
    const int64_t b = split_begin(Vt, R, r), e = split_begin(Vt, R, r + 1), V = e - b;
    const Tensor part = table.slice(b, e);  // rows of a contiguous table: contiguous
    Tensor out = nan_f32({T, D});
    be.embedding_slice_forward(out, tokens, part, b);
    EXPECT_TRUE(all_close(out, ref::embedding_slice_forward(tokens, to_f64(part), V, D, b), 0, 0)) << "rank " << r;
    be.add_inplace(summed, out);

    Tensor dpart = random_f32(rng, {V, D});
    const Vec dpart0 = to_f64(dpart);
    be.embedding_slice_backward(dpart, tokens, dout, b);
    EXPECT_TRUE(all_close(dpart, add_vec(dpart0, ref::embedding_slice_backward(tokens, to_f64(dout), V, D, b)), 2e-6,
                          2e-6))
        << "rank " << r;
    Tensor fresh = Tensor::zeros({V, D});
    be.embedding_slice_backward(fresh, tokens, dout, b);
    Tensor dst = dstacked.slice(b, e);
    be.copy(dst, fresh);
  }
  EXPECT_TRUE(bit_equal(summed, full)) << "sum over ranks vs the whole-table embedding";
  EXPECT_TRUE(bit_equal(dstacked, dfull)) << "stacked slice gradients vs the whole-table gradient";
}

TEST(CpuVocabSlice, EmbeddingMatchesReferenceAndWholeTable) {
  uint64_t seed = 500;
  for (int R : {1, 2, 3, 4}) {
    check_embedding_slice(11, 5, 30, R, DType::f32, seed++);
    check_embedding_slice(11, 5, 30, R, DType::bf16, seed++);
  }
  check_embedding_slice(301, 130, 257, 3, DType::f32, seed++);  // OpenMP path, column blocks + tail
  check_embedding_slice(301, 130, 257, 4, DType::bf16, seed++);
}

TEST(CpuVocabSlice, EmbeddingIdsOutsideTheSliceGiveZeroRows) {
  CpuBackend be;
  Tensor table = make_f32({1, 2, 3, 4}, {2, 2});  // rows 10 and 11 of the vocabulary
  const std::vector<int32_t> tokens = {9, 10, 11, 12, 0, 1000};
  Tensor out = nan_f32({6, 2});
  be.embedding_slice_forward(out, tokens, table, 10);
  EXPECT_TRUE(all_close(out, Vec{0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0}, 0, 0));
  Tensor dtable = Tensor::zeros({2, 2});
  be.embedding_slice_backward(dtable, tokens, make_f32({1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6}, {6, 2}), 10);
  EXPECT_TRUE(all_close(dtable, Vec{2, 2, 3, 3}, 0, 0));
}

TEST(CpuVocabSlice, EmbeddingBadArgumentsThrow) {
  CpuBackend be;
  Tensor table = Tensor::zeros({5, 2});
  Tensor out = nan_f32({3, 2});
  const std::vector<int32_t> negative = {0, 1, -1}, ok = {0, 1, 2};
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_forward(out, negative, table, 0); }, ErrorCode::invalid_argument,
                           "embedding_slice_forward: token id -1 at position 2"));
  EXPECT_TRUE(std::isnan(out.f32()[0])) << "nothing may be written before the check";
  Tensor dout = make_f32({1, 1, 1, 1, 1, 1}, {3, 2}), dtable = Tensor::zeros({5, 2});
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_backward(dtable, negative, dout, 0); },
                           ErrorCode::invalid_argument, "embedding_slice_backward: token id -1 at position 2"));
  EXPECT_TRUE(all_close(dtable, Vec(10, 0.0), 0, 0)) << "nothing may be scattered before the check";
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_forward(out, ok, table, -3); }, ErrorCode::invalid_argument,
                           "vocab_begin is -3"));
  Tensor out_bad = Tensor::zeros({3, 3});
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_forward(out_bad, ok, table, 0); }, ErrorCode::shape_mismatch,
                           "out: expected shape [3, 2], got [3, 3]"));
  Tensor table1 = Tensor::zeros({10});
  EXPECT_TRUE(
      throws_error([&] { be.embedding_slice_forward(out, ok, table1, 0); }, ErrorCode::shape_mismatch, "table"));
  Tensor dtable_bf16 = Tensor::zeros({5, 2}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_backward(dtable_bf16, ok, dout, 0); }, ErrorCode::shape_mismatch,
                           "dtable: expected dtype f32"));
  Tensor dout_short = Tensor::zeros({2, 2});
  EXPECT_TRUE(throws_error([&] { be.embedding_slice_backward(dtable, ok, dout_short, 0); }, ErrorCode::shape_mismatch,
                           "dout: expected shape [3, 2]"));
}

// ---- cross entropy ----

// The arithmetic of Transformer::vocab_parallel_cross_entropy(_backward) before these ops, for one
// rank whose combined row_max / sums are given: the ops must match it bit for bit.
struct Legacy {
  std::vector<float> mx, sum, tgt, lse, losses, d;
};
Legacy legacy_rank(const std::vector<float>& l, int64_t N, int64_t Vl, int64_t vocab0,
                   const std::vector<int32_t>& targets, float scale) {
  Legacy r;
  r.mx.resize(size_t(N));
  r.sum.resize(size_t(N));
  r.tgt.assign(size_t(N), 0.0f);
  r.lse.resize(size_t(N));
  r.losses.resize(size_t(N));
  r.d.resize(size_t(N * Vl));
  for (int64_t n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int64_t v = 0; v < Vl; ++v) m = std::max(m, l[size_t(n * Vl + v)]);
    r.mx[size_t(n)] = m;
  }
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[size_t(n)];
    double s = 0;
    for (int64_t v = 0; v < Vl; ++v) s += std::exp(double(l[size_t(n * Vl + v)] - r.mx[size_t(n)]));
    r.sum[size_t(n)] = float(s);
    if (t >= vocab0 && t < vocab0 + Vl) r.tgt[size_t(n)] = l[size_t(n * Vl + (t - vocab0))];
  }
  for (int64_t n = 0; n < N; ++n) {
    r.lse[size_t(n)] = r.mx[size_t(n)] + std::log(r.sum[size_t(n)]);
    r.losses[size_t(n)] = targets[size_t(n)] < 0 ? 0.0f : r.lse[size_t(n)] - r.tgt[size_t(n)];
  }
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[size_t(n)];
    for (int64_t v = 0; v < Vl; ++v)
      r.d[size_t(n * Vl + v)] =
          t < 0 ? 0.0f
                : scale * (std::exp(l[size_t(n * Vl + v)] - r.lse[size_t(n)]) - (t == vocab0 + v ? 1.0f : 0.0f));
  }
  return r;
}

::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0)
      return ::testing::AssertionFailure() << "first difference at " << i << ": " << got[i] << " vs " << want[i];
  return ::testing::AssertionSuccess();
}

void check_ce_slice(int64_t N, int64_t Vt, int R, double offset, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " Vt=" << Vt << " R=" << R << " offset=" << offset);
  CpuBackend be;
  Rng rng(seed);
  Tensor logits = make_f32(rng.normal(N * Vt, 2.0, offset), {N, Vt});
  std::vector<int32_t> targets = rng.ints(N, 0, int32_t(Vt - 1));
  if (N > 1) targets[1] = -1;
  if (N > 2) targets[2] = -100;
  if (N > 3) targets[3] = int32_t(Vt - 1);  // the last column of the last rank
  if (N > 4) targets[4] = 0;
  const float scale = 1.0f / 3.0f;

  // Step 1 on every rank, then the "all-reduce" max.
  std::vector<Tensor> parts;
  Tensor row_max = Tensor::empty({N});
  row_max.fill(-INFINITY);
  for (int r = 0; r < R; ++r) {
    const int64_t b = split_begin(Vt, R, r), e = split_begin(Vt, R, r + 1);
    parts.push_back(columns(logits, b, e));
    Tensor mx = nan_f32({N});
    be.cross_entropy_slice_max(mx, parts.back());
    EXPECT_TRUE(all_close(mx, ref::cross_entropy_slice_max(to_f64(parts.back()), N, e - b), 0, 0)) << "rank " << r;
    for (int64_t n = 0; n < N; ++n) row_max.f32()[n] = std::max(row_max.f32()[n], mx.f32()[n]);
  }
  // Step 2 on every rank with the combined max, then the "all-reduce" sum (rank order).
  Tensor sum_exp = Tensor::zeros({N}), target_logit = Tensor::zeros({N});
  for (int r = 0; r < R; ++r) {
    const int64_t b = split_begin(Vt, R, r), V = split_begin(Vt, R, r + 1) - b;
    Tensor se = nan_f32({N}), tl = nan_f32({N});
    be.cross_entropy_slice_sums(se, tl, parts[size_t(r)], row_max, targets, b);
    const ref::CeSliceSums want = ref::cross_entropy_slice_sums(to_f64(parts[size_t(r)]), to_f64(row_max), targets, N,
                                                                V, b);
    EXPECT_TRUE(all_close(se, want.sum_exp, 0, 1e-6)) << "rank " << r;
    EXPECT_TRUE(all_close(tl, want.target_logit, 0, 0)) << "rank " << r;
    be.add_inplace(sum_exp, se);
    be.add_inplace(target_logit, tl);
  }
  // Step 3 (every rank computes the same) and the backward per rank.
  Tensor losses = nan_f32({N}), lse = nan_f32({N});
  be.cross_entropy_slice_losses(losses, lse, row_max, sum_exp, target_logit, targets);
  const ref::CeSliceLosses want3 =
      ref::cross_entropy_slice_losses(to_f64(row_max), to_f64(sum_exp), to_f64(target_logit), targets);
  EXPECT_TRUE(all_close(losses, want3.losses, 1e-6 * (1 + std::fabs(offset)), 1e-6));
  EXPECT_TRUE(all_close(lse, want3.lse, 1e-6 * (1 + std::fabs(offset)), 1e-6));

  Tensor full_losses = nan_f32({N});
  be.cross_entropy_forward(full_losses, logits, targets);
  EXPECT_TRUE(all_close(losses, to_f64(full_losses), 1e-6 + 1e-7 * std::fabs(offset), 1e-6))
      << "combined slices vs cross_entropy_forward on the full logits";
  EXPECT_TRUE(all_close(losses, ref::cross_entropy_forward(to_f64(logits), targets, N, Vt),
                        1e-6 + 1e-7 * std::fabs(offset), 1e-6));

  Tensor full_d = nan_f32({N, Vt});
  be.cross_entropy_backward(full_d, logits, targets, scale);
  Tensor stacked = nan_f32({N, Vt});
  for (int r = 0; r < R; ++r) {
    const int64_t b = split_begin(Vt, R, r), e = split_begin(Vt, R, r + 1), V = e - b;
    Tensor d = nan_f32({N, V});
    be.cross_entropy_slice_backward(d, parts[size_t(r)], lse, targets, b, scale);
    EXPECT_TRUE(all_close(d,
                          ref::cross_entropy_slice_backward(to_f64(parts[size_t(r)]), to_f64(lse), targets, N, V, b,
                                                            double(scale)),
                          1e-7, 1e-5))
        << "rank " << r;
    Tensor window = stacked.narrow(1, b, e);
    be.copy(window, d);

    // The legacy arithmetic, fed the same combined values, bit for bit.
    const Legacy leg = legacy_rank(host(parts[size_t(r)]), N, V, b, targets, scale);
    Tensor mx = nan_f32({N}), se = nan_f32({N}), tl = nan_f32({N});
    be.cross_entropy_slice_max(mx, parts[size_t(r)]);
    be.cross_entropy_slice_sums(se, tl, parts[size_t(r)], mx, targets, b);
    EXPECT_TRUE(same_bits(host(mx), leg.mx)) << "rank " << r;
    EXPECT_TRUE(same_bits(host(se), leg.sum)) << "rank " << r;
    EXPECT_TRUE(same_bits(host(tl), leg.tgt)) << "rank " << r;
    Tensor l1 = nan_f32({N}), lse1 = nan_f32({N});
    be.cross_entropy_slice_losses(l1, lse1, mx, se, tl, targets);
    EXPECT_TRUE(same_bits(host(lse1), leg.lse)) << "rank " << r;
    EXPECT_TRUE(same_bits(host(l1), leg.losses)) << "rank " << r;
    Tensor d1 = nan_f32({N, V});
    be.cross_entropy_slice_backward(d1, parts[size_t(r)], lse1, targets, b, scale);
    EXPECT_TRUE(same_bits(host(d1), leg.d)) << "rank " << r;
  }
  EXPECT_TRUE(all_close(stacked, to_f64(full_d), 1e-7, 1e-5))
      << "stacked slice gradients vs cross_entropy_backward on the full logits";
  EXPECT_TRUE(all_close(stacked, ref::cross_entropy_backward(to_f64(logits), targets, N, Vt, double(scale)), 1e-7,
                        1e-5));
}

TEST(CpuVocabSlice, CrossEntropyMatchesReferenceAndFullVocabulary) {
  uint64_t seed = 600;
  for (int R : {1, 2, 3, 4})
    for (int64_t N : {1, 5, 7}) check_ce_slice(N, 13, R, 0.0, seed++);
  check_ce_slice(63, 4099, 2, 0.0, seed++);  // OpenMP path
  check_ce_slice(63, 4099, 4, 0.0, seed++);
}

TEST(CpuVocabSlice, CrossEntropyLargeLogitsStayFinite) {
  check_ce_slice(7, 1000, 3, 80.0, 650);
  check_ce_slice(7, 1000, 2, -80.0, 651);
}

TEST(CpuVocabSlice, CrossEntropyBadArgumentsThrow) {
  CpuBackend be;
  Tensor logits = Tensor::zeros({3, 7}), mx = Tensor::zeros({3}), se = Tensor::zeros({3}), tl = Tensor::zeros({3});
  Tensor losses = Tensor::zeros({3}), lse = Tensor::zeros({3}), d = Tensor::zeros({3, 7});
  const std::vector<int32_t> ok = {0, 1, 2}, short_targets = {0, 1};
  Tensor mx_bad = Tensor::zeros({4});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_max(mx_bad, logits); }, ErrorCode::shape_mismatch,
                           "cross_entropy_slice_max: row_max: expected shape [3], got [4]"));
  Tensor logits_bf16 = Tensor::zeros({3, 7}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_max(mx, logits_bf16); }, ErrorCode::shape_mismatch,
                           "logits: expected dtype f32"));
  Tensor logits1 = Tensor::zeros({21});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_max(mx, logits1); }, ErrorCode::shape_mismatch,
                           "logits: expected a 2-D tensor"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_sums(se, tl, logits, mx, short_targets, 0); },
                           ErrorCode::shape_mismatch, "targets has 2 entries"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_sums(se, tl, logits, mx_bad, ok, 0); },
                           ErrorCode::shape_mismatch, "row_max: expected shape [3]"));
  Tensor tl_bad = Tensor::zeros({3, 1});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_sums(se, tl_bad, logits, mx, ok, 0); },
                           ErrorCode::shape_mismatch, "target_logit: expected shape [3]"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_sums(se, tl, logits, mx, ok, -1); },
                           ErrorCode::invalid_argument, "vocab_begin is -1"));
  Tensor se_bad = Tensor::zeros({2});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_losses(losses, lse, mx, se_bad, tl, ok); },
                           ErrorCode::shape_mismatch, "sum_exp: expected shape [3]"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_losses(losses, lse, mx, se, tl, short_targets); },
                           ErrorCode::shape_mismatch, "targets has 2 entries"));
  Tensor lse_bad = Tensor::zeros({3}, DType::bf16);
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_losses(losses, lse_bad, mx, se, tl, ok); },
                           ErrorCode::shape_mismatch, "lse: expected dtype f32"));
  Tensor d_bad = Tensor::zeros({3, 8});
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_backward(d_bad, logits, lse, ok, 0, 1.0f); },
                           ErrorCode::shape_mismatch, "dlogits: expected shape [3, 7], got [3, 8]"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_backward(d, logits, mx_bad, ok, 0, 1.0f); },
                           ErrorCode::shape_mismatch, "lse: expected shape [3]"));
  EXPECT_TRUE(throws_error([&] { be.cross_entropy_slice_backward(d, logits, lse, short_targets, 0, 1.0f); },
                           ErrorCode::shape_mismatch, "targets has 2 entries"));
}

TEST(CpuVocabSlice, CrossEntropyTargetsOutsideTheSliceContributeNoTargetLogit) {
  CpuBackend be;
  Tensor logits = make_f32({1, 2, 3, 4, 5, 6}, {2, 3});  // columns 100..102
  Tensor mx = nan_f32({2}), se = nan_f32({2}), tl = nan_f32({2}), d = nan_f32({2, 3});
  const std::vector<int32_t> targets = {101, 7};
  be.cross_entropy_slice_max(mx, logits);
  EXPECT_TRUE(all_close(mx, Vec{3, 6}, 0, 0));
  be.cross_entropy_slice_sums(se, tl, logits, mx, targets, 100);
  EXPECT_TRUE(all_close(tl, Vec{2, 0}, 0, 0));
  Tensor lse = make_f32({10, 10}, {2});
  be.cross_entropy_slice_backward(d, logits, lse, targets, 100, 1.0f);
  const std::vector<float> g = d.to_vector();
  EXPECT_FLOAT_EQ(g[1], std::exp(2.0f - 10.0f) - 1.0f) << "the target column gets the -1";
  EXPECT_FLOAT_EQ(g[4], std::exp(5.0f - 10.0f)) << "no -1 for a target on another rank";
}

}  // namespace
}  // namespace latte::test
