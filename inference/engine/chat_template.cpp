#include "inference/engine/chat_template.h"

namespace latte {

std::string chatml_user_turn(const std::string& message) {
  return "<|im_start|>user\n" + message + "<|im_end|>\n<|im_start|>assistant\n";
}

bool has_chatml_tokens(const Tokenizer& tok) {
  for (const char* marker : {"<|im_start|>", "<|im_end|>"})
    if (tok.encode(marker, false).size() != 1) return false;
  return true;
}

}  // namespace latte
