// GGUF: header, metadata key/values (nested arrays), tensor infos, the data section's offsets and
// sizes, the F16/BF16 decoders, the tokenizer.ggml.* vocabulary, and the quantized blocks (every
// Q8_0/Q4_0/Q4_1 tensor that loads is dequantized in full).
#include "core/checkpoint/checkpoint.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] {
    latte::Checkpoint ck = latte::load_gguf(path);
    for (const auto& [name, entry] : ck.tensors.entries())
      if (latte::is_block_dtype(entry.tensor.dtype())) (void)entry.tensor.to(latte::DType::f32);
    if (ck.tokenizer) (void)ck.tokenizer->decode(ck.tokenizer->encode("Once upon a time, 42 <s> héllo", true));
  });
  return 0;
}
