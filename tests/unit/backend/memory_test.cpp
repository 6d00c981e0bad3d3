// CpuBackend::empty / fill / copy / to_host / to_device and the Backend helpers built on them
// (zeros, clone, contiguous), against reference::gather_strided / scatter_strided / fill_strided.
// These ops move values without arithmetic, so every comparison is exact (tolerance 0), and the
// 16-bit copies are also checked bit for bit (a NaN payload must survive: copy may not widen).
//
// The views are the ones the model makes: narrow (a strided window in any dim), slice (rows of
// dim 0), select (dim 0 removed), on either side of the copy, including a [N, 1] column whose
// innermost stride is not 1 and a 0-d element.
#include <cstring>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;

// The reference's description of `view`, a view into the contiguous tensor `base`.
ref::StridedView strided_view(const Tensor& base, const Tensor& view) {
  const ptrdiff_t bytes = static_cast<const char*>(view.raw()) - static_cast<const char*>(base.raw());
  return ref::StridedView{view.shape(), view.strides(), int64_t(bytes) / int64_t(dtype_size(view.dtype()))};
}

// The 16-bit words a 16-bit tensor holds, row-major over the view.
std::vector<uint16_t> bits16(const Tensor& t) {
  Tensor c = t.clone();  // Tensor::copy_from, independent of the backend
  return std::vector<uint16_t>(c.u16(), c.u16() + c.numel());
}

// A random base of `dtype` (values rounded to it, so the doubles are exact).
Tensor random_base(Rng& rng, const Shape& shape, DType dtype) { return random_f32(rng, shape).to(dtype); }

using ViewFn = std::function<Tensor(const Tensor&)>;

// dst_view(dst_base) = src_view(src_base) through CpuBackend::copy; the whole dst storage must
// equal the reference scatter of the src view's elements (everything outside the view untouched).
void check_copy(const Shape& dst_shape, const ViewFn& dst_view, const Shape& src_shape, const ViewFn& src_view,
                DType dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "dst " << shape_str(dst_shape) << " src " << shape_str(src_shape) << " "
                                  << dtype_name(dtype) << " seed " << seed);
  CpuBackend be;
  Rng rng(seed);
  Tensor dst = random_base(rng, dst_shape, dtype), src = random_base(rng, src_shape, dtype);
  const Vec dst0 = to_f64(dst), src0 = to_f64(src);
  Tensor dv = dst_view(dst);
  const Tensor sv = src_view(src);
  const Vec want = ref::scatter_strided(dst0, strided_view(dst, dv), ref::gather_strided(src0, strided_view(src, sv)));
  be.copy(dv, sv);
  EXPECT_TRUE(all_close(dst, want, 0, 0));
  EXPECT_TRUE(all_close(src, src0, 0, 0)) << "the source must not change";
  if (dtype != DType::f32) {
    const std::vector<uint16_t> got = bits16(dv), exp = bits16(sv);
    EXPECT_TRUE(got == exp) << "16-bit copy is not bit-exact";
  }
}

Tensor whole(const Tensor& t) { return t; }

TEST(CpuMemory, CopyContiguous) {
  check_copy({3, 5}, whole, {3, 5}, whole, DType::f32, 100);
  check_copy({7}, whole, {7}, whole, DType::bf16, 101);
  check_copy({2, 3, 4}, whole, {2, 3, 4}, whole, DType::f16, 102);
}

TEST(CpuMemory, CopyIntoNarrowedView) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    // dst is strided in dim 1 (a window of heads), src contiguous: how cache rows are written.
    check_copy({4, 6, 8}, [](const Tensor& t) { return t.narrow(1, 2, 5); }, {4, 3, 8}, whole, dt, 110);
    // a window of the last dim: short runs of stride 1
    check_copy({5, 9}, [](const Tensor& t) { return t.narrow(1, 3, 7); }, {5, 4}, whole, dt, 111);
  }
}

TEST(CpuMemory, CopyFromNarrowedView) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    check_copy({4, 3, 8}, whole, {4, 6, 8}, [](const Tensor& t) { return t.narrow(1, 1, 4); }, dt, 120);
    check_copy({5, 4}, whole, {5, 9}, [](const Tensor& t) { return t.narrow(1, 0, 4); }, dt, 121);
  }
}

