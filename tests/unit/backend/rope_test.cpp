// CpuBackend::rope_forward / rope_backward against reference::rope_*, both pair layouts.
// cos and sin are computed in double and rounded to f32, then one 2x2 rotation in f32: the
// error is a few ulps of O(1) values. Tolerance: atol 1e-6 + rtol 1e-6 (positions up to 10^5).
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 1e-6, kRtol = 1e-6;

void check_rope(int64_t T, int64_t H, int64_t hd, RopeLayout layout, float theta, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << T << " H=" << H << " hd=" << hd << " " << rope_layout_name(layout)
                                  << " theta=" << theta);
  CpuBackend be;
  Rng rng(seed);
  std::vector<int32_t> pos = rng.ints(T, 0, 100000);
  pos[0] = 0;  // position 0 must be the identity
  const RopeParams p{.layout = layout, .theta = theta, .head_dim = hd};
  const ref::RopeShape rs{.T = T, .H = H, .head_dim = hd, .layout = layout, .theta = double(theta)};

  Tensor x = random_f32(rng, {T, H, hd});
  const Vec xr = to_f64(x);
  be.rope_forward(x, pos, p);
  EXPECT_TRUE(all_close(x, ref::rope_forward(xr, pos, rs), kAtol, kRtol)) << "forward";

  Tensor g = random_f32(rng, {T, H, hd});
  const Vec gr = to_f64(g);
  be.rope_backward(g, pos, p);
  EXPECT_TRUE(all_close(g, ref::rope_backward(gr, pos, rs), kAtol, kRtol)) << "backward";
}

TEST(CpuRope, MatchesReferenceBothLayouts) {
  uint64_t seed = 600;
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half})
    for (int64_t T : {1, 3, 7})
      for (int64_t H : {1, 3, 63})
        for (int64_t hd : {2, 8, 64}) check_rope(T, H, hd, layout, 10000.0f, seed++);
  check_rope(100, 9, 64, RopeLayout::rotate_half, 500000.0f, seed++);  // Llama-3 theta, OpenMP path
  check_rope(100, 9, 64, RopeLayout::interleaved, 10000.0f, seed++);
}

// Partial RoPE (MHA2MLA): a per-head table of frequency indices, -1 for unrotated pairs, and a
// frequency base (freq_dim) wider than the rotated vector (the compact RoPE keys of MLA).
TEST(CpuRope, PartialTableMatchesReference) {
  CpuBackend be;
  Rng rng(777);
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half})
    for (int64_t fdim : {int64_t(0), int64_t(64)}) {
      const int64_t T = 5, H = 3, hd = 8, half = hd / 2;
      std::vector<int32_t> pos = rng.ints(T, 0, 5000);
      std::vector<int32_t> freqs(size_t(H * half));
      const int64_t fhalf = (fdim > 0 ? fdim : hd) / 2;
      for (size_t i = 0; i < freqs.size(); ++i) freqs[i] = (i % 3 == 2) ? -1 : int32_t((i * 7) % size_t(fhalf));
      const RopeParams p{.layout = layout, .theta = 10000.0f, .head_dim = hd, .pair_freqs = freqs, .freq_dim = fdim};
      const ref::RopeShape rs{.T = T, .H = H, .head_dim = hd, .layout = layout, .theta = 10000.0, .pair_freqs = freqs,
                              .freq_dim = fdim};
      Tensor x = random_f32(rng, {T, H, hd});
      const Vec xr = to_f64(x);
      be.rope_forward(x, pos, p);
      EXPECT_TRUE(all_close(x, ref::rope_forward(xr, pos, rs), kAtol, kRtol)) << "forward";
      // Unrotated pairs are left bit-identical.
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < half; ++j)
            if (freqs[size_t(h * half + j)] < 0) {
              int64_t a = layout == RopeLayout::interleaved ? 2 * j : j;
              EXPECT_EQ(x.f32()[(t * H + h) * hd + a], float(xr[size_t((t * H + h) * hd + a)]));
            }
      Tensor g = random_f32(rng, {T, H, hd});
      const Vec gr = to_f64(g);
      be.rope_backward(g, pos, p);
      EXPECT_TRUE(all_close(g, ref::rope_backward(gr, pos, rs), kAtol, kRtol)) << "backward";
    }
  // The table must cover every head's pairs, and indices must lie inside the frequency range.
  std::vector<int32_t> short_table(3, 0), out_of_range(12, 9);
  std::vector<int32_t> pos(2, 1);
  Tensor x = Tensor::zeros({2, 3, 8});
  EXPECT_THROW(be.rope_forward(x, pos, RopeParams{.head_dim = 8, .pair_freqs = short_table}), Error);
  EXPECT_THROW(be.rope_forward(x, pos, RopeParams{.head_dim = 8, .pair_freqs = out_of_range}), Error);
}

