// stories260K as llama2.c .bin, as a safetensors folder and its tokenizer.bin, damaged by
// truncation and byte flips (tests/unit/file_corruption.h).
#include <filesystem>

#include "core/checkpoint/checkpoint.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/unit/checkpoint/test_util.h"
#include "tests/unit/file_corruption.h"

namespace latte {
namespace {

using testing::check_byte_flips;
using testing::check_truncations;

TEST(Corruption, Llama2cCheckpoint) {
  ScratchDir dir;
  const std::string path = dir / "stories260K.bin";
  std::filesystem::copy_file(stories_path(), path);
  auto load = [&] { load_llama2c(path); };
  const auto flipped = check_byte_flips(path, load, 1000, 15);
  // Most bytes are weights: a flip there changes a value (or makes it NaN/Inf, refused).
  EXPECT_GT(flipped.loaded, 500);
  const auto cut = check_truncations(path, load);
  EXPECT_EQ(cut.loaded, 0) << "a truncated checkpoint loaded";
  EXPECT_EQ(cut.refused, 258);  // 1,056,540 bytes: cuts at 0, 4096, ..., 1,052,672
}

TEST(Corruption, SafetensorsFolder) {
  ScratchDir dir;
  const Checkpoint ck = load_llama2c(stories_path());
  save_safetensors_dir(dir.str(), ck.config, ck.tensors);
  const std::string path = dir / "model.safetensors";
  auto load = [&] { load_safetensors_dir(dir.str()); };
  const auto flipped = check_byte_flips(path, load, 1000, 15);
  EXPECT_GT(flipped.loaded, 500);
  const auto cut = check_truncations(path, load);
  EXPECT_EQ(cut.loaded, 0) << "a truncated safetensors file loaded";
  EXPECT_GT(cut.refused, 250);
}

TEST(Corruption, Llama2cTokenizer) {
  ScratchDir dir;
  const std::string path = dir / "tok512.bin";
  std::filesystem::copy_file(stories_tokenizer_path(), path);
  auto load = [&] { load_llama2c_tokenizer(path, 512)->encode("Once upon a time", true); };
  const auto flipped = check_byte_flips(path, load, 1000, 15);
  EXPECT_GT(flipped.refused, 0);
  check_truncations(path, load);
}

}  // namespace
}  // namespace latte
