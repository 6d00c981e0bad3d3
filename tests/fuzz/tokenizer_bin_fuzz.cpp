// llama2.c tokenizer.bin: max_token_length, then (score, length, bytes) records to the end of the
// file; a tokenizer that loads then encodes and decodes a fixed text.
#include "core/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] {
    const auto tok = latte::load_llama2c_tokenizer(path);
    (void)tok->decode(tok->encode("Once upon a time, 42 cats\n héllo", true));
  });
  return 0;
}
