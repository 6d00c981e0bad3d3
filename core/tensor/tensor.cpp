#include "core/tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace latte {

std::string device_name(const Device& d) {
  return d.kind == DeviceKind::cpu ? std::string("cpu") : str_cat("cuda:", d.index);
}

std::string shape_str(const Shape& s) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << ']';
  return out.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {
// Block dtypes pack 32 consecutive elements of the last dim; shapes must keep that whole.
void check_block_shape(const Shape& shape, DType dtype, const char* op) {
  if (!is_block_dtype(dtype)) return;
  LATTE_REQUIRE(!shape.empty() && shape.back() % kQuantBlock == 0, ErrorCode::invalid_argument, op, ": a ",
                dtype_name(dtype), " tensor needs a last dim that is a multiple of ", kQuantBlock,
                " (whole blocks), got shape ", shape_str(shape));
}
}  // namespace

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    LATTE_REQUIRE(d >= 0, ErrorCode::invalid_argument, "negative dimension in shape ", shape_str(shape));
  LATTE_REQUIRE(device.kind == DeviceKind::cpu, ErrorCode::unsupported,
                "Tensor::empty on ", device_name(device), ": device tensors come from the backend allocator");
  check_block_shape(shape, dtype, "Tensor::empty");
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  auto st = std::make_shared<Storage>();
  st->bytes = dtype_bytes(dtype, shape_numel(shape));
  size_t alloc = (st->bytes + 63) / 64 * 64;
  st->data = std::aligned_alloc(64, alloc == 0 ? 64 : alloc);
  LATTE_REQUIRE(st->data != nullptr, ErrorCode::io, "out of host memory allocating ", st->bytes, " bytes");
  st->release = [](void* p) { std::free(p); };
  t.storage_ = std::move(st);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device,
                      std::shared_ptr<void> keep_alive) {
  check_block_shape(shape, dtype, "Tensor::borrow");
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  auto st = std::make_shared<Storage>();
  st->data = data;
  st->bytes = dtype_bytes(dtype, shape_numel(shape));
  st->device = device;
  t.storage_ = std::move(st);
  t.keep_alive_ = std::move(keep_alive);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  LATTE_REQUIRE(int64_t(values.size()) == shape_numel(shape), ErrorCode::shape_mismatch,
                "from_vector: ", values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  // memcpy from an empty vector's null data() is undefined even for 0 bytes (UBSan, under
  // launch/run-sanitizers: an empty RoPE-key tensor in the paged MLA tests).
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? i + n : i;
  LATTE_REQUIRE(j >= 0 && j < n, ErrorCode::invalid_argument, "dim ", i, " out of range for shape ",
                shape_str(shape_));
  return shape_[size_t(j)];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

float* Tensor::f32() {
  expect_dtype(DType::f32, "tensor");
  return static_cast<float*>(raw());
}
const float* Tensor::f32() const {
  expect_dtype(DType::f32, "tensor");
  return static_cast<const float*>(raw());
}
uint16_t* Tensor::u16() {
  LATTE_REQUIRE(dtype_ == DType::bf16 || dtype_ == DType::f16, ErrorCode::shape_mismatch,
                "expected a 16-bit tensor, got ", dtype_name(dtype_));
  return static_cast<uint16_t*>(raw());
}
const uint16_t* Tensor::u16() const {
  LATTE_REQUIRE(dtype_ == DType::bf16 || dtype_ == DType::f16, ErrorCode::shape_mismatch,
                "expected a 16-bit tensor, got ", dtype_name(dtype_));
  return static_cast<const uint16_t*>(raw());
}

int8_t* Tensor::i8() {
  expect_dtype(DType::i8, "tensor");
  return static_cast<int8_t*>(raw());
}
const int8_t* Tensor::i8() const {
  expect_dtype(DType::i8, "tensor");
  return static_cast<const int8_t*>(raw());
}

Tensor Tensor::reshape(const Shape& shape) const {
  LATTE_REQUIRE(is_contiguous(), ErrorCode::invalid_argument, "reshape of a non-contiguous tensor");
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      LATTE_REQUIRE(infer < 0, ErrorCode::invalid_argument, "reshape: more than one -1 in ", shape_str(shape));
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0 && known > 0) s[size_t(infer)] = numel() / known;
  LATTE_REQUIRE(shape_numel(s) == numel(), ErrorCode::shape_mismatch, "reshape ", shape_str(shape_), " to ",
                shape_str(shape));
  check_block_shape(s, dtype_, "reshape");  // the flat element order, hence the blocks, is unchanged
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  LATTE_REQUIRE(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], ErrorCode::invalid_argument,
                "slice [", begin, ", ", end, ") out of range for shape ", shape_str(shape_));
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.offset_ += begin * strides_[0];
  if (is_block_dtype(dtype_)) {  // whole blocks only (automatic for rows of >= 2-D tensors)
    LATTE_REQUIRE(t.offset_ % kQuantBlock == 0 && t.shape_.back() % kQuantBlock == 0, ErrorCode::invalid_argument,
                  "slice [", begin, ", ", end, ") of a ", dtype_name(dtype_), " tensor of shape ", shape_str(shape_),
                  " does not cover whole blocks of ", kQuantBlock);
  }
  return t;
}

