// llama2.c tokenizer.bin (tok512 of stories260K) against run.c's encode/decode semantics.
#include <gtest/gtest.h>

#include <cstring>
#include <unordered_map>

#include "core/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/tokenizer_test_util.h"

namespace latte {
namespace {

using test::corpus_path;
using test::read_file;
using test::tok512_path;

const Tokenizer& tok512() {
  static std::unique_ptr<Tokenizer> t = load_llama2c_tokenizer(tok512_path(), 512);
  return *t;
}

// The stories of a TinyStories file: chunks between blank lines, skipping empty ones.
std::vector<std::string> stories(const std::string& file, size_t max_count) {
  const std::string text = read_file(corpus_path(file));
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size() && out.size() < max_count) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 2;
  }
  return out;
}

TEST(Llama2cTokenizer, LoadsTok512) {
  const Tokenizer& t = tok512();
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.id(), "llama2c:512");
  EXPECT_EQ(t.bpe_vocab(), nullptr);
  // Without an expected size the file's own count is used.
  EXPECT_EQ(load_llama2c_tokenizer(tok512_path())->vocab_size(), 512);
  EXPECT_EQ(load_tokenizer(tok512_path())->id(), "llama2c:512");
}

// Worked by hand from run.c's encode, with tok512's pieces and scores (score = -(id - 259)), and
// confirmed by the Python transliteration of run.c (make_tokenizer_fixtures.py --runc-expected):
//   "Lily" -> " " (410, the dummy prefix) L(438) i(417) l(421) y(422); the best-scoring pair whose
//   concatenation is a piece merges first: "il" (290, -31), then " L" (307, -48), "ily" (310, -51),
//   " Lily" (317, -58) -> [317].
//   "the cat" -> " " t h e " " c a t; " t" (259, -0) beats "he" (260, -1), then " the" (265),
//   " c" (280), "at" (294) -> [265, 280, 294].
TEST(Llama2cTokenizer, HandDerivedEncodings) {
  EXPECT_EQ(tok512().encode("Lily", false), (std::vector<int32_t>{317}));
  EXPECT_EQ(tok512().encode("the cat", false), (std::vector<int32_t>{265, 280, 294}));
  EXPECT_EQ(tok512().encode("the cat", true), (std::vector<int32_t>{1, 265, 280, 294}));
}

