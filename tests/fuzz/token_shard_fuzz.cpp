// Token shards (trainer/data/token_shard.h): the 64-byte header and the token count it promises;
// every token of an accepted shard is read.
#include <vector>

#include "tests/fuzz/fuzz_input.h"
#include "trainer/data/token_shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latte::fuzz::MemoryFile file;
  const std::string& path = file.write(data, size);
  latte::fuzz::parse_or_reject([&] {
    const latte::TokenShard shard(path);
    std::vector<int32_t> tokens(size_t(shard.size()));
    shard.read(0, shard.size(), tokens.data());
  });
  return 0;
}