Tensor Tensor::narrow(int d, int64_t begin, int64_t end) const {
  int j = d < 0 ? d + ndim() : d;
  LATTE_REQUIRE(j >= 0 && j < ndim() && 0 <= begin && begin <= end && end <= shape_[size_t(j)],
                ErrorCode::invalid_argument, "narrow dim ", d, " [", begin, ", ", end, ") out of range for shape ",
                shape_str(shape_));
  Tensor t = *this;
  t.shape_[size_t(j)] = end - begin;
  t.offset_ += begin * strides_[size_t(j)];
  if (is_block_dtype(dtype_)) {  // e.g. a tensor-parallel column shard [N, K/tp] of a GGUF weight
    LATTE_REQUIRE(t.offset_ % kQuantBlock == 0 && t.shape_.back() % kQuantBlock == 0, ErrorCode::unsupported,
                  "narrow dim ", d, " [", begin, ", ", end, ") of a ", dtype_name(dtype_), " tensor of shape ",
                  shape_str(shape_), " does not cover whole blocks of ", kQuantBlock,
                  " (convert with to(DType::f32) first)");
  }
  return t;
}

Tensor Tensor::select(int64_t index) const {
  Tensor t = slice(index, index + 1);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

namespace {
// An i8 element is its integer value (dtype.h): nearest, ties to even, saturated; NaN -> 0.
int8_t f32_to_i8(float v) {
  if (!(v == v)) return 0;
  const float r = std::nearbyint(std::clamp(v, -128.0f, 127.0f));
  return int8_t(r);
}

// Element dtypes only (copy_from routes block dtypes through whole-tensor codecs first).
float load_as_f32(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::i8: return float(static_cast<const int8_t*>(base)[i]);
    default: break;
  }
  fail(ErrorCode::internal, "load_as_f32 on a ", dtype_name(t), " tensor");
}
void store_from_f32(void* base, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = v; return;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = f32_to_bf16(v); return;
    case DType::f16: static_cast<uint16_t*>(base)[i] = f32_to_f16(v); return;
    case DType::i8: static_cast<int8_t*>(base)[i] = f32_to_i8(v); return;
    default: break;
  }
  fail(ErrorCode::internal, "store_from_f32 on a ", dtype_name(t), " tensor");
}
}  // namespace

