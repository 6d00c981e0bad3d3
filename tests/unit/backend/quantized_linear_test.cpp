// Block-quantized weights (q8_0, q4_0, q4_1): the dtype codecs, Tensor on block dtypes, and
// quantized_linear_* (core/backend/cpu/quantized_linear.h) against reference::linear_* (float64)
// on the dequantized weights.
//
// Tolerances. M <= kQuantizedSmallM takes the integer path: x is rounded to int8 blocks, each
// element by at most d_x / 2 = amax_b(x) / 254, so
//   |y[m,n] - y_ref[m,n]| <= sum_b amax_b(x_m) / 254 * sum_{j in b} |w[n,j]|  =: E[m,n]
// plus f32 rounding of the block sums (<< 1e-5 of sum_j |w x|). The test allows 1.001 E + 1e-5
// sum|w||x| + 1e-6, per element. E is ~0.3% of sum|w||x|, far below the O(1) error of a wrong
// nibble order, scale or index. M > kQuantizedSmallM is dequantize + f32 sgemm: f32 rounding only
// (1e-5 sum|w||x| + 1e-6).
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>

#include "core/backend/cpu/quantized_linear.h"
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
const DType kBlockTypes[] = {DType::q8_0, DType::q4_0, DType::q4_1};

// ---- dtype ----

TEST(BlockDType, NamesSizesAndErrors) {
  EXPECT_STREQ(dtype_name(DType::q8_0), "q8_0");
  EXPECT_STREQ(dtype_name(DType::q4_0), "q4_0");
  EXPECT_STREQ(dtype_name(DType::q4_1), "q4_1");
  EXPECT_EQ(dtype_from_name("q4_1"), DType::q4_1);
  EXPECT_EQ(dtype_bytes(DType::q8_0, 64), 68u);
  EXPECT_EQ(dtype_bytes(DType::q4_0, 64), 36u);
  EXPECT_EQ(dtype_bytes(DType::q4_1, 64), 40u);
  EXPECT_EQ(dtype_bytes(DType::bf16, 64), 128u);
  EXPECT_TRUE(is_block_dtype(DType::q4_0));
  EXPECT_FALSE(is_block_dtype(DType::bf16));
  EXPECT_TRUE(throws_error([] { (void)dtype_size(DType::q4_1); }, ErrorCode::unsupported, "q4_1"));
}

// Nibble order and formulas on hand-made blocks (ggml: low nibbles are elements 0..15).
TEST(BlockDType, DequantizeHandMadeBlocks) {
  uint8_t q41[20], q40[18], q80[34];
  const uint16_t two = f32_to_f16(2.0f), half = f32_to_f16(0.5f);
  std::memcpy(q41, &two, 2);
  std::memcpy(q41 + 2, &half, 2);
  std::memcpy(q40, &two, 2);
  std::memcpy(q80, &two, 2);
  for (int j = 0; j < 16; ++j) q41[4 + j] = q40[2 + j] = uint8_t(j | ((15 - j) << 4));
  for (int j = 0; j < 32; ++j) q80[2 + j] = uint8_t(int8_t(j - 16));
  float out[32];
  dequantize_blocks(DType::q4_1, q41, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * float(j) + 0.5f);
    EXPECT_EQ(out[16 + j], 2.0f * float(15 - j) + 0.5f);
  }
  dequantize_blocks(DType::q4_0, q40, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * float(j - 8));
    EXPECT_EQ(out[16 + j], 2.0f * float(7 - j));
  }
  dequantize_blocks(DType::q8_0, q80, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 2.0f * float(j - 16));
}