// Expected ids computed by an independent Python transliteration of run.c's encode (the quadratic
// merge loop over tok512.bin, BOS on), not by Latte:
//   python3 tests/reference/make_tokenizer_fixtures.py --runc-expected
TEST(Llama2cTokenizer, EncodingsMatchRunC) {
  struct Case {
    const char* text;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {"Once upon a time, there was a little girl named Lily.",
       {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426}},
      {"Spot. Spot saw the shiny car and said, \"Wow, Kitty, your car is so bright and clean!\"",
       {1,   301, 427, 309, 426, 301, 427, 309, 394, 265, 262, 415, 271, 422, 280, 295,
        269, 336, 432, 313, 448, 327, 432, 410, 462, 362, 422, 432, 364, 420, 280, 295,
        410, 293, 384, 268, 325, 428, 415, 413, 269, 280, 305, 303, 443, 436}},
      {"", {1}},
      {"Hello, world! 123", {1, 346, 306, 414, 432, 263, 304, 341, 443, 410, 475, 479, 472}},
      // Code points missing from the vocabulary fall back to their UTF-8 bytes (byte + 3).
      {"caf\xC3\xA9 \xF0\x9F\x98\x80 na\xC3\xAFve",
       {1, 280, 412, 431, 485, 410, 243, 162, 155, 131, 297, 412, 198, 178, 360}},
      {"First Citizen:\nBefore we proceed any further, hear me speak.",
       {1,   410, 453, 315, 356, 410, 457, 275, 417, 451, 302, 467, 13,  445, 411, 431, 414, 276, 382, 282, 420, 414,
        331, 266, 261, 416, 422, 272, 425, 420, 413, 386, 432, 281, 295, 284, 411, 262, 427, 411, 412, 433, 426}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(tok512().encode(c.text, true), c.ids) << c.text;
    // Without BOS: the same tokens, minus the leading 1 (run.c's merges never involve BOS here).
    std::vector<int32_t> no_bos(c.ids.begin() + 1, c.ids.end());
    EXPECT_EQ(tok512().encode(c.text, false), no_bos) << c.text;
  }
}

// run.c's own algorithm, quadratic as written there, to check the priority-queue version on long
// texts (the hand-picked cases above are short).
std::vector<int32_t> runc_encode_naive(const std::string& path, const std::string& text) {
  const std::string bytes = read_file(path);
  std::vector<std::string> vocab;
  std::vector<float> scores;
  size_t off = 4;
  while (off < bytes.size()) {
    float s;
    int32_t len;
    std::memcpy(&s, bytes.data() + off, 4);
    std::memcpy(&len, bytes.data() + off + 4, 4);
    off += 8;
    vocab.push_back(bytes.substr(off, size_t(len)));
    scores.push_back(s);
    off += size_t(len);
  }
  std::unordered_map<std::string, int32_t> lookup;
  for (size_t i = 0; i < vocab.size(); ++i) lookup.emplace(vocab[i], int32_t(i));
  std::vector<int32_t> tokens{1};
  if (!text.empty()) tokens.push_back(lookup.at(" "));
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t c = uint8_t(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf += char(c);
    const uint8_t next = i + 1 < text.size() ? uint8_t(text[i + 1]) : 0;
    if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
    auto it = lookup.find(buf);
    if (it != lookup.end()) {
      tokens.push_back(it->second);
    } else {
      for (char b : buf) tokens.push_back(int32_t(uint8_t(b)) + 3);
    }
    buf.clear();
  }
  while (true) {
    float best = -1e10f;
    int32_t best_id = -1, best_idx = -1;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      auto it = lookup.find(vocab[tokens[i]] + vocab[tokens[i + 1]]);
      if (it != lookup.end() && scores[it->second] > best) {
        best = scores[it->second];
        best_id = it->second;
        best_idx = int32_t(i);
      }
    }
    if (best_idx < 0) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  return tokens;
}

TEST(Llama2cTokenizer, MatchesQuadraticRunCLoopOnStories) {
  std::vector<std::string> texts = stories("tinystories_valid_head.txt", 40);
  // Mojibake, stray continuation bytes and a truncated sequence: run.c groups these its own way.
  texts.push_back("She said \xC3\xA2\xE2\x82\xAC\xC5\x93hi\xC3\xA2\xE2\x82\xAC\xC2\x9D.");
  texts.push_back("bad \x80\x80\x80\x80\x80 bytes \xE2\x82 end \xF0\x9F");
  texts.push_back(read_file(corpus_path("tinyshakespeare.txt")).substr(0, 3000));
  for (const std::string& t : texts) EXPECT_EQ(tok512().encode(t, true), runc_encode_naive(tok512_path(), t)) << t;
}

TEST(Llama2cTokenizer, RoundTripsStories) {
  for (const char* file : {"tinystories_valid_head.txt", "tinystories_train_head.txt"}) {
    const std::vector<std::string> ss = stories(file, 300);
    ASSERT_GE(ss.size(), 300u);
    for (const std::string& s : ss) {
      EXPECT_EQ(tok512().decode(tok512().encode(s, true)), s);
      EXPECT_EQ(tok512().decode(tok512().encode(s, false)), s);
    }
  }
}

TEST(Llama2cTokenizer, RoundTripsShakespeare) {
  const std::string text = read_file(corpus_path("tinyshakespeare.txt")).substr(0, 20000);
  const std::vector<int32_t> ids = tok512().encode(text, true);
  EXPECT_LT(ids.size(), text.size());  // merges happened
  EXPECT_EQ(tok512().decode(ids), text);
}

TEST(Llama2cTokenizer, DecodePieceFollowsRunC) {
  const Tokenizer& t = tok512();
  EXPECT_EQ(t.decode_piece(1, 403), "Once");    // after BOS the leading space goes
  EXPECT_EQ(t.decode_piece(-1, 403), "Once");   // so it does at the start of a BOS-less sequence
  EXPECT_EQ(t.decode_piece(403, 407), " upon");  // elsewhere it stays
  EXPECT_EQ(t.decode_piece(403, 13), "\n");     // <0x0A> is a raw byte
  EXPECT_EQ(t.decode_piece(1, 3 + 0x20), " ");  // <0x20>: the byte, not a piece starting with space
  EXPECT_EQ(t.decode_piece(403, 243), std::string("\xF0"));
  EXPECT_EQ(t.decode_piece(-1, 1), "");  // BOS and EOS are not text
  EXPECT_EQ(t.decode_piece(5, 2), "");
  EXPECT_EQ(t.decode_piece(5, 0), "<unk>");
  EXPECT_THROW(t.decode_piece(5, 512), Error);
  EXPECT_THROW(t.decode_piece(5, -3), Error);
}

// piece() is the stored vocabulary entry: leading space and byte-fallback form kept.
TEST(Llama2cTokenizer, PieceIsTheStoredEntry) {
  const Tokenizer& t = tok512();
  EXPECT_EQ(t.piece(403), " Once");
  EXPECT_EQ(t.piece(13), "<0x0A>");
  EXPECT_EQ(t.piece(0), "<unk>");
  EXPECT_THROW(t.piece(512), Error);
  EXPECT_THROW(t.piece(-1), Error);
}

TEST(Llama2cTokenizer, BadFiles) {
  test::TempDir dir;
  const std::string good = read_file(tok512_path());
  using test::expect_error;

  const std::string missing = dir.file("missing.bin");
  expect_error([&] { load_llama2c_tokenizer(missing); }, ErrorCode::io, missing, "cannot open");

  const std::string empty = dir.write("empty.bin", "");
  expect_error([&] { load_llama2c_tokenizer(empty); }, ErrorCode::bad_file, empty, "truncated");

  // Cut inside the last token's bytes, and inside a token's header.
  const std::string cut = dir.write("cut.bin", good.substr(0, good.size() - 2));
  expect_error([&] { load_llama2c_tokenizer(cut, 512); }, ErrorCode::bad_file, cut, "truncated");
  const std::string cut2 = dir.write("cut2.bin", good.substr(0, 4 + 8 + 5 + 6));
  expect_error([&] { load_llama2c_tokenizer(cut2); }, ErrorCode::bad_file, cut2, "truncated");

  expect_error([&] { load_llama2c_tokenizer(tok512_path(), 32000); }, ErrorCode::bad_file, tok512_path(),
               "holds 512 tokens, the model's vocabulary has 32000");

  // Token 0's length field set to -1.
  std::string neg = good;
  const int32_t minus_one = -1;
  std::memcpy(neg.data() + 4 + 4, &minus_one, 4);
  const std::string negp = dir.write("neg.bin", neg);
  expect_error([&] { load_llama2c_tokenizer(negp); }, ErrorCode::bad_file, negp, "negative length");

  std::string negmax = good;
  std::memcpy(negmax.data(), &minus_one, 4);
  const std::string negmaxp = dir.write("negmax.bin", negmax);
  expect_error([&] { load_llama2c_tokenizer(negmaxp); }, ErrorCode::bad_file, negmaxp, "negative max_token_length");

  // Only the first 100 tokens: too few for run.c's byte fallback.
  size_t off = 4;
  for (int i = 0; i < 100; ++i) {
    int32_t len;
    std::memcpy(&len, good.data() + off + 4, 4);
    off += 8 + size_t(len);
  }
  const std::string small = dir.write("small.bin", good.substr(0, off));
  expect_error([&] { load_llama2c_tokenizer(small); }, ErrorCode::bad_file, small, "holds 100 tokens");
}

}  // namespace
}  // namespace latte
