// How one (context, continuation) request becomes tokens, exactly as lm-evaluation-harness's
// HFLM._encode_pair does it for a causal model:
//   - trailing whitespace of the context moves to the front of the continuation;
//   - context tokens = encode(context); whole = encode(context + continuation);
//     continuation tokens = whole[len(context tokens):]
//     (so a merge across the boundary is charged to the continuation, never dropped);
//   - an empty context is replaced by the end-of-text token (the harness's prefix_token_id).
// BOS: the harness's HFLM encodes without special tokens unless add_bos_token is set (default
// off), so SmolLM2's byte-level vocabulary, which asks for no BOS, gets none either way. Llama2.c
// models were trained with BOS before every text, so Latte's default follows the tokenizer
// (Tokenizer::adds_bos_to_prompts); BosRule overrides it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace latte {

enum class BosRule { tokenizer, always, never };

struct ChoiceRequestTokens {
  std::vector<int32_t> context;       // never empty
  std::vector<int32_t> continuation;  // never empty for a non-empty continuation string
};

ChoiceRequestTokens encode_choice_request(const Tokenizer& tokenizer, const std::string& context,
                                          const std::string& continuation, BosRule bos);

}  // namespace latte
