// CpuBackend::embedding_forward / embedding_backward against reference::embedding_*.
// The forward is a copy (bf16 widening is exact), so it must match exactly: tolerance 0. The
// backward adds at most a handful of O(1) f32 values per element (repeated tokens), each add
// rounding by <= 2^-24 relative: atol 2e-6 + rtol 2e-6.
#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;

void check_embedding(int64_t V, int64_t D, int64_t T, DType table_dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "V=" << V << " D=" << D << " T=" << T << " " << dtype_name(table_dtype));
  CpuBackend be;
  Rng rng(seed);
  Tensor table = random_f32(rng, {V, D}).to(table_dtype);
  const std::vector<int32_t> tokens = rng.ints(T, 0, int32_t(V - 1));  // T > V forces repeats

  Tensor out = nan_f32({T, D});
  be.embedding_forward(out, tokens, table);
  EXPECT_TRUE(all_close(out, ref::embedding_forward(tokens, to_f64(table), V, D), 0, 0));

  Tensor dout = random_f32(rng, {T, D});
  Tensor dtable = random_f32(rng, {V, D});
  const Vec dtable0 = to_f64(dtable);
  be.embedding_backward(dtable, tokens, dout);
  EXPECT_TRUE(all_close(dtable, add_vec(dtable0, ref::embedding_backward(tokens, to_f64(dout), V, D)), 2e-6, 2e-6));
}

TEST(CpuEmbedding, MatchesReference) {
  check_embedding(1, 1, 1, DType::f32, 400);
  check_embedding(7, 3, 9, DType::f32, 401);
  check_embedding(63, 130, 200, DType::f32, 402);  // column blocks of 64 plus a tail of 2
  check_embedding(500, 576, 64, DType::f32, 403);  // large enough for the OpenMP path
}

TEST(CpuEmbedding, Bf16TableMatchesReferenceOnRoundedValues) {
  check_embedding(7, 3, 9, DType::bf16, 410);
  check_embedding(500, 576, 64, DType::bf16, 411);
}

TEST(CpuEmbedding, EmptyTokenList) {
  CpuBackend be;
  Tensor table = Tensor::zeros({4, 3});
  Tensor out = Tensor::empty({0, 3});
  be.embedding_forward(out, {}, table);
  be.embedding_backward(table, {}, out);
  EXPECT_TRUE(all_close(table, Vec(12, 0.0), 0, 0));
}

TEST(CpuEmbedding, BadTokenIdsThrowAndLeaveOutputUntouched) {
  CpuBackend be;
  Tensor table = Tensor::zeros({5, 2});
  Tensor out = nan_f32({3, 2});
  const std::vector<int32_t> too_big = {0, 5, 1}, negative = {0, 1, -1};
  EXPECT_TRUE(throws_error([&] { be.embedding_forward(out, too_big, table); }, ErrorCode::invalid_argument,
                           "token id 5 at position 1"));
  EXPECT_TRUE(throws_error([&] { be.embedding_forward(out, negative, table); }, ErrorCode::invalid_argument,
                           "token id -1 at position 2"));
  Tensor dout = Tensor::zeros({3, 2});
  Tensor dtable = Tensor::zeros({5, 2});
  EXPECT_TRUE(
      throws_error([&] { be.embedding_backward(dtable, too_big, dout); }, ErrorCode::invalid_argument, "token id 5"));
  EXPECT_TRUE(all_close(dtable, Vec(10, 0.0), 0, 0)) << "nothing may be scattered before the check";
}

TEST(CpuEmbedding, BadShapesThrow) {
  CpuBackend be;
  Tensor table = Tensor::zeros({5, 2});
  const std::vector<int32_t> tokens = {0, 1, 2};
  Tensor out_bad = Tensor::zeros({3, 3});
  EXPECT_TRUE(throws_error([&] { be.embedding_forward(out_bad, tokens, table); }, ErrorCode::shape_mismatch,
                           "out: expected shape [3, 2], got [3, 3]"));
  Tensor out_short = Tensor::zeros({2, 2});
  EXPECT_TRUE(throws_error([&] { be.embedding_forward(out_short, tokens, table); }, ErrorCode::shape_mismatch, "out"));
  Tensor dtable_bf16 = Tensor::zeros({5, 2}, DType::bf16);
  Tensor dout = Tensor::zeros({3, 2});
  EXPECT_TRUE(throws_error([&] { be.embedding_backward(dtable_bf16, tokens, dout); }, ErrorCode::shape_mismatch,
                           "dtable: expected dtype f32"));
  Tensor table1 = Tensor::zeros({10});
  Tensor out = Tensor::zeros({3, 2});
  EXPECT_TRUE(throws_error([&] { be.embedding_forward(out, tokens, table1); }, ErrorCode::shape_mismatch, "2-D"));
}

}  // namespace
}  // namespace latte::test
