// The float64 reference backward of every op against central finite differences of the
// reference forward. The loss is L = <forward(inputs), r> for a random r, so the analytic
// gradient is backward(dy = r). Tolerance: grad_close's 1e-6 relative to max(1, |g|), h = 1e-5
// (the derivation is in backend_test_util.h). add has no backward in the interface and is not
// checked here.
#include <cmath>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;

TEST(ReferenceGradcheck, Linear) {
  Rng rng(101);
  const int64_t M = 3, K = 5, N = 4;
  const Vec x = rng.normal_f64(M * K), w = rng.normal_f64(N * K), r = rng.normal_f64(M * N);
  const ref::LinearGrads g = ref::linear_backward(r, x, w, M, K, N);
  EXPECT_TRUE(
      grad_close(numeric_grad([&](const Vec& xx) { return inner(ref::linear_forward(xx, w, M, K, N), r); }, x), g.dx));
  EXPECT_TRUE(
      grad_close(numeric_grad([&](const Vec& ww) { return inner(ref::linear_forward(x, ww, M, K, N), r); }, w), g.dw));
}

TEST(ReferenceGradcheck, Embedding) {
  Rng rng(102);
  const int64_t V = 6, D = 3;
  const ref::Ids tokens = {4, 0, 4, 5, 2, 4};  // repeats must add up
  const Vec table = rng.normal_f64(V * D), r = rng.normal_f64(int64_t(tokens.size()) * D);
  const Vec dtable = ref::embedding_backward(tokens, r, V, D);
  EXPECT_TRUE(grad_close(
      numeric_grad([&](const Vec& t) { return inner(ref::embedding_forward(tokens, t, V, D), r); }, table), dtable));
}

TEST(ReferenceGradcheck, Rmsnorm) {
  Rng rng(103);
  const int64_t T = 3, D = 7;
  const double eps = 1e-5;
  const Vec x = rng.normal_f64(T * D), w = rng.normal_f64(D), r = rng.normal_f64(T * D);
  const ref::RmsnormGrads g = ref::rmsnorm_backward(r, x, w, T, D, eps);
  EXPECT_TRUE(grad_close(
      numeric_grad([&](const Vec& xx) { return inner(ref::rmsnorm_forward(xx, w, T, D, eps).y, r); }, x), g.dx));
  EXPECT_TRUE(grad_close(
      numeric_grad([&](const Vec& ww) { return inner(ref::rmsnorm_forward(x, ww, T, D, eps).y, r); }, w), g.dw));
}

TEST(ReferenceGradcheck, RopeBothLayouts) {
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::rotate_half}) {
    SCOPED_TRACE(rope_layout_name(layout));
    Rng rng(104);
    const ref::RopeShape s{.T = 3, .H = 2, .head_dim = 8, .layout = layout, .theta = 10000.0};
    const ref::Ids pos = {0, 5, 1234};
    const Vec x = rng.normal_f64(s.T * s.H * s.head_dim), r = rng.normal_f64(s.T * s.H * s.head_dim);
    const Vec dx = ref::rope_backward(r, pos, s);
    EXPECT_TRUE(
        grad_close(numeric_grad([&](const Vec& xx) { return inner(ref::rope_forward(xx, pos, s), r); }, x), dx));
  }
}

TEST(ReferenceGradcheck, AttentionGqaPrefixDkNeDv) {
  // B=2, T=3 queries after a cached prefix of 2 (S=5), Hq=4 over Hkv=2 (ratio 2), Dk=3, Dv=2.
  const ref::AttentionShape s{.B = 2, .T = 3, .S = 5, .Hq = 4, .Hkv = 2, .Dk = 3, .Dv = 2};
  Rng rng(105);
  const double scale = 1.0 / std::sqrt(3.0);
  const Vec q = rng.normal_f64(s.B * s.T * s.Hq * s.Dk), k = rng.normal_f64(s.B * s.S * s.Hkv * s.Dk),
            v = rng.normal_f64(s.B * s.S * s.Hkv * s.Dv), r = rng.normal_f64(s.B * s.T * s.Hq * s.Dv);
  const ref::AttentionGrads g = ref::attention_backward(r, q, k, v, s, scale);
  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return inner(ref::attention_forward(qq, kk, vv, s, scale).out, r);
  };
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(a, k, v); }, q), g.dq));
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(q, a, v); }, k), g.dk));
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(q, k, a); }, v), g.dv));
}

TEST(ReferenceGradcheck, AttentionGqaRatio3) {
  const ref::AttentionShape s{.B = 1, .T = 2, .S = 4, .Hq = 3, .Hkv = 1, .Dk = 2, .Dv = 3};
  Rng rng(106);
  const double scale = 0.7;
  const Vec q = rng.normal_f64(s.B * s.T * s.Hq * s.Dk), k = rng.normal_f64(s.B * s.S * s.Hkv * s.Dk),
            v = rng.normal_f64(s.B * s.S * s.Hkv * s.Dv), r = rng.normal_f64(s.B * s.T * s.Hq * s.Dv);
  const ref::AttentionGrads g = ref::attention_backward(r, q, k, v, s, scale);
  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return inner(ref::attention_forward(qq, kk, vv, s, scale).out, r);
  };
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(a, k, v); }, q), g.dq));
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(q, a, v); }, k), g.dk));
  EXPECT_TRUE(grad_close(numeric_grad([&](const Vec& a) { return loss(q, k, a); }, v), g.dv));
}

TEST(ReferenceGradcheck, Swiglu) {
  Rng rng(107);
  const Vec gate = rng.normal_f64(12, 3.0), up = rng.normal_f64(12), r = rng.normal_f64(12);
  const ref::SwigluGrads g = ref::swiglu_backward(r, gate, up);
  EXPECT_TRUE(
      grad_close(numeric_grad([&](const Vec& a) { return inner(ref::swiglu_forward(a, up), r); }, gate), g.dgate));
  EXPECT_TRUE(
      grad_close(numeric_grad([&](const Vec& a) { return inner(ref::swiglu_forward(gate, a), r); }, up), g.dup));
}

TEST(ReferenceGradcheck, CrossEntropyWithIgnoredRow) {
  Rng rng(108);
  const int64_t T = 4, V = 5;
  const ref::Ids targets = {2, -1, 0, 4};
  const double scale = 0.25;
  const Vec logits = rng.normal_f64(T * V, 2.0);
  // The backward is d(scale * sum_t loss_t)/dlogits, so the loss weights are all `scale`.
  const Vec r(size_t(T), scale);
  const Vec d = ref::cross_entropy_backward(logits, targets, T, V, scale);
  EXPECT_TRUE(grad_close(
      numeric_grad([&](const Vec& a) { return inner(ref::cross_entropy_forward(a, targets, T, V), r); }, logits), d));
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(d[size_t(1 * V + i)], 0.0) << "ignored row must have zero gradient";
}

}  // namespace
}  // namespace latte::test
