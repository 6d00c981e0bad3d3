// CpuBackend::attention_forward / attention_backward against reference::attention_* (float64;
// the reference backward recomputes everything from q, k, v, while the CPU backward uses the CPU
// forward's out and lse, so both halves of the save/recompute contract are tested).
// q, k, v are unit normals and scale = 1/sqrt(Dk), so scores are O(1), out is a convex mix of
// v rows and the gradients are O(1); f32 dots over Dk <= 64 terms and sums over <= 40 keys
// (x3 query heads for dk, dv) give errors up to ~6e-7. Tolerance: atol 3e-6 + rtol 3e-6, about 5x
// that, and far below the O(0.1) error of a wrong mask, head mapping or prefix offset.
#include <cmath>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 3e-6, kRtol = 3e-6;

struct AttnCase {
  int64_t B, T, S, Hq, Hkv, Dk, Dv;
};

// Odd sizes, T < S (cached prefix) and T == S, Dk != Dv, GQA ratios 1, 2, 3, 63 heads.
const AttnCase kCases[] = {
    {1, 1, 1, 1, 1, 4, 4},    {1, 3, 3, 3, 1, 8, 8},    {2, 3, 7, 6, 3, 16, 8},    {1, 7, 7, 63, 63, 8, 5},
    {2, 5, 12, 6, 2, 32, 24}, {1, 1, 33, 9, 3, 64, 64}, {2, 16, 40, 6, 2, 64, 64},  // large enough for the OpenMP path
};

// t as a view [B, S, H, D] of a larger cache [B, S + extra, H, D] whose unused slots hold NaN:
// the kernel must honour strides()[0] and never read past S.
Tensor in_nan_cache(const Tensor& t, int64_t extra) {
  Shape s = t.shape();
  s[1] += extra;
  Tensor cache = nan_f32(s);
  Tensor view = cache.narrow(1, 0, t.dim(1));
  view.copy_from(t);
  return view;
}

ref::AttentionShape ref_shape(const AttnCase& c) {
  return {.B = c.B, .T = c.T, .S = c.S, .Hq = c.Hq, .Hkv = c.Hkv, .Dk = c.Dk, .Dv = c.Dv};
}

void check_attention(const AttnCase& c, bool strided_kv, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " S=" << c.S << " Hq=" << c.Hq << " Hkv=" << c.Hkv
                                  << " Dk=" << c.Dk << " Dv=" << c.Dv << (strided_kv ? " strided k/v" : ""));
  CpuBackend be;
  Rng rng(seed);
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Tensor q = random_f32(rng, {c.B, c.T, c.Hq, c.Dk});
  Tensor k = random_f32(rng, {c.B, c.S, c.Hkv, c.Dk});
  Tensor v = random_f32(rng, {c.B, c.S, c.Hkv, c.Dv});
  if (strided_kv) {
    k = in_nan_cache(k, 5);
    v = in_nan_cache(v, 3);
  }
  const Vec qr = to_f64(q), kr = to_f64(k), vr = to_f64(v);
  const ref::AttentionOut want = ref::attention_forward(qr, kr, vr, ref_shape(c), double(scale));

  Tensor out = nan_f32({c.B, c.T, c.Hq, c.Dv}), lse = nan_f32({c.B, c.Hq, c.T});
  be.attention_forward(out, &lse, q, k, v, scale);
  EXPECT_TRUE(all_close(out, want.out, kAtol, kRtol)) << "out";
  EXPECT_TRUE(all_close(lse, want.lse, kAtol, kRtol)) << "lse";

  Tensor out2 = nan_f32({c.B, c.T, c.Hq, c.Dv});
  be.attention_forward(out2, nullptr, q, k, v, scale);
  EXPECT_TRUE(bit_equal(out, out2)) << "lse = nullptr must not change out";

  Tensor dout = random_f32(rng, {c.B, c.T, c.Hq, c.Dv});
  Tensor dq = nan_f32({c.B, c.T, c.Hq, c.Dk});
  Tensor dk = strided_kv ? in_nan_cache(nan_f32(k.shape()), 2) : nan_f32(k.shape());
  Tensor dv = strided_kv ? in_nan_cache(nan_f32(v.shape()), 4) : nan_f32(v.shape());
  be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, scale);
  const ref::AttentionGrads g = ref::attention_backward(to_f64(dout), qr, kr, vr, ref_shape(c), double(scale));
  EXPECT_TRUE(all_close(dq, g.dq, kAtol, kRtol)) << "dq";
  EXPECT_TRUE(all_close(dk, g.dk, kAtol, kRtol)) << "dk";
  EXPECT_TRUE(all_close(dv, g.dv, kAtol, kRtol)) << "dv";
}

