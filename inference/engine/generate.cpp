#include "inference/engine/generate.h"

#include <cctype>
#include <chrono>

namespace latte {

std::string printable_piece(const std::string& piece) {
  if (piece.size() == 1) {
    unsigned char b = static_cast<unsigned char>(piece[0]);
    if (!(std::isprint(b) || std::isspace(b))) return "";
  }
  return piece;
}

GenerateResult generate(Transformer& model, const Tokenizer& tok, const GenerateParams& p,
                        const std::function<void(const std::string&)>& on_piece) {
  const ModelConfig& c = model.config();
  LATTE_REQUIRE(tok.vocab_size() <= c.vocab_size, ErrorCode::invalid_argument, "the tokenizer has ",
                tok.vocab_size(), " tokens but the model only ", c.vocab_size);
  GenerateResult r;
  std::vector<int32_t> prompt = tok.encode(p.prompt, tok.adds_bos_to_prompts());
  LATTE_REQUIRE(!prompt.empty(), ErrorCode::invalid_argument,
                "the prompt is empty and this tokenizer adds no BOS: give a prompt (-i TEXT)");
  int64_t steps = (p.steps <= 0 || p.steps > c.max_seq_len) ? c.max_seq_len : p.steps;
  LATTE_REQUIRE(int64_t(prompt.size()) <= steps, ErrorCode::invalid_argument, "the prompt is ", prompt.size(),
                " tokens, more than the ", steps, " positions allowed (context ", c.max_seq_len, ")");
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(p.sampling);
  KvCache cache = model.make_cache(1, steps);  // in the model's backend memory

  // Prefill all prompt tokens but the last in one pass; run.c feeds them one at a time, which
  // computes the same cache entries (their logits are never used).
  if (prompt.size() > 1) {
    std::span<const int32_t> head(prompt.data(), prompt.size() - 1);
    model.forward(head, 1, cache, LogitsFor::last_position);
  }
  // Echo the prompt as run.c does; the first token's text shows only when it is not BOS.
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (i == 0 && prompt[0] == tok.bos_id()) continue;
    on_piece(printable_piece(tok.decode_piece(i == 0 ? -1 : prompt[i - 1], prompt[i])));
  }
  r.tokens = prompt;
  int32_t token = prompt.back();
  auto start = std::chrono::steady_clock::now();
  while (cache.length < steps) {
    // The logits live in the backend's memory; the sampler reads them on the host.
    Tensor logits = model.backend().to_host(
        model.forward(std::span<const int32_t>(&token, 1), 1, cache, LogitsFor::last_position));
    int32_t next = sampler.sample(std::span<const float>(logits.f32(), size_t(c.vocab_size)));
    if (r.decoded_tokens == 0) start = std::chrono::steady_clock::now();
    ++r.decoded_tokens;
    if (next == tok.bos_id()) break;  // run.c: BOS delimits sequences
    if (p.stop_at_eos && next == tok.eos_id() && tok.eos_id() >= 0) break;
    on_piece(printable_piece(tok.decode_piece(token, next)));
    r.tokens.push_back(next);
    token = next;
  }
  r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace latte
