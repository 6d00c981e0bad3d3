// ChatML: the wrapping, and which tokenizers know it (the SmolLM2 fixture does, llama2.c's tok512
// does not: it spells the markers out byte by byte).
#include <gtest/gtest.h>

#include "core/tokenizer/tokenizer.h"
#include "inference/engine/chat_template.h"

namespace latte {
namespace {

TEST(ChatTemplate, ChatmlUserTurn) {
  EXPECT_EQ(chatml_user_turn("Hi"), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, OnlyTokenizersWithTheMarkersAsTokensHaveIt) {
  auto smollm = load_hf_tokenizer_json(std::string(LATTE_TEST_DATA_DIR) + "/tokenizers/bytelevel_smollm.json");
  EXPECT_TRUE(has_chatml_tokens(*smollm));
  auto tok512 = load_llama2c_tokenizer(std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin");
  EXPECT_FALSE(has_chatml_tokens(*tok512));
}

}  // namespace
}  // namespace latte