TEST(CpuAttention, MatchesReference) {
  uint64_t seed = 700;
  for (const AttnCase& c : kCases) check_attention(c, /*strided_kv=*/false, seed++);
}

TEST(CpuAttention, StridedKvCacheViewsMatchReference) {
  uint64_t seed = 750;
  for (const AttnCase& c : kCases) check_attention(c, /*strided_kv=*/true, seed++);
}

// Prefill and training shapes take the blocked (GEMM) form: T >= 8 queries, in blocks of 64 per
// KV head. These cross block edges (T = 64, 65, 130), keep a cached prefix (S > T), and mix GQA
// ratios, so a wrong block offset, causal limit or head mapping shows up as an O(0.1) error.
const AttnCase kBlockedCases[] = {
    {1, 8, 8, 2, 2, 8, 8}, {2, 9, 20, 6, 2, 16, 8}, {1, 64, 64, 3, 1, 32, 32},
    {1, 65, 70, 4, 2, 16, 16}, {2, 130, 130, 9, 3, 64, 64},
};

TEST(CpuAttention, BlockedFormMatchesReference) {
  uint64_t seed = 760;
  for (const AttnCase& c : kBlockedCases) {
    check_attention(c, /*strided_kv=*/false, seed++);
    check_attention(c, /*strided_kv=*/true, seed++);
  }
}

TEST(CpuAttention, LargeScoresStayFinite) {
  // Scores in the hundreds: exp without the max subtraction would overflow f32.
  CpuBackend be;
  Rng rng(780);
  const AttnCase c{1, 4, 6, 2, 1, 8, 8};
  Tensor q = random_f32(rng, {c.B, c.T, c.Hq, c.Dk}, 10.0);
  Tensor k = random_f32(rng, {c.B, c.S, c.Hkv, c.Dk}, 10.0);
  Tensor v = random_f32(rng, {c.B, c.S, c.Hkv, c.Dv});
  const float scale = 1.0f;
  Tensor out = nan_f32({c.B, c.T, c.Hq, c.Dv}), lse = nan_f32({c.B, c.Hq, c.T});
  be.attention_forward(out, &lse, q, k, v, scale);
  const ref::AttentionOut want = ref::attention_forward(to_f64(q), to_f64(k), to_f64(v), ref_shape(c), 1.0);
  // A score's f32 error scales with its terms, not its value: 8 terms |q_i k_i| ~ 100 give up to
  // 8 * 100 * 2^-24 = 5e-5 (1.2e-5 seen), and out moves by at most that times |v|.
  EXPECT_TRUE(all_close(out, want.out, 1e-4, 0.0));
  EXPECT_TRUE(all_close(lse, want.lse, 1e-4, 0.0));
}

TEST(CpuAttention, NoQueriesZeroesKeyGradients) {
  // T = 0: no query sees any key, so dk and dv ("=") must come back all zero, not untouched.
  CpuBackend be;
  Rng rng(790);
  Tensor q = Tensor::zeros({1, 0, 2, 4}), dout = Tensor::zeros({1, 0, 2, 3});
  Tensor out = Tensor::zeros({1, 0, 2, 3}), lse = Tensor::zeros({1, 2, 0}), dq = Tensor::zeros({1, 0, 2, 4});
  Tensor k = random_f32(rng, {1, 5, 1, 4}), v = random_f32(rng, {1, 5, 1, 3});
  be.attention_forward(out, &lse, q, k, v, 0.5f);
  Tensor dk = nan_f32({1, 5, 1, 4}), dv = nan_f32({1, 5, 1, 3});
  be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, 0.5f);
  EXPECT_TRUE(all_close(dk, Vec(20, 0.0), 0, 0));
  EXPECT_TRUE(all_close(dv, Vec(15, 0.0), 0, 0));
}

