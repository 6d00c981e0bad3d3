// Training checkpoint manifests (state.json, trainer/train_state): every field a resumed run
// compares with its own flags, including the embedded model config.
#include "tests/fuzz/fuzz_input.h"
#include "trainer/train_state/train_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  latte::fuzz::parse_or_reject([&] { (void)latte::parse_train_state_json(text, "state.json"); });
  return 0;
}