// The reference quantizer's round trip: every element within half a step (plus the f16 rounding
// of the scale, 2^-11 relative, times the largest code). q4_0 maps the extreme value to code -8;
// values of the other sign beyond 7.5 steps clip at +7, up to one whole step away (ggml's too).
TEST(BlockDType, QuantizeRoundTrip) {
  Rng rng(7);
  const std::vector<float> x = rng.normal(32 * 40);
  for (DType t : kBlockTypes) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<uint8_t> q(dtype_bytes(t, int64_t(x.size())));
    std::vector<float> back(x.size());
    quantize_blocks(t, x.data(), q.data(), int64_t(x.size()));
    dequantize_blocks(t, q.data(), back.data(), int64_t(x.size()));
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float mn = x[b * 32], mx = mn, amax = 0;
      for (int j = 0; j < 32; ++j) {
        mn = std::min(mn, x[b * 32 + j]);
        mx = std::max(mx, x[b * 32 + j]);
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
      }
      const double step = t == DType::q8_0 ? amax / 127.0 : t == DType::q4_0 ? amax / 8.0 : (mx - mn) / 15.0;
      const double codes = t == DType::q8_0 ? 127 : t == DType::q4_0 ? 8 : 15;
      const double tol = (t == DType::q4_0 ? 1.0 : 0.5) * step + codes * step * std::ldexp(1.0, -11) + std::fabs(mn) * std::ldexp(1.0, -11) + 1e-7;
      for (int j = 0; j < 32; ++j) EXPECT_NEAR(back[b * 32 + j], x[b * 32 + j], tol) << "block " << b << " j " << j;
    }
  }
}

// ---- Tensor on block dtypes ----

TEST(BlockTensor, ShapeBytesSliceAndConversions) {
  Rng rng(11);
  const Tensor w32 = random_f32(rng, {5, 64});
  for (DType t : kBlockTypes) {
    SCOPED_TRACE(dtype_name(t));
    const Tensor w = w32.to(t);
    EXPECT_EQ(w.dtype(), t);
    EXPECT_EQ(w.shape(), (Shape{5, 64}));
    EXPECT_EQ(w.nbytes(), dtype_bytes(t, 5 * 64));
    EXPECT_TRUE(w.is_contiguous());

    // to(f32) / to_vector are the codec's dequantization.
    std::vector<float> deq(5 * 64);
    dequantize_blocks(t, w.raw(), deq.data(), 5 * 64);
    EXPECT_EQ(w.to_vector(), deq);
    EXPECT_EQ(w.to(DType::f32).to_vector(), deq);

    // Row slices are views starting on the right block.
    const Tensor s = w.slice(2, 4);
    EXPECT_EQ(s.shape(), (Shape{2, 64}));
    EXPECT_EQ(s.nbytes(), dtype_bytes(t, 2 * 64));
    EXPECT_EQ(static_cast<const char*>(s.raw()), static_cast<const char*>(w.raw()) + dtype_bytes(t, 2 * 64));
    EXPECT_EQ(s.to_vector(), std::vector<float>(deq.begin() + 128, deq.begin() + 256));
    const Tensor r = w.select(4);
    EXPECT_EQ(r.shape(), (Shape{64}));
    EXPECT_EQ(r.to_vector(), std::vector<float>(deq.begin() + 256, deq.end()));
    EXPECT_EQ(w.narrow(0, 1, 3).to_vector(), std::vector<float>(deq.begin() + 64, deq.begin() + 192));

    // clone copies the blocks exactly; re-quantizing the dequantized values reproduces them too.
    const Tensor c = s.clone();
    ASSERT_EQ(c.nbytes(), s.nbytes());
    EXPECT_EQ(std::memcmp(c.raw(), s.raw(), s.nbytes()), 0);
    const Tensor rq = s.to(DType::f32).to(t);
    EXPECT_EQ(rq.to_vector(), s.to_vector());

    // copy_from a block tensor into a strided f32 view dequantizes.
    Tensor big = Tensor::zeros({2, 96});
    Tensor view = big.narrow(1, 16, 80);
    view.copy_from(s);
    EXPECT_EQ(view.to_vector(), s.to_vector());

    // Reshapes that keep whole blocks are fine; others throw naming the dtype.
    EXPECT_EQ(w.reshape({10, 32}).to_vector(), deq);
    EXPECT_TRUE(throws_error([&] { (void)w.reshape({20, 16}); }, ErrorCode::invalid_argument, dtype_name(t)));
    EXPECT_TRUE(throws_error([&] { (void)w.narrow(1, 16, 48); }, ErrorCode::unsupported, dtype_name(t)));
    // A block-aligned column narrow (a tensor-parallel shard) is a strided view; clone copies its
    // blocks exactly, to_vector dequantizes it.
    const Tensor cols = w.narrow(1, 32, 64);
    EXPECT_FALSE(cols.is_contiguous());
    std::vector<float> want_cols;
    for (int64_t r = 0; r < 5; ++r) want_cols.insert(want_cols.end(), deq.begin() + r * 64 + 32, deq.begin() + r * 64 + 64);
    EXPECT_EQ(cols.to_vector(), want_cols);
    const Tensor cols_c = cols.clone();
    EXPECT_TRUE(cols_c.is_contiguous());
    EXPECT_EQ(cols_c.dtype(), t);
    EXPECT_EQ(cols_c.to_vector(), want_cols);
    EXPECT_EQ(std::memcmp(static_cast<const char*>(cols_c.raw()) + dtype_bytes(t, 32),
                          static_cast<const char*>(w.raw()) + dtype_bytes(t, 64 + 32), dtype_bytes(t, 32)), 0);
    Tensor wc = w.clone();
    Tensor wc_cols = wc.narrow(1, 0, 32);
    EXPECT_TRUE(throws_error([&] { wc_cols.copy_from(Tensor::zeros({5, 32})); }, ErrorCode::unsupported, dtype_name(t)));
    EXPECT_TRUE(throws_error([&] { (void)w.f32(); }, ErrorCode::shape_mismatch, dtype_name(t)));
    EXPECT_TRUE(throws_error([&] { (void)w.u16(); }, ErrorCode::shape_mismatch, dtype_name(t)));
    Tensor wm = w.clone();
    EXPECT_TRUE(throws_error([&] { wm.fill(1.0f); }, ErrorCode::unsupported, dtype_name(t)));
    EXPECT_TRUE(throws_error([&] { (void)Tensor::empty({3, 40}, t); }, ErrorCode::invalid_argument, dtype_name(t)));
    EXPECT_TRUE(throws_error([&] { (void)r.slice(16, 48); }, ErrorCode::invalid_argument, dtype_name(t)));
    EXPECT_EQ(r.slice(32, 64).to_vector(), std::vector<float>(deq.begin() + 288, deq.end()));
    // zeros are zero in every block format.
    EXPECT_EQ(Tensor::zeros({1, 32}, t).to_vector(), std::vector<float>(32, 0.0f));
  }
}