TEST(CpuAttention, BadShapesThrow) {
  CpuBackend be;
  Tensor q = Tensor::zeros({1, 2, 4, 8}), k = Tensor::zeros({1, 3, 2, 8}), v = Tensor::zeros({1, 3, 2, 6});
  Tensor out = Tensor::zeros({1, 2, 4, 6});
  be.attention_forward(out, nullptr, q, k, v, 1.0f);  // the valid baseline

  Tensor k3 = Tensor::zeros({1, 3, 3, 8}), v3 = Tensor::zeros({1, 3, 3, 6});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, nullptr, q, k3, v3, 1.0f); }, ErrorCode::shape_mismatch,
                           "Hq = 4 query heads is not a multiple of Hkv = 3"));
  Tensor q_long = Tensor::zeros({1, 4, 4, 8}), out_long = Tensor::zeros({1, 4, 4, 6});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out_long, nullptr, q_long, k, v, 1.0f); },
                           ErrorCode::shape_mismatch, "T = 4 queries but k has only S = 3"));
  Tensor k_dk = Tensor::zeros({1, 3, 2, 7});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, nullptr, q, k_dk, v, 1.0f); }, ErrorCode::shape_mismatch,
                           "k: expected shape [1, 3, 2, 8], got [1, 3, 2, 7]"));
  Tensor v_s = Tensor::zeros({1, 4, 2, 6});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, nullptr, q, k, v_s, 1.0f); }, ErrorCode::shape_mismatch,
                           "v: expected shape [1, 3, 2, 6]"));
  Tensor out_bad = Tensor::zeros({1, 2, 4, 8});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out_bad, nullptr, q, k, v, 1.0f); }, ErrorCode::shape_mismatch,
                           "out: expected shape [1, 2, 4, 6]"));
  Tensor lse_bad = Tensor::zeros({1, 2, 4});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, &lse_bad, q, k, v, 1.0f); }, ErrorCode::shape_mismatch,
                           "lse: expected shape [1, 4, 2]"));
  Tensor k_heads = Tensor::zeros({1, 3, 4, 8}).narrow(2, 0, 2);  // inner dims not contiguous
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, nullptr, q, k_heads, v, 1.0f); },
                           ErrorCode::invalid_argument, "k: its inner [S, H, D] must be contiguous"));
  Tensor q3 = Tensor::zeros({2, 4, 8});
  EXPECT_TRUE(throws_error([&] { be.attention_forward(out, nullptr, q3, k, v, 1.0f); }, ErrorCode::shape_mismatch,
                           "q: expected a 4-D tensor"));

  Tensor lse = Tensor::zeros({1, 4, 2}), dq = Tensor::zeros({1, 2, 4, 8}), dk = Tensor::zeros({1, 3, 2, 8});
  Tensor dv_bad = Tensor::zeros({1, 3, 2, 8});
  EXPECT_TRUE(throws_error([&] { be.attention_backward(dq, dk, dv_bad, out, q, k, v, out, lse, 1.0f); },
                           ErrorCode::shape_mismatch, "dv: expected shape [1, 3, 2, 6]"));
  Tensor lse_wrong = Tensor::zeros({1, 2, 4});
  Tensor dv = Tensor::zeros({1, 3, 2, 6});
  EXPECT_TRUE(throws_error([&] { be.attention_backward(dq, dk, dv, out, q, k, v, out, lse_wrong, 1.0f); },
                           ErrorCode::shape_mismatch, "lse"));
}

}  // namespace
}  // namespace latte::test
