// Every tokenizer kind Latte ships, encoding arbitrary bytes (valid UTF-8 or not): the first byte
// picks the tokenizer, the rest is the text. Each id must be inside the vocabulary and decoding
// must not fail; the tokenizers are the real files in the repository, loaded once.
#include <memory>
#include <vector>

#include "core/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

const std::vector<std::unique_ptr<latte::Tokenizer>>& tokenizers() {
  static const std::vector<std::unique_ptr<latte::Tokenizer>> all = [] {
    std::vector<std::unique_ptr<latte::Tokenizer>> t;
    t.push_back(latte::load_llama2c_tokenizer(std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin"));
    for (const char* name : {"bytelevel_gpt2", "bytelevel_llama3", "bytelevel_smollm", "spm_llama", "spm_metaspace"})
      t.push_back(latte::load_hf_tokenizer_json(std::string(LATTE_TEST_DATA_DIR) + "/tokenizers/" + name + ".json"));
    return t;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const latte::Tokenizer& tok = *tokenizers()[data[0] % tokenizers().size()];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  latte::fuzz::parse_or_reject([&] {
    const std::vector<int32_t> ids = tok.encode(text, data[0] & 0x80);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) {
        std::fprintf(stderr, "latte fuzz: %s encoded to id %d outside its vocabulary\n", tok.id().c_str(), int(id));
        std::abort();
      }
    (void)tok.decode(ids);
  });
  return 0;
}