TEST(CpuRope, LayoutsDifferAndAreRelatedByThePairPermutation) {
  // interleaved row 2j + c  <->  rotate_half row c * hd/2 + j (mha2mla-spec.md section 1.3).
  CpuBackend be;
  Rng rng(650);
  const int64_t T = 3, H = 2, hd = 8, half = hd / 2;
  const std::vector<int32_t> pos = {1, 17, 4000};
  const RopeParams inter{.layout = RopeLayout::interleaved, .theta = 10000.0f, .head_dim = hd};
  const RopeParams rot{.layout = RopeLayout::rotate_half, .theta = 10000.0f, .head_dim = hd};
  Tensor xi = random_f32(rng, {T, H, hd});
  Tensor xh = Tensor::empty({T, H, hd});
  auto permute = [&](const Tensor& from_inter, Tensor& to_half) {
    for (int64_t th = 0; th < T * H; ++th)
      for (int64_t j = 0; j < half; ++j)
        for (int64_t c = 0; c < 2; ++c) to_half.f32()[th * hd + c * half + j] = from_inter.f32()[th * hd + 2 * j + c];
  };
  permute(xi, xh);
  Tensor same = xi.clone();
  be.rope_forward(same, pos, rot);  // the wrong layout for xi
  be.rope_forward(xi, pos, inter);
  be.rope_forward(xh, pos, rot);
  EXPECT_FALSE(all_close(same, to_f64(xi), 1e-3, 1e-3)) << "the two layouts must pair different coordinates";
  Tensor xi_permuted = Tensor::empty({T, H, hd});
  permute(xi, xi_permuted);
  EXPECT_TRUE(all_close(xh, to_f64(xi_permuted), 1e-6, 1e-6));
}

TEST(CpuRope, DecodeOneTokenAtATimeEqualsPrefillBitForBit) {
  CpuBackend be;
  Rng rng(660);
  const int64_t T = 37, H = 9, hd = 64;
  const RopeParams p{.layout = RopeLayout::rotate_half, .theta = 10000.0f, .head_dim = hd};
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(5000 + t);
  Tensor x = random_f32(rng, {T, H, hd});
  Tensor prefill = x.clone();
  be.rope_forward(prefill, pos, p);
  for (int64_t t = 0; t < T; ++t) {
    Tensor row = x.slice(t, t + 1);
    be.rope_forward(row, std::span<const int32_t>(&pos[size_t(t)], 1), p);
  }
  EXPECT_TRUE(bit_equal(prefill, x));
}

TEST(CpuRope, BackwardUndoesForward) {
  CpuBackend be;
  Rng rng(670);
  const RopeParams p{.layout = RopeLayout::interleaved, .theta = 10000.0f, .head_dim = 16};
  const std::vector<int32_t> pos = {0, 3, 999};
  Tensor x = random_f32(rng, {3, 4, 16});
  const Vec x0 = to_f64(x);
  be.rope_forward(x, pos, p);
  be.rope_backward(x, pos, p);
  EXPECT_TRUE(all_close(x, x0, 1e-6, 1e-6));
}

TEST(CpuRope, BadArgumentsThrow) {
  CpuBackend be;
  Tensor x = Tensor::zeros({2, 3, 8});
  const std::vector<int32_t> pos = {0, 1}, short_pos = {0}, neg = {0, -4};
  EXPECT_TRUE(throws_error([&] { be.rope_forward(x, short_pos, {.head_dim = 8}); }, ErrorCode::shape_mismatch,
                           "positions has 1 entries"));
  EXPECT_TRUE(throws_error([&] { be.rope_forward(x, pos, {.head_dim = 6}); }, ErrorCode::shape_mismatch,
                           "x: expected shape [2, 3, 6], got [2, 3, 8]"));
  EXPECT_TRUE(throws_error([&] { be.rope_forward(x, pos, {.head_dim = 7}); }, ErrorCode::invalid_argument, "even"));
  EXPECT_TRUE(throws_error([&] { be.rope_backward(x, neg, {.head_dim = 8}); }, ErrorCode::invalid_argument,
                           "position -4 at index 1"));
  Tensor x2 = Tensor::zeros({2, 24});
  EXPECT_TRUE(throws_error([&] { be.rope_forward(x2, pos, {.head_dim = 8}); }, ErrorCode::shape_mismatch, "3-D"));
}

}  // namespace
}  // namespace latte::test
