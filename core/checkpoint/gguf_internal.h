// GGUF internals shared by the loader (gguf.cpp) and the block decoders (gguf_dequant.cpp).
// Not part of the checkpoint interface.
#pragma once
#include <cstddef>
#include <cstdint>

namespace latte::gguf {

// ggml_type values, as numbered in ggml.h (gaps are types ggml has removed).
enum GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  BF16 = 30,
};

// "Q4_1", "Q6_K", ...; "type N" for numbers ggml does not define.
const char* type_name(uint32_t type);
// Elements per block and bytes per block, for the types Latte decodes; false for the others.
bool type_layout(uint32_t type, int64_t* block_elems, size_t* block_bytes);
// Decodes n elements (a multiple of the block size) of `type` from src into f32.
void dequantize(uint32_t type, const uint8_t* src, float* dst, int64_t n);

}  // namespace latte::gguf
