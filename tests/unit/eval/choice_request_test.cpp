// encode_choice_request against lm-evaluation-harness's _encode_pair, with a toy tokenizer whose
// one merge (": " -> one token) crosses the context/continuation boundary.
#include <gtest/gtest.h>

#include "core/base/error.h"
#include "inference/eval/choice_request.h"

namespace latte {
namespace {

// One token per byte, except ": " which is token 300; BOS 256, EOS 257.
class ToyTokenizer : public Tokenizer {
 public:
  explicit ToyTokenizer(bool bos_on_prompts, bool has_bos = true) : bos_on_prompts_(bos_on_prompts), has_bos_(has_bos) {}
  int64_t vocab_size() const override { return 301; }
  int32_t bos_id() const override { return has_bos_ ? 256 : -1; }
  int32_t eos_id() const override { return 257; }
  bool adds_bos_to_prompts() const override { return bos_on_prompts_; }
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && has_bos_) ids.push_back(256);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == ':' && i + 1 < text.size() && text[i + 1] == ' ') {
        ids.push_back(300);
        ++i;
      } else {
        ids.push_back(int32_t(static_cast<unsigned char>(text[i])));
      }
    }
    return ids;
  }
  std::string decode_piece(int32_t, int32_t) const override { return ""; }
  std::string piece(int32_t) const override { return ""; }
  std::string id() const override { return "toy"; }

 private:
  bool bos_on_prompts_, has_bos_;
};

std::vector<int32_t> bytes(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

TEST(ChoiceRequest, ContinuationIsWholeMinusContextLength) {
  ToyTokenizer tok(false);
  // context "A:" -> [A, :]; whole "A: yes" -> [A, ": ", y, e, s]; continuation = whole[2:] =
  // [y, e, s]: the space went into the merged token and is not scored, as in the harness.
  ChoiceRequestTokens r = encode_choice_request(tok, "A:", " yes", BosRule::tokenizer);
  EXPECT_EQ(r.context, bytes("A:"));
  EXPECT_EQ(r.continuation, bytes("yes"));
}

TEST(ChoiceRequest, TrailingSpaceMovesToTheContinuation) {
  ToyTokenizer tok(false);
  // context "Q  " -> "Q" and continuation "  no": whole "Q  no" -> [Q, ' ', ' ', n, o].
  ChoiceRequestTokens r = encode_choice_request(tok, "Q  ", "no", BosRule::tokenizer);
  EXPECT_EQ(r.context, bytes("Q"));
  EXPECT_EQ(r.continuation, bytes("  no"));
}

TEST(ChoiceRequest, BosFollowsTheRule) {
  ToyTokenizer with(true), without(false);
  EXPECT_EQ(encode_choice_request(with, "Q", " a", BosRule::tokenizer).context, (std::vector<int32_t>{256, 'Q'}));
  EXPECT_EQ(encode_choice_request(without, "Q", " a", BosRule::tokenizer).context, bytes("Q"));
  EXPECT_EQ(encode_choice_request(without, "Q", " a", BosRule::always).context, (std::vector<int32_t>{256, 'Q'}));
  EXPECT_EQ(encode_choice_request(with, "Q", " a", BosRule::never).context, bytes("Q"));
  // The continuation never carries the BOS.
  EXPECT_EQ(encode_choice_request(with, "Q", " a", BosRule::tokenizer).continuation, bytes(" a"));
}

TEST(ChoiceRequest, EmptyContextScoresFromEndOfText) {
  ToyTokenizer tok(false);
  ChoiceRequestTokens r = encode_choice_request(tok, "", "hi", BosRule::tokenizer);
  EXPECT_EQ(r.context, (std::vector<int32_t>{257}));
  EXPECT_EQ(r.continuation, bytes("hi"));
  // Whitespace only is an empty context too, its spaces moving to the continuation.
  r = encode_choice_request(tok, " ", "x", BosRule::always);
  EXPECT_EQ(r.context, (std::vector<int32_t>{256}));
  EXPECT_EQ(r.continuation, bytes(" x"));
}

}  // namespace
}  // namespace latte
