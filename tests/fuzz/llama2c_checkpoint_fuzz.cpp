// llama2.c .bin checkpoints: the 7-int header, the size arithmetic of the 13 arrays behind it and
// the finiteness scan over every weight.
#include "core/checkpoint/checkpoint.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] { latte::load_llama2c(path); });
  return 0;
}
