// Hugging Face tokenizer.json: the model (BPE vocab, merges), normalizer, pre-tokenizer, decoder
// and added tokens; a tokenizer that loads then encodes and decodes a fixed text.
#include "core/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] {
    const auto tok = latte::load_hf_tokenizer_json(path);
    (void)tok->decode(tok->encode("Once upon a time, 42 cats <|endoftext|> naïve\n\t", true));
  });
  return 0;
}