TEST(CpuMemory, CopyBetweenStridedViews) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    // both sides narrowed, different windows and different base shapes
    check_copy({4, 6, 8}, [](const Tensor& t) { return t.narrow(2, 1, 6); }, {4, 7, 5},
               [](const Tensor& t) { return t.narrow(1, 1, 7).narrow(0, 0, 4).narrow(1, 0, 6); }, dt, 130);
    // slice of dim 0 on one side, narrow on the other
    check_copy({6, 5}, [](const Tensor& t) { return t.slice(2, 5); }, {3, 8},
               [](const Tensor& t) { return t.narrow(1, 2, 7); }, dt, 131);
    // select then narrow: [6, 5] windows of two 3-D tensors
    check_copy({3, 6, 8}, [](const Tensor& t) { return t.select(1).narrow(1, 2, 7); }, {5, 6, 9},
               [](const Tensor& t) { return t.select(3).narrow(1, 0, 5); }, dt, 132);
    // [N, 1] columns: the innermost stride after dropping the size-1 dim is the row length
    check_copy({5, 3}, [](const Tensor& t) { return t.narrow(1, 1, 2); }, {5, 4},
               [](const Tensor& t) { return t.narrow(1, 3, 4); }, dt, 133);
    // a 0-d element
    check_copy({2, 3}, [](const Tensor& t) { return t.select(1).select(2); }, {4},
               [](const Tensor& t) { return t.select(3); }, dt, 134);
  }
}

TEST(CpuMemory, CopyLargeStridedUsesThreadsAndStaysExact) {
  // 64 * 34 * 48 = 104448 elements: above the OpenMP threshold.
  const ViewFn win = [](const Tensor& t) { return t.narrow(1, 3, 37); };
  check_copy({64, 40, 48}, win, {64, 40, 48}, win, DType::f32, 140);
  check_copy({64, 40, 48}, win, {64, 34, 48}, whole, DType::bf16, 141);
  check_copy({200, 300}, [](const Tensor& t) { return t.narrow(1, 7, 8); }, {200, 1}, whole, DType::f32, 142);
}

TEST(CpuMemory, CopyKeepsSixteenBitNaNPayloads) {
  CpuBackend be;
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor src = Tensor::zeros({2, 4}, dt), dst = Tensor::zeros({2, 8}, dt);
    src.u16()[1] = 0x7FC1;  // NaN with a payload in both formats
    src.u16()[6] = 0xFFFF;
    Tensor dv = dst.narrow(1, 2, 6);
    be.copy(dv, src);
    EXPECT_EQ(dst.u16()[3], 0x7FC1) << dtype_name(dt);
    EXPECT_EQ(dst.u16()[8 + 2 + 2], 0xFFFF) << dtype_name(dt);
  }
}

TEST(CpuMemory, EmptyTensorsAreNoOps) {
  CpuBackend be;
  Tensor a = Tensor::empty({0, 4}), b = Tensor::empty({0, 4});
  be.copy(a, b);
  be.fill(a, 1.0f);
  Tensor base = Tensor::zeros({3, 4});
  Tensor none = base.narrow(1, 2, 2);
  be.fill(none, 5.0f);
  EXPECT_TRUE(all_close(base, Vec(12, 0.0), 0, 0));
}

void check_fill(const Shape& shape, const ViewFn& view, float value, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << shape_str(shape) << " seed " << seed);
  CpuBackend be;
  Rng rng(seed);
  Tensor base = random_f32(rng, shape);
  const Vec base0 = to_f64(base);
  Tensor v = view(base);
  const Vec want = ref::fill_strided(base0, strided_view(base, v), double(value));
  be.fill(v, value);
  EXPECT_TRUE(all_close(base, want, 0, 0));
}

TEST(CpuMemory, FillStridedViewsLeavesTheRestUntouched) {
  check_fill({5, 7}, whole, -2.5f, 200);
  check_fill({5, 7}, [](const Tensor& t) { return t.narrow(1, 2, 5); }, 3.5f, 201);
  check_fill({5, 7}, [](const Tensor& t) { return t.narrow(1, 6, 7); }, 0.0f, 202);     // a [5, 1] column
  check_fill({3, 4, 6}, [](const Tensor& t) { return t.select(1).narrow(1, 1, 4); }, 1.0f, 203);
  check_fill({3, 4, 6}, [](const Tensor& t) { return t.slice(1, 3).narrow(2, 0, 3); }, 7.0f, 204);
  check_fill({4}, [](const Tensor& t) { return t.select(2); }, 9.0f, 205);  // 0-d
  check_fill({64, 40, 48}, [](const Tensor& t) { return t.narrow(1, 3, 37); }, -1.0f, 206);  // OpenMP path
}

