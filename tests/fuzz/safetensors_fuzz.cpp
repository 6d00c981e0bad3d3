// A single .safetensors file: the 8-byte header length, the JSON header, and the tensor table
// checked against the data section (dtype, shape, offsets, overlaps, gaps). Every accepted tensor
// is then read in full, so a view that points past the map is caught by ASan.
#include "core/checkpoint/safetensors_file.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] {
    latte::TensorStore store = latte::read_safetensors_file(path);
    store.check_all_finite();
  });
  return 0;
}