// ---- quantized_linear ----

struct Case {
  int64_t M, K, N;
};
const Case kCases[] = {{1, 32, 7},   {1, 576, 129}, {3, 64, 37},   {3, 576, 129}, {16, 576, 65},
                       {16, 32, 3},  {100, 64, 37}, {100, 576, 129}, {17, 32, 5}};

// The error bound of the header, per element of y[M, N].
std::vector<double> int8_bound(const std::vector<float>& x, const Vec& w, const Case& c) {
  std::vector<double> e(size_t(c.M * c.N));
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double s = 0, abs_sum = 0;
      for (int64_t b = 0; b < c.K / 32; ++b) {
        double amax = 0, wabs = 0;
        for (int j = 0; j < 32; ++j) {
          const int64_t k = b * 32 + j;
          amax = std::max(amax, std::fabs(double(x[size_t(m * c.K + k)])));
          wabs += std::fabs(w[size_t(n * c.K + k)]);
          abs_sum += std::fabs(w[size_t(n * c.K + k)] * x[size_t(m * c.K + k)]);
        }
        s += amax / 254.0 * wabs;
      }
      e[size_t(m * c.N + n)] = (c.M <= kQuantizedSmallM ? 1.001 * s : 0.0) + 1e-5 * abs_sum + 1e-6;
    }
  return e;
}

::testing::AssertionResult within(const Tensor& y, const Vec& want, const std::vector<double>& tol) {
  const std::vector<float> got = y.to_vector();
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= tol[i]))
      return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << ", want " << want[i]
                                           << ", error " << err << " > bound " << tol[i];
  }
  return ::testing::AssertionSuccess();
}

