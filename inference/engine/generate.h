// Single-sequence text generation with llama2.c run.c semantics: the prompt is encoded with BOS
// (and run.c's dummy-prefix rule), prompt tokens are forced, then tokens are sampled until
// `steps` positions (prompt included) are done, BOS or EOS appears, or the context is full.
// Each new piece goes to on_piece as soon as it is decoded.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/model/transformer.h"
#include "core/tokenizer/tokenizer.h"
#include "inference/engine/sampler.h"

namespace latte {

struct GenerateParams {
  std::string prompt;
  int64_t steps = 256;  // positions including the prompt; 0 or more than the context: the context
  SamplingParams sampling;
  bool stop_at_eos = true;  // llama2.c stops only at BOS; chat models end turns with EOS
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_tokens = 0;
  double decode_seconds = 0;    // from the first sampled token on, as run.c times it
  int64_t decoded_tokens = 0;
};

// Drops single bytes that are neither printable nor whitespace, as run.c's safe_printf does, so a
// raw control byte from a byte-fallback piece never reaches the terminal.
std::string printable_piece(const std::string& piece);

GenerateResult generate(Transformer& model, const Tokenizer& tok, const GenerateParams& p,
                        const std::function<void(const std::string&)>& on_piece);

}  // namespace latte
