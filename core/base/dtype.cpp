#include "core/base/dtype.h"

#include <algorithm>
#include <cmath>

#include "core/base/error.h"

namespace latte {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::q8_0: return "q8_0";
    case DType::q4_0: return "q4_0";
    case DType::q4_1: return "q4_1";
    case DType::i8: return "i8";
  }
  return "?";
}

void dtype_size_of_block_dtype(DType t) {
  fail(ErrorCode::unsupported, "dtype_size: ", dtype_name(t),
       " is a block format (32 elements per block), it has no per-element size");
}

DType dtype_from_name(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16") return DType::f16;
  if (name == "q8_0") return DType::q8_0;
  if (name == "q4_0") return DType::q4_0;
  if (name == "q4_1") return DType::q4_1;
  if (name == "i8" || name == "int8") return DType::i8;
  fail(ErrorCode::invalid_argument, "unknown dtype '", name, "' (expected f32, bf16, f16, q8_0, q4_0, q4_1 or i8)");
}

// IEEE half <-> single, handling subnormals, Inf and NaN (no hardware F16C dependency).
float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow (after rounding) -> Inf
  if (abs < 0x38800000u) {  // subnormal or zero in half
    if (abs < 0x33000000u) return sign;
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // value = mant * 2^(exp-150) = half_mant * 2^-24
    uint32_t half_mant = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return uint16_t(sign | half_mant);
  }
  uint32_t rounded = abs + 0x0fffu + ((abs >> 13) & 1u);
  return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

// ---- block formats ------------------------------------------------------------------------------

namespace {

uint16_t load_half(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void store_half(uint8_t* p, float f) {
  const uint16_t v = f32_to_f16(f);
  std::memcpy(p, &v, 2);
}

void require_blocks(DType t, int64_t n, const char* op) {
  LATTE_REQUIRE(is_block_dtype(t), ErrorCode::invalid_argument, op, ": ", dtype_name(t), " is not a block dtype");
  LATTE_REQUIRE(n % kQuantBlock == 0, ErrorCode::invalid_argument, op, ": ", n, " ", dtype_name(t),
                " elements are not whole blocks of ", kQuantBlock);
}

}  // namespace

void dequantize_blocks(DType t, const void* src_v, float* dst, int64_t n) {
  require_blocks(t, n, "dequantize_blocks");
  const auto* src = static_cast<const uint8_t*>(src_v);
  const size_t bb = dtype_block_bytes(t);
  constexpr int64_t H = kQuantBlock / 2;
  for (int64_t b = 0; b < n / kQuantBlock; ++b, src += bb, dst += kQuantBlock) {
    const float d = f16_to_f32(load_half(src));
    if (t == DType::q8_0) {
      const auto* qs = reinterpret_cast<const int8_t*>(src + 2);
      for (int j = 0; j < kQuantBlock; ++j) dst[j] = float(qs[j]) * d;
    } else if (t == DType::q4_0) {
      const uint8_t* qs = src + 2;
      for (int j = 0; j < H; ++j) {
        dst[j] = float(int(qs[j] & 0x0f) - 8) * d;
        dst[j + H] = float(int(qs[j] >> 4) - 8) * d;
      }
    } else {
      const float m = f16_to_f32(load_half(src + 2));
      const uint8_t* qs = src + 4;
      for (int j = 0; j < H; ++j) {
        dst[j] = float(qs[j] & 0x0f) * d + m;
        dst[j + H] = float(qs[j] >> 4) * d + m;
      }
    }
  }
}

void quantize_blocks(DType t, const float* src, void* dst_v, int64_t n) {
  require_blocks(t, n, "quantize_blocks");
  auto* dst = static_cast<uint8_t*>(dst_v);
  const size_t bb = dtype_block_bytes(t);
  constexpr int64_t H = kQuantBlock / 2;
  for (int64_t b = 0; b < n / kQuantBlock; ++b, src += kQuantBlock, dst += bb) {
    const float* x = src;
    if (t == DType::q8_0) {
      float amax = 0;
      for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      store_half(dst, d);
      auto* qs = reinterpret_cast<int8_t*>(dst + 2);
      for (int j = 0; j < kQuantBlock; ++j) qs[j] = int8_t(std::lround(x[j] * id));
    } else if (t == DType::q4_0) {
      float amax = 0, mx = 0;  // mx: the value of largest magnitude, sign kept
      for (int j = 0; j < kQuantBlock; ++j) {
        if (std::fabs(x[j]) > amax) {
          amax = std::fabs(x[j]);
          mx = x[j];
        }
      }
      const float d = mx / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
      store_half(dst, d);
      uint8_t* qs = dst + 2;
      for (int j = 0; j < H; ++j) {
        const int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
        const int hi = std::min(15, int(int8_t(x[j + H] * id + 8.5f)));
        qs[j] = uint8_t(lo | (hi << 4));
      }
    } else {
      float mn = x[0], mx = x[0];
      for (int j = 1; j < kQuantBlock; ++j) {
        mn = std::min(mn, x[j]);
        mx = std::max(mx, x[j]);
      }
      const float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
      store_half(dst, d);
      store_half(dst + 2, mn);
      uint8_t* qs = dst + 4;
      for (int j = 0; j < H; ++j) {
        const int lo = std::min(15, int(int8_t((x[j] - mn) * id + 0.5f)));
        const int hi = std::min(15, int(int8_t((x[j + H] - mn) * id + 0.5f)));
        qs[j] = uint8_t(lo | (hi << 4));
      }
    }
  }
}

}  // namespace latte