TEST(CpuMemory, EmptyAllocatesOnTheHost) {
  CpuBackend be;
  Tensor t = be.empty({3, 5}, DType::bf16);
  EXPECT_EQ(t.shape(), (Shape{3, 5}));
  EXPECT_EQ(t.dtype(), DType::bf16);
  EXPECT_EQ(t.device().kind, DeviceKind::cpu);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(be.empty({2}).dtype(), DType::f32);
  EXPECT_TRUE(throws_error([&] { be.empty({2, -1}); }, ErrorCode::invalid_argument, "negative dimension"));
}

TEST(CpuMemory, HelpersZerosCloneContiguous) {
  CpuBackend be;
  Backend& b = be;
  Rng rng(300);
  EXPECT_TRUE(all_close(b.zeros({4, 3}), Vec(12, 0.0), 0, 0));
  Tensor base = random_f32(rng, {4, 6});
  const Tensor view = base.narrow(1, 1, 4);
  Tensor c = b.clone(view);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.raw(), view.raw());
  EXPECT_TRUE(all_close(c, ref::gather_strided(to_f64(base), strided_view(base, view)), 0, 0));
  Tensor cc = b.contiguous(view);
  EXPECT_TRUE(cc.is_contiguous());
  EXPECT_TRUE(bit_equal(cc, c));
  EXPECT_EQ(b.contiguous(base).raw(), base.raw()) << "a contiguous tensor is returned as it is";
  Tensor c16 = b.clone(base.to(DType::bf16));
  EXPECT_EQ(c16.dtype(), DType::bf16);
}

TEST(CpuMemory, HostDeviceMovesAreTheIdentity) {
  CpuBackend be;
  Rng rng(310);
  Tensor t = random_f32(rng, {3, 4});
  EXPECT_EQ(be.to_host(t).raw(), t.raw());
  EXPECT_EQ(be.to_device(t).raw(), t.raw());
  EXPECT_EQ(be.to_host(t).shape(), t.shape());
  EXPECT_TRUE(throws_error([&] { be.to_host(Tensor()); }, ErrorCode::invalid_argument, "to_host: t is an undefined"));
  EXPECT_TRUE(
      throws_error([&] { be.to_device(Tensor()); }, ErrorCode::invalid_argument, "to_device: host is an undefined"));
}

TEST(CpuMemory, BadArgumentsThrowNamingThem) {
  CpuBackend be;
  Tensor f = Tensor::zeros({2, 3}), h = Tensor::zeros({2, 3}, DType::bf16), g = Tensor::zeros({3, 2});
  EXPECT_TRUE(throws_error([&] { be.copy(f, h); }, ErrorCode::shape_mismatch,
                           "copy: src: expected dtype f32, got bf16"));
  EXPECT_TRUE(throws_error([&] { be.copy(f, g); }, ErrorCode::shape_mismatch,
                           "copy: src: expected shape [2, 3], got [3, 2]"));
  Tensor u;
  EXPECT_TRUE(throws_error([&] { be.copy(u, f); }, ErrorCode::invalid_argument, "copy: dst is an undefined"));
  EXPECT_TRUE(throws_error([&] { be.fill(h, 1.0f); }, ErrorCode::shape_mismatch, "fill: t: expected dtype f32"));
  EXPECT_TRUE(all_close(f, Vec(6, 0.0), 0, 0));
}

// The reference helpers themselves: a hand-worked view, so a wrong index formula fails here.
TEST(ReferenceMemory, StridedViewIndexing) {
  const Vec storage = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};  // a [3, 4] row-major tensor
  const ref::StridedView v{{3, 2}, {4, 1}, 1};                // narrow(1, 1, 3)
  EXPECT_EQ(ref::gather_strided(storage, v), (Vec{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(ref::scatter_strided(storage, {{2}, {4}, 3}, {-1, -2}), (Vec{0, 1, 2, -1, 4, 5, 6, -2, 8, 9, 10, 11}));
  EXPECT_EQ(ref::fill_strided(storage, {{}, {}, 5}, 0), (Vec{0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 10, 11}));
  EXPECT_TRUE(throws_error([&] { ref::gather_strided(storage, {{3, 2}, {4, 1}, 3}); }, ErrorCode::invalid_argument,
                           "outside"));
}

}  // namespace
}  // namespace latte::test