void check_forward(DType t, const Case& c, bool scalar, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << dtype_name(t) << " M=" << c.M << " K=" << c.K << " N=" << c.N
                                  << (scalar ? " scalar" : ""));
  const bool prev = quantized_linear_force_scalar(scalar);
  CpuBackend be;
  Rng rng(seed);
  const Tensor x = random_f32(rng, {c.M, c.K});
  const Tensor w = random_f32(rng, {c.N, c.K}, 0.05).to(t);
  const Vec xr = to_f64(x), wr = to_f64(w);  // the reference sees the dequantized weights
  const Vec y_ref = ref::linear_forward(xr, wr, c.M, c.K, c.N);
  const std::vector<double> tol = int8_bound(x.to_vector(), wr, c);

  Tensor y = nan_f32({c.M, c.N});
  be.linear_forward(y, x, w, /*accumulate=*/false);  // through CpuBackend's dispatch
  EXPECT_TRUE(within(y, y_ref, tol)) << "forward";
  Tensor y2 = nan_f32({c.M, c.N});
  quantized_linear_forward(y2, x, w, false);
  EXPECT_TRUE(bit_equal(y, y2)) << "dispatch vs direct";

  Tensor y_acc = random_f32(rng, {c.M, c.N});
  const Vec y0 = to_f64(y_acc);
  quantized_linear_forward(y_acc, x, w, /*accumulate=*/true);
  std::vector<double> tol_acc = tol;
  for (size_t i = 0; i < tol_acc.size(); ++i) tol_acc[i] += 1e-6 * std::fabs(y0[i]);
  EXPECT_TRUE(within(y_acc, add_vec(y0, y_ref), tol_acc)) << "forward accumulate";

  // dx += dy . w (dequantized tiles, f32 sgemm); dw is refused.
  const Tensor dy = random_f32(rng, {c.M, c.N});
  Tensor dx = random_f32(rng, {c.M, c.K});
  const Vec dx0 = to_f64(dx);
  be.linear_backward(&dx, nullptr, dy, x, w);
  const ref::LinearGrads g = ref::linear_backward(to_f64(dy), xr, wr, c.M, c.K, c.N);
  EXPECT_TRUE(all_close(dx, add_vec(dx0, g.dx), 1e-4, 1e-5)) << "backward dx";
  Tensor dw = Tensor::zeros({c.N, c.K});
  EXPECT_TRUE(throws_error([&] { be.linear_backward(&dx, &dw, dy, x, w); }, ErrorCode::unsupported, dtype_name(t)));
  quantized_linear_force_scalar(prev);
}

TEST(QuantizedLinear, MatchesReferenceOnDequantizedWeights) {
  uint64_t seed = 100;
  for (DType t : kBlockTypes)
    for (const Case& c : kCases) check_forward(t, c, /*scalar=*/false, seed++);
}

TEST(QuantizedLinear, ScalarKernelMatchesReference) {
  uint64_t seed = 200;
  for (DType t : kBlockTypes)
    for (const Case& c : kCases)
      if (c.M <= kQuantizedSmallM) check_forward(t, c, /*scalar=*/true, seed++);
}

// The bound is not vacuous: the int8 path does differ from the exact product (by less than the
// bound), and one wrong weight (element 16 of row 0, where x is large) lands far outside it.
TEST(QuantizedLinear, BoundIsTightEnoughToCatchAWrongWeight) {
  const Case c{1, 576, 64};
  Rng rng(5);
  std::vector<float> xv = rng.normal(c.K);
  xv[16] = 50.0f;
  const Tensor x = make_f32(xv, {c.M, c.K});
  Tensor w = random_f32(rng, {c.N, c.K}, 0.05).to(DType::q4_1);
  const Vec y_ref = ref::linear_forward(to_f64(x), to_f64(w), c.M, c.K, c.N);
  const std::vector<double> tol = int8_bound(xv, to_f64(w), c);
  Tensor y = Tensor::empty({c.M, c.N});
  quantized_linear_forward(y, x, w, false);
  const std::vector<float> yv = y.to_vector();
  double max_err = 0;
  for (int64_t n = 0; n < c.N; ++n) max_err = std::max(max_err, std::fabs(yv[size_t(n)] - y_ref[size_t(n)]));
  EXPECT_GT(max_err, 0.0);
  EXPECT_TRUE(within(y, y_ref, tol));
  // Move element 16's nibble (the high nibble of qs[0]) by at least 8 steps.
  auto* qs0 = static_cast<uint8_t*>(w.raw()) + 4;
  *qs0 = uint8_t((*qs0 & 0x0f) | ((*qs0 >> 4) >= 8 ? 0x00 : 0xf0));
  Tensor y_bad = Tensor::empty({c.M, c.N});
  quantized_linear_forward(y_bad, x, w, false);
  EXPECT_GT(std::fabs(double(y_bad.to_vector()[0]) - y_ref[0]), 3 * tol[0]);
}

