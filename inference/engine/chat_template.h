// The one chat template Latte applies: ChatML, as SmolLM2-Instruct and other Hugging Face chat
// models use it. `latte generate --chat` and the gRPC server's chat_template flag both wrap a
// prompt with it, so they give the same tokens.
#pragma once
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace latte {

// "<|im_start|>user\n" + message + "<|im_end|>\n<|im_start|>assistant\n": one user turn, then the
// start of the assistant's reply.
std::string chatml_user_turn(const std::string& message);

// Whether the tokenizer knows ChatML: it encodes <|im_start|> and <|im_end|> as one token each
// (special tokens), which a vocabulary trained without the template does not.
bool has_chatml_tokens(const Tokenizer& tok);

}  // namespace latte
