// config.json (Hugging Face LlamaForCausalLM keys plus Latte's MLA keys) from text; an accepted
// config must survive a write/read round trip unchanged.
#include <cstdlib>

#include "core/model/config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  latte::fuzz::parse_or_reject([&] {
    const latte::ModelConfig c = latte::config_from_json_text(text, "config.json");
    const std::string written = latte::config_to_json_text(c);
    if (latte::config_to_json_text(latte::config_from_json_text(written, "written config.json")) != written) {
      std::fprintf(stderr, "latte fuzz: config.json does not round-trip:\n%s\n", written.c_str());
      std::abort();
    }
  });
  return 0;
}
