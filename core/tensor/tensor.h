// Tensor: a typed, shaped view on shared storage. Views (reshape, slice along dim 0, select) share
// the storage; clone() and to() copy. Storage is either owned (64-byte aligned host memory, or
// device memory from a backend allocator) or borrowed (e.g. a region of a memory-mapped file).
//
// Shapes are listed outermost first, with the names the checkpoints use in comments at each use,
// e.g. wq [n_heads*head_dim, dim]. Strides are in elements.
//
// Block dtypes (q8_0, q4_0, q4_1; see dtype.h): the shape is the logical one (e.g. [N, K]) with
// the last dim a multiple of 32; the storage is dtype_bytes(dtype, numel) bytes of packed blocks.
// Views must keep whole blocks: reshapes that keep the last dim a multiple of 32, slices/selects
// along dim 0, narrow() with block-aligned bounds on the last dim (a strided view; clone() makes
// it contiguous, which the kernels require). clone() copies the blocks, to(f32/bf16/f16),
// to_vector() and copy_from() into an element tensor dequantize exactly, to(block dtype) quantizes
// (ggml's reference quantizer). f32(), u16(), fill(), views cutting a block and writes into a
// strided block view throw errors naming the dtype.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/base/dtype.h"
#include "core/base/error.h"
#include "core/tensor/device.h"

namespace latte {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  std::function<void(void*)> release;  // empty for borrowed memory
  ~Storage() {
    if (release && data) release(data);
  }
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);  // host only
  // A view on memory Latte does not own; keep_alive (optional) holds whatever owns it.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                       std::shared_ptr<void> keep_alive = nullptr);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  // True when another Tensor (a view, a copy of the handle) shares this one's memory: writing it
  // in place would change what that other holder sees.
  bool storage_shared() const { return storage_ && storage_.use_count() > 1; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  bool is_contiguous() const;

  // Start of the data (for block dtypes, of the first block: offset_ is a multiple of 32).
  void* raw() { return static_cast<char*>(storage_->data) + dtype_bytes(dtype_, offset_); }
  const void* raw() const { return static_cast<const char*>(storage_->data) + dtype_bytes(dtype_, offset_); }
  // Typed access; throws shape_mismatch if the dtype differs.
  float* f32();
  const float* f32() const;
  uint16_t* u16();  // bf16 or f16 bits
  const uint16_t* u16() const;
  int8_t* i8();  // i8 codes (see dtype.h)
  const int8_t* i8() const;

  // Views sharing storage.
  Tensor reshape(const Shape& shape) const;      // contiguous only; one -1 allowed
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0
  Tensor select(int64_t index) const;            // dim 0 removed
  Tensor narrow(int dim, int64_t begin, int64_t end) const;  // [begin, end) along dim, strided view

  // Host-only copies and fills, for loaders, savers and tests. Code that runs on the model's
  // device (core/model, the engine, the trainer) uses Backend::empty / fill / copy / clone.
  Tensor clone() const;
  Tensor to(DType dtype) const;      // host only; widening is exact, narrowing rounds to nearest even
  std::vector<float> to_vector() const;  // host only, widened to f32
  void copy_from(const Tensor& src);  // same shape, any dtypes, host only
  void fill(float value);             // host only

  // Shape/dtype validation for public entry points; the name goes into the message.
  void expect_shape(const Shape& shape, const char* name) const;
  void expect_dtype(DType dtype, const char* name) const;

 private:
  std::shared_ptr<Storage> storage_;
  std::shared_ptr<void> keep_alive_;
  Shape shape_, strides_;
  int64_t offset_ = 0;  // in elements (a multiple of 32 for block dtypes)
  DType dtype_ = DType::f32;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace latte
