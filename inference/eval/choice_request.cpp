#include "inference/eval/choice_request.h"

#include "core/base/error.h"

namespace latte {

ChoiceRequestTokens encode_choice_request(const Tokenizer& tokenizer, const std::string& context,
                                          const std::string& continuation, BosRule bos) {
  std::string ctx = context, cont = continuation;
  const size_t kept = ctx.find_last_not_of(" \t\n\r\f\v");
  const size_t keep = kept == std::string::npos ? 0 : kept + 1;
  cont = ctx.substr(keep) + cont;
  ctx.resize(keep);

  const bool add_bos = tokenizer.bos_id() >= 0 && (bos == BosRule::always ||
                                                   (bos == BosRule::tokenizer && tokenizer.adds_bos_to_prompts()));
  ChoiceRequestTokens r;
  std::vector<int32_t> whole;
  if (ctx.empty()) {
    // The harness scores from its prefix token alone; with BOS that token is the BOS.
    const int32_t prefix = add_bos ? tokenizer.bos_id() : tokenizer.eos_id();
    LATTE_REQUIRE(prefix >= 0, ErrorCode::invalid_argument,
                  "an empty context needs an end-of-text or BOS token to score from, and this tokenizer has neither");
    r.context = {prefix};
    whole = tokenizer.encode(cont, false);
    r.continuation = whole;
    return r;
  }
  r.context = tokenizer.encode(ctx, add_bos);
  whole = tokenizer.encode(ctx + cont, add_bos);
  if (whole.size() > r.context.size())
    r.continuation.assign(whole.begin() + std::ptrdiff_t(r.context.size()), whole.end());
  return r;
}

}  // namespace latte