void Tensor::copy_from(const Tensor& src) {
  LATTE_REQUIRE(src.shape_ == shape_, ErrorCode::shape_mismatch, "copy_from: source ", shape_str(src.shape_),
                " into ", shape_str(shape_));
  LATTE_REQUIRE(device().kind == DeviceKind::cpu && src.device().kind == DeviceKind::cpu,
                ErrorCode::unsupported, "copy_from on device tensors goes through the backend (Backend::copy)");
  if (is_contiguous() && src.is_contiguous() && src.dtype_ == dtype_) {
    std::memmove(raw(), src.raw(), nbytes());
    return;
  }
  if (is_block_dtype(src.dtype_)) {
    // Row by row (rows: every dim but the last, which is whole blocks): a strided block view
    // (narrow) starts every row on a block. Same dtype: the blocks are copied; else dequantized
    // (exact) to f32 and copied from there.
    LATTE_REQUIRE(ndim() >= 1, ErrorCode::internal, "copy_from: 0-d ", dtype_name(src.dtype_), " tensor");
    const int64_t cols = shape_.back(), rows = cols == 0 ? 0 : numel() / cols;
    const size_t row_bytes = dtype_bytes(src.dtype_, cols);
    const bool same = dtype_ == src.dtype_ && is_contiguous();
    Tensor wide = same ? Tensor() : empty(src.shape_, DType::f32);
    std::vector<int64_t> idx(size_t(ndim()), 0);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t off = src.offset_;
      for (int d = 0; d + 1 < ndim(); ++d) off += idx[size_t(d)] * src.strides_[size_t(d)];
      const char* p = static_cast<const char*>(src.storage_->data) + dtype_bytes(src.dtype_, off);
      if (same)
        std::memcpy(static_cast<char*>(raw()) + size_t(r) * row_bytes, p, row_bytes);
      else
        dequantize_blocks(src.dtype_, p, wide.f32() + r * cols, cols);
      for (int d = ndim() - 2; d >= 0; --d) {
        if (++idx[size_t(d)] < shape_[size_t(d)]) break;
        idx[size_t(d)] = 0;
      }
    }
    if (!same) copy_from(wide);
    return;
  }
  if (is_block_dtype(dtype_)) {  // quantize a contiguous f32 copy of the source
    LATTE_REQUIRE(is_contiguous(), ErrorCode::unsupported, "copy_from into a non-contiguous ", dtype_name(dtype_),
                  " view (block-quantized tensors are written whole)");
    const Tensor wide = src.dtype_ == DType::f32 && src.is_contiguous() ? src : src.to(DType::f32);
    quantize_blocks(dtype_, wide.f32(), raw(), numel());
    return;
  }
  // General strided path: walk both index spaces with one odometer.
  int n = ndim();
  std::vector<int64_t> idx(size_t(n), 0);
  int64_t total = numel();
  for (int64_t k = 0; k < total; ++k) {
    int64_t so = 0, dof = 0;
    for (int d = 0; d < n; ++d) {
      so += idx[size_t(d)] * src.strides_[size_t(d)];
      dof += idx[size_t(d)] * strides_[size_t(d)];
    }
    store_from_f32(raw(), dtype_, dof, load_as_f32(src.raw(), src.dtype_, so));
    for (int d = n - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape_[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
}

std::vector<float> Tensor::to_vector() const {
  Tensor t = to(DType::f32);
  const float* p = t.f32();
  return std::vector<float>(p, p + t.numel());
}

void Tensor::fill(float value) {
  LATTE_REQUIRE(device().kind == DeviceKind::cpu, ErrorCode::unsupported,
                "fill on device tensors goes through the backend (Backend::fill)");
  LATTE_REQUIRE(is_contiguous(), ErrorCode::invalid_argument, "fill of a non-contiguous tensor");
  LATTE_REQUIRE(!is_block_dtype(dtype_), ErrorCode::unsupported, "fill of a ", dtype_name(dtype_),
                " tensor (block-quantized tensors are written with copy_from or to())");
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) store_from_f32(raw(), dtype_, i, value);
}

void Tensor::expect_shape(const Shape& shape, const char* name) const {
  LATTE_REQUIRE(shape_ == shape, ErrorCode::shape_mismatch, name, ": expected shape ", shape_str(shape),
                ", got ", shape_str(shape_));
}

void Tensor::expect_dtype(DType dtype, const char* name) const {
  LATTE_REQUIRE(dtype_ == dtype, ErrorCode::shape_mismatch, name, ": expected dtype ", dtype_name(dtype),
                ", got ", dtype_name(dtype_));
}

}  // namespace latte
