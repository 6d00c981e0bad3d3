// Bit-for-bit reproducibility: the same inputs give the same bits with 1 and 2 OpenMP threads and
// on a repeated run. OpenBLAS is asked for 1 and 2 threads alongside; the backend must keep it
// single-threaded (its own threading changes bits, see linear.cpp), so its setting must not
// matter. Sizes are above the OpenMP thresholds so that the 2-thread runs really split the work;
// the linear shapes include K = 999 and 130, which OpenBLAS's threaded driver chunks differently.
#include <cblas.h>
#include <omp.h>

#include <functional>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {


// Runs `run` (which returns its outputs) with 1 thread, 2 threads and 2 threads again.
void expect_thread_independent(const std::function<std::vector<Tensor>()>& run) {
  ThreadCount restore;
  ThreadCount::set(1, 1);
  const std::vector<Tensor> one = run();
  ThreadCount::set(2, 2);
  const std::vector<Tensor> two = run();
  const std::vector<Tensor> again = run();
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(bit_equal(one[i], two[i])) << "output " << i << ": 1 vs 2 threads";
    EXPECT_TRUE(bit_equal(two[i], again[i])) << "output " << i << ": repeated run";
  }
}

TEST(Determinism, AttentionForwardBackward) {
  CpuBackend be;
  Rng rng(1100);
  const int64_t B = 2, T = 24, S = 56, Hq = 9, Hkv = 3, D = 64;
  const float scale = 0.125f;
  Tensor q = random_f32(rng, {B, T, Hq, D}), k = random_f32(rng, {B, S, Hkv, D}), v = random_f32(rng, {B, S, Hkv, D});
  Tensor dout = random_f32(rng, {B, T, Hq, D});
  expect_thread_independent([&] {
    Tensor out = nan_f32({B, T, Hq, D}), lse = nan_f32({B, Hq, T});
    be.attention_forward(out, &lse, q, k, v, scale);
    Tensor dq = nan_f32(q.shape()), dk = nan_f32(k.shape()), dv = nan_f32(v.shape());
    be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, scale);
    return std::vector<Tensor>{out, lse, dq, dk, dv};
  });
}

TEST(Determinism, AttentionDecode) {
  CpuBackend be;
  Rng rng(1101);
  const int64_t S = 512, Hq = 9, Hkv = 3, D = 64;
  Tensor q = random_f32(rng, {1, 1, Hq, D}), k = random_f32(rng, {1, S, Hkv, D}), v = random_f32(rng, {1, S, Hkv, D});
  expect_thread_independent([&] {
    Tensor out = nan_f32({1, 1, Hq, D});
    be.attention_forward(out, nullptr, q, k, v, 0.125f);
    return std::vector<Tensor>{out};
  });
}

void linear_determinism(int64_t M, int64_t K, int64_t N, DType w_dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << M << " K=" << K << " N=" << N << " w " << dtype_name(w_dtype));
  CpuBackend be;
  Rng rng(seed);
  Tensor x = random_f32(rng, {M, K}), w = random_f32(rng, {N, K}).to(w_dtype), dy = random_f32(rng, {M, N});
  expect_thread_independent([&] {
    Tensor y = nan_f32({M, N}), dx = Tensor::zeros({M, K}), dw = Tensor::zeros({N, K});
    be.linear_forward(y, x, w, false);
    be.linear_backward(&dx, &dw, dy, x, w);
    return std::vector<Tensor>{y, dx, dw};
  });
}

TEST(Determinism, LinearF32) {
  linear_determinism(1, 576, 1536, DType::f32, 1200);   // decode: sgemv
  linear_determinism(64, 576, 1536, DType::f32, 1201);  // prefill / training: sgemm
  linear_determinism(3, 576, 1536, DType::f32, 1202);   // small batch of decodes: skinny
  linear_determinism(32, 576, 1536, DType::f32, 1204);  // the largest skinny batch
  linear_determinism(17, 130, 999, DType::f32, 1203);   // odd sizes everywhere
}

TEST(Determinism, LinearBf16) {
  linear_determinism(1, 576, 1536, DType::bf16, 1210);
  linear_determinism(64, 576, 1536, DType::bf16, 1211);
  linear_determinism(3, 576, 1536, DType::bf16, 1212);
  linear_determinism(17, 130, 2999, DType::bf16, 1213);  // 3 widening blocks of 1008 rows, odd tail
}

TEST(Determinism, ReductionsOutsideBlas) {
  // The other kernels whose backward reduces across rows (dw of rmsnorm, the embedding scatter).
  CpuBackend be;
  Rng rng(1300);
  const int64_t T = 256, D = 576, V = 97;
  Tensor x = random_f32(rng, {T, D}), w = random_f32(rng, {D}), dy = random_f32(rng, {T, D});
  const std::vector<int32_t> tokens = rng.ints(T, 0, int32_t(V - 1));
  Tensor logits = random_f32(rng, {T, V});
  expect_thread_independent([&] {
    Tensor y = nan_f32({T, D}), rstd = nan_f32({T});
    be.rmsnorm_forward(y, &rstd, x, w, 1e-5f);
    Tensor dx = Tensor::zeros({T, D}), dw = Tensor::zeros({D});
    be.rmsnorm_backward(dx, dw, dy, x, w, rstd);
    Tensor dtable = Tensor::zeros({V, D});
    be.embedding_backward(dtable, tokens, dy);
    Tensor losses = nan_f32({T}), dlogits = nan_f32({T, V});
    be.cross_entropy_forward(losses, logits, tokens);
    be.cross_entropy_backward(dlogits, logits, tokens, 1.0f / float(T));
    return std::vector<Tensor>{y, rstd, dx, dw, dtable, losses, dlogits};
  });
}

TEST(Determinism, VocabSliceAndMemoryOps) {
  // The vocabulary-parallel ops (row reductions, the column-block scatter) and the strided
  // copy / fill, all above the OpenMP thresholds.
  CpuBackend be;
  Rng rng(1400);
  const int64_t T = 256, D = 576, V = 97, b = 40;
  const std::vector<int32_t> tokens = rng.ints(T, 0, int32_t(b + V + 30));  // some below, some past the slice
  std::vector<int32_t> targets = tokens;
  targets[3] = -1;
  Tensor table = random_f32(rng, {V, D}), dy = random_f32(rng, {T, D}), logits = random_f32(rng, {T, V});
  Tensor big = random_f32(rng, {64, 40, 48});
  expect_thread_independent([&] {
    Tensor out = nan_f32({T, D});
    be.embedding_slice_forward(out, tokens, table, b);
    Tensor dtable = Tensor::zeros({V, D});
    be.embedding_slice_backward(dtable, tokens, dy, b);
    Tensor mx = nan_f32({T}), se = nan_f32({T}), tl = nan_f32({T}), losses = nan_f32({T}), lse = nan_f32({T});
    be.cross_entropy_slice_max(mx, logits);
    be.cross_entropy_slice_sums(se, tl, logits, mx, targets, b);
    be.cross_entropy_slice_losses(losses, lse, mx, se, tl, targets);
    Tensor dlogits = nan_f32({T, V});
    be.cross_entropy_slice_backward(dlogits, logits, lse, targets, b, 1.0f / float(T));
    Tensor copied = nan_f32({64, 40, 48});
    Tensor window = copied.narrow(1, 3, 37);
    be.copy(window, big.narrow(1, 0, 34));
    Tensor cols = copied.narrow(2, 5, 9);
    be.fill(cols, 2.0f);
    return std::vector<Tensor>{out, dtable, mx, se, tl, losses, lse, dlogits, copied};
  });
}

}  // namespace
}  // namespace latte::test
