// Block decoders for the GGUF tensor types Latte reads, bit for bit as ggml's dequantize_row_*.
#include <cstdio>
#include <cstring>

#include "core/base/dtype.h"
#include "core/base/error.h"
#include "core/checkpoint/gguf_internal.h"

namespace latte::gguf {

namespace {

constexpr int64_t kQK = 32;  // elements per block of the legacy quants

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);  // blocks are packed, so halves are not 2-byte aligned in general
  return v;
}

// block_q8_0: f16 d, int8 qs[32]; x = qs * d.
void dequant_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 34, dst += kQK) {
    const float d = f16_to_f32(load_u16(src));
    const auto* qs = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < kQK; ++j) dst[j] = float(qs[j]) * d;
  }
}

// block_q4_0: f16 d, uint8 qs[16]; low nibbles are elements 0..15, high nibbles 16..31;
// x = (nibble - 8) * d.
void dequant_q4_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 18, dst += kQK) {
    const float d = f16_to_f32(load_u16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = float(int(qs[j] & 0x0f) - 8) * d;
      dst[j + kQK / 2] = float(int(qs[j] >> 4) - 8) * d;
    }
  }
}

// block_q4_1: f16 d, f16 m, uint8 qs[16]; same nibble order; x = nibble * d + m.
void dequant_q4_1(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 20, dst += kQK) {
    const float d = f16_to_f32(load_u16(src));
    const float m = f16_to_f32(load_u16(src + 2));
    const uint8_t* qs = src + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = float(qs[j] & 0x0f) * d + m;
      dst[j + kQK / 2] = float(qs[j] >> 4) * d + m;
    }
  }
}

}  // namespace

const char* type_name(uint32_t type) {
  static const char* names[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",   "Q4_2",    "Q4_3",    "Q5_0",     "Q5_1",     "Q8_0",
      "Q8_1",    "Q2_K",   "Q3_K",    "Q4_K",   "Q5_K",    "Q6_K",    "Q8_K",     "IQ2_XXS",  "IQ2_XS",
      "IQ3_XXS", "IQ1_S",  "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS",  "I8",       "I16",      "I32",
      "I64",     "F64",    "IQ1_M",   "BF16",   "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",   "TQ2_0",
      "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
  if (type < sizeof names / sizeof names[0]) return names[type];
  static thread_local char buf[32];
  std::snprintf(buf, sizeof buf, "type %u", type);
  return buf;
}

bool type_layout(uint32_t type, int64_t* block_elems, size_t* block_bytes) {
  switch (type) {
    case F32: *block_elems = 1; *block_bytes = 4; return true;
    case F16:
    case BF16: *block_elems = 1; *block_bytes = 2; return true;
    case Q8_0: *block_elems = kQK; *block_bytes = 34; return true;
    case Q4_0: *block_elems = kQK; *block_bytes = 18; return true;
    case Q4_1: *block_elems = kQK; *block_bytes = 20; return true;
    default: return false;
  }
}

void dequantize(uint32_t type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      return;
    case BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case Q8_0: dequant_q8_0(src, dst, n); return;
    case Q4_0: dequant_q4_0(src, dst, n); return;
    case Q4_1: dequant_q4_1(src, dst, n); return;
    default: fail(ErrorCode::internal, "dequantize: no decoder for GGUF type ", type_name(type));
  }
}

}  // namespace latte::gguf
