// Element types Latte stores. Compute is always float32 (bf16/f16 are storage formats whose
// values are widened before arithmetic), so conversions live here, next to the enum.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace latte {

enum class DType : uint8_t { f32, bf16, f16 };

inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }
const char* dtype_name(DType t);          // "f32", "bf16", "f16"
DType dtype_from_name(const std::string& name);  // throws invalid_argument for unknown names

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