TEST(QuantizedLinear, BitIdenticalAcrossThreadCounts) {
  const int omp0 = omp_get_max_threads(), blas0 = openblas_get_num_threads();
  for (DType t : kBlockTypes)
    for (const Case& c : {Case{1, 576, 1537}, Case{3, 576, 999}, Case{100, 576, 600}}) {
      SCOPED_TRACE(testing::Message() << dtype_name(t) << " M=" << c.M);
      Rng rng(31);
      const Tensor x = random_f32(rng, {c.M, c.K});
      const Tensor w = random_f32(rng, {c.N, c.K}, 0.05).to(t);
      const Tensor dy = random_f32(rng, {c.M, c.N});
      auto run = [&] {
        Tensor y = Tensor::empty({c.M, c.N}), dx = Tensor::zeros({c.M, c.K});
        quantized_linear_forward(y, x, w, false);
        quantized_linear_backward(&dx, nullptr, dy, x, w);
        return std::vector<Tensor>{y, dx};
      };
      omp_set_num_threads(1);
      openblas_set_num_threads(1);
      const auto one = run();
      omp_set_num_threads(2);
      openblas_set_num_threads(2);
      const auto two = run();
      for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(bit_equal(one[i], two[i])) << "output " << i;
    }
  omp_set_num_threads(omp0);
  openblas_set_num_threads(blas0);
}

TEST(QuantizedLinear, BadArgumentsNameTheProblem) {
  CpuBackend be;
  const Tensor x = Tensor::zeros({2, 64});
  const Tensor w = Tensor::zeros({3, 64}, DType::q4_1);
  Tensor y = Tensor::zeros({2, 3});
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y, Tensor::zeros({2, 32}), w, false); }, ErrorCode::shape_mismatch,
                           "linear_forward: w"));
  Tensor y_bad = Tensor::zeros({2, 4});
  EXPECT_TRUE(throws_error([&] { be.linear_forward(y_bad, x, w, false); }, ErrorCode::shape_mismatch,
                           "linear_forward: y"));
}

// Tied embeddings: a q8_0 token table feeds embedding_forward (row dequantization) as well as
// the lm_head.
TEST(QuantizedEmbedding, Q8TableRowsAreDequantized) {
  CpuBackend be;
  Rng rng(3);
  const Tensor table = random_f32(rng, {50, 64}).to(DType::q8_0);
  const std::vector<float> all = table.to_vector();
  const std::vector<int32_t> tokens = {3, 0, 49, 3};
  Tensor out = nan_f32({4, 64});
  be.embedding_forward(out, tokens, table);
  const std::vector<float> o = out.to_vector();
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(o[t * 64 + size_t(d)], all[size_t(tokens[t]) * 64 + size_t(d)]);
  Tensor out2 = nan_f32({4, 64});
  be.embedding_slice_forward(out2, tokens, table.slice(0, 32), 0);  // ids >= 32 give zero rows
  const std::vector<float> o2 = out2.to_vector();
  EXPECT_EQ(o2[64], all[0]);
  EXPECT_EQ(o2[2 * 64], 0.0f);
}

// Not a check: prints the int8 path's speed against the f32 and bf16 paths on SmolLM2-135M's
// decode shapes (run with --gtest_also_run_disabled_tests).
TEST(QuantizedLinear, DISABLED_DecodeSpeed) {
  CpuBackend be;
  Rng rng(1);
  for (const Case& c : {Case{1, 576, 1536}, Case{1, 1536, 576}, Case{1, 576, 49152}, Case{4, 576, 1536},
                        Case{8, 576, 1536}, Case{16, 576, 1536}, Case{17, 576, 1536}}) {
    const Tensor x = random_f32(rng, {c.M, c.K});
    const Tensor w32 = random_f32(rng, {c.N, c.K}, 0.05);
    for (DType t : {DType::f32, DType::bf16, DType::q8_0, DType::q4_1}) {
      const Tensor w = w32.to(t);
      Tensor y = Tensor::empty({c.M, c.N});
      be.linear_forward(y, x, w, false);
      const int reps = 50;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) be.linear_forward(y, x, w, false);
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
      std::printf("M=%lld K=%lld N=%lld %s: %.1f us\n", (long long)c.M, (long long)c.K, (long long)c.N, dtype_name(t), us);
    }
  }
}

}  // namespace
}  // namespace latte::test
