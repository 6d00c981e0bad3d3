// A token shard of stories260K's validation text, damaged by truncation and byte flips
// (tests/unit/file_corruption.h): opening it and reading every token loads or refuses it.
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "core/base/file_io.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/unit/file_corruption.h"
#include "trainer/data/token_shard.h"

namespace latte {
namespace {

TEST(Corruption, TokenShard) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("latte_shard_corruption_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "shard.bin").string();
  const auto tok = load_tokenizer(std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin");
  const std::string text = read_text_file(std::string(LATTE_MODELS_DIR) + "/stories260K/tinystories_valid_head.txt");
  write_token_shard(path, tok->encode(text.substr(0, 100000), false), tok->vocab_size(), tok->id());
  auto load = [&] {
    const TokenShard shard(path);
    std::vector<int32_t> ids(size_t(shard.size()));
    shard.read(0, shard.size(), ids.data());
  };
  const auto flipped = testing::check_byte_flips(path, load, 1000, 15);
  // A flipped high byte of a 2-byte id leaves the 512-token vocabulary: refused when read.
  EXPECT_GT(flipped.refused, 0);
  const auto cut = testing::check_truncations(path, load);
  EXPECT_EQ(cut.loaded, 0) << "a truncated shard loaded";
  EXPECT_GT(cut.refused, 5);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latte
