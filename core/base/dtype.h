// Element types Latte stores. Compute is always float32 (bf16/f16 are storage formats whose
// values are widened before arithmetic), so conversions live here, next to the enum.
//
// q8_0, q4_0, q4_1 are GGML's block formats (weights read from GGUF files and kept quantized):
// 32 consecutive elements (along the last dim) share one block,
//   q8_0: f16 d, int8 qs[32]                      (34 bytes)  x = qs[j] * d
//   q4_0: f16 d, uint8 qs[16]                     (18 bytes)  x = (nibble - 8) * d
//   q4_1: f16 d, f16 m, uint8 qs[16]              (20 bytes)  x = nibble * d + m
// where qs[j] & 15 is element j and qs[j] >> 4 element j + 16. Blocks are packed (f16 fields are
// not 2-byte aligned in general). A block tensor's shape is the logical one; its last dim must be
// a multiple of 32, and dtype_size() (bytes per element) does not apply: use dtype_bytes().
//
// i8 is a plain signed byte per element: the codes of a quantized KV cache, whose scales live in
// a separate f32 tensor the kernels take alongside (Backend::paged_cache_write). A tensor alone
// cannot dequantize them, so conversions treat an i8 element as its integer value: widening is
// exact, narrowing rounds to nearest (ties to even) and saturates to [-128, 127], NaN becomes 0.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace latte {

enum class DType : uint8_t { f32, bf16, f16, q8_0, q4_0, q4_1, i8 };

constexpr int64_t kQuantBlock = 32;  // elements per block of q8_0, q4_0, q4_1

inline bool is_block_dtype(DType t) { return t == DType::q8_0 || t == DType::q4_0 || t == DType::q4_1; }
// Bytes of one block (block dtypes) or one element (the others).
inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    case DType::q8_0: return 34;
    case DType::q4_0: return 18;
    case DType::q4_1: return 20;
    case DType::i8: return 1;
  }
  return 0;
}
inline int64_t dtype_block_elems(DType t) { return is_block_dtype(t) ? kQuantBlock : 1; }
// Storage bytes of n elements (n a multiple of 32 for block dtypes).
inline size_t dtype_bytes(DType t, int64_t n) {
  return size_t(n / dtype_block_elems(t)) * dtype_block_bytes(t);
}

[[noreturn]] void dtype_size_of_block_dtype(DType t);  // throws unsupported naming t
// Bytes per element of an element dtype (f32: 4, bf16/f16: 2, i8: 1); throws for block dtypes.
inline size_t dtype_size(DType t) {
  if (is_block_dtype(t)) dtype_size_of_block_dtype(t);
  return dtype_block_bytes(t);
}
const char* dtype_name(DType t);          // "f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "i8"
DType dtype_from_name(const std::string& name);  // throws invalid_argument for unknown names

// Block codecs, n a multiple of 32. dequantize_blocks is exact in f32 (ggml's dequantize_row_*);
// quantize_blocks is ggml's reference (round-to-nearest) quantizer: q8_0 d = amax / 127;
// q4_0 d = -(the value of largest magnitude) / 8; q4_1 d = (max - min) / 15, m = min.
void dequantize_blocks(DType t, const void* src, float* dst, int64_t n);
void quantize_blocks(DType t, const float* src, void* dst, int64_t n);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as PyTorch and cuda_bf16.h do; NaN stays NaN (quiet bit forced so the
// truncation cannot turn a NaN payload into Inf).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace latte
