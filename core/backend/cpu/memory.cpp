// Memory ops: allocation, fill, strided copy, and the host <-> device moves, which on the CPU are
// the identity:
//   empty:     Tensor::empty on the host (uninitialised)
//   fill:      t[...] = value for every element of an f32 tensor that may be a strided view
//   copy:      dst[...] = src[...] bit for bit, same shape and dtype (f32, 16-bit or i8), either side a
//              strided view (narrow, slice, select); dst and src must not overlap unless they are
//              the same view
//   to_host / to_device: return the argument itself after checking it is a host tensor
// No arithmetic: copy moves bytes (a 16-bit tensor is never widened, so bf16/f16 NaN payloads
// survive), which is why no reference is needed beyond "gather the view's elements in row-major
// order" (reference::gather_strided / scatter_strided / fill_strided).
//
// Layout: both views are first reduced to their shortest equivalent form (size-1 dims dropped,
// adjacent dims merged where both sides are contiguous across them), so a slice or a narrow of a
// row-major tensor becomes a few long rows. The rows (every dim but the last) are then split
// across OpenMP threads, each row a memcpy when both sides have stride 1 in the last dim, an
// element loop otherwise. Every element is written exactly once by one thread with no
// reduction, so the result does not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/cpu/cpu_common.h"

namespace latte {
namespace {

constexpr int kMaxDims = 8;  // tensors have at most 4 dims today

// A small vector on the stack: copies of a few elements run once per decoded token and head
// group, so the walk must not allocate.
struct Dims {
  int64_t v[kMaxDims] = {};
  int n = 0;
  bool empty() const { return n == 0; }
  int64_t& back() { return v[n - 1]; }
  int64_t back() const { return v[n - 1]; }
  void push_back(int64_t x) { v[n++] = x; }
  size_t size() const { return size_t(n); }
  int64_t operator[](size_t i) const { return v[i]; }
};

// A view reduced for iteration: dims outermost first, strides in elements, for up to two tensors
// walked together (copy: dst and src; fill: one).
struct Walk {
  Dims shape;
  Dims stride[2];
};

// Drops size-1 dims and merges dim i into dim i+1 whenever every tensor is contiguous across the
// pair (stride[i] == stride[i+1] * shape[i+1]). A 0-d or all-ones shape becomes [1].
Walk reduce_dims(const Shape& shape, const Shape* const* strides, int n_tensors) {
  LATTE_REQUIRE(shape.size() <= size_t(kMaxDims), ErrorCode::unsupported, "copy/fill of a tensor with ", shape.size(),
                " dims (at most ", kMaxDims, ")");
  Walk w;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !w.shape.empty();
    for (int k = 0; k < n_tensors && merge; ++k)
      merge = w.stride[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      w.shape.back() *= shape[d];
      for (int k = 0; k < n_tensors; ++k) w.stride[k].back() = (*strides[k])[d];
    } else {
      w.shape.push_back(shape[d]);
      for (int k = 0; k < n_tensors; ++k) w.stride[k].push_back((*strides[k])[d]);
    }
  }
  if (w.shape.empty()) {
    w.shape.push_back(1);
    for (int k = 0; k < n_tensors; ++k) w.stride[k].push_back(1);
  }
  return w;
}

// n elements of type E from ps (stride ss) to pd (stride sd), strides in elements.
template <typename E>
void copy_run(char* pd, const char* ps, int64_t n, int64_t sd, int64_t ss) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(pd + i * sd * int64_t(sizeof(E)), ps + i * ss * int64_t(sizeof(E)), sizeof(E));
}

// Element offset of row r (the row-major index over every dim but the last) in tensor k.
int64_t row_offset(const Walk& w, int k, int64_t r) {
  int64_t off = 0;
  for (size_t d = w.shape.size() - 1; d-- > 0;) {
    const int64_t i = r % w.shape[d];
    r /= w.shape[d];
    off += i * w.stride[k][d];
  }
  return off;
}

}  // namespace

Tensor CpuBackend::empty(const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype); }

void CpuBackend::fill(Tensor& t, float value) {
  const char* op = "fill";
  cpu::require_host(t, op, "t");
  cpu::require_dtype(t, DType::f32, op, "t");
  if (t.numel() == 0) return;
  const Shape* strides[1] = {&t.strides()};
  const Walk w = reduce_dims(t.shape(), strides, 1);
  const int64_t inner = w.shape.back(), s_in = w.stride[0].back();
  const int64_t rows = t.numel() / inner;
  float* base = t.f32();
#pragma omp parallel for schedule(static) if (t.numel() >= cpu::kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    float* p = base + row_offset(w, 0, r);
    if (s_in == 1) {
      std::fill(p, p + inner, value);
    } else {
      for (int64_t i = 0; i < inner; ++i) p[i * s_in] = value;
    }
  }
}

void CpuBackend::copy(Tensor& dst, const Tensor& src) {
  const char* op = "copy";
  cpu::require_host(dst, op, "dst");
  cpu::require_host(src, op, "src");
  cpu::require_dtype(src, dst.dtype(), op, "src");
  cpu::require_shape(src, dst.shape(), op, "src");
  if (dst.numel() == 0) return;
  const size_t esize = dtype_size(dst.dtype());  // 4 (f32), 2 (bf16, f16) or 1 (i8)
  char* d = static_cast<char*>(dst.raw());
  const char* s = static_cast<const char*>(src.raw());
  if (dst.is_contiguous() && src.is_contiguous()) {
    if (d != s) std::memmove(d, s, dst.nbytes());
    return;
  }
  const Shape* strides[2] = {&dst.strides(), &src.strides()};
  const Walk w = reduce_dims(dst.shape(), strides, 2);
  const int64_t inner = w.shape.back(), sd = w.stride[0].back(), ss = w.stride[1].back();
  const int64_t rows = dst.numel() / inner;
#pragma omp parallel for schedule(static) if (dst.numel() >= cpu::kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    char* pd = d + row_offset(w, 0, r) * int64_t(esize);
    const char* ps = s + row_offset(w, 1, r) * int64_t(esize);
    if (sd == 1 && ss == 1) {
      std::memcpy(pd, ps, size_t(inner) * esize);
    } else if (esize == 4) {
      copy_run<uint32_t>(pd, ps, inner, sd, ss);
    } else if (esize == 2) {
      copy_run<uint16_t>(pd, ps, inner, sd, ss);
    } else {
      copy_run<uint8_t>(pd, ps, inner, sd, ss);
    }
  }
}

Tensor CpuBackend::to_host(const Tensor& t) {
  cpu::require_host(t, "to_host", "t");
  return t;
}

Tensor CpuBackend::to_device(const Tensor& host) {
  cpu::require_host(host, "to_device", "host");
  return host;
}

}  // namespace latte
