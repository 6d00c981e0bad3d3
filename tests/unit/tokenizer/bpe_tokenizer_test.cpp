// BPE tokenizers against the Hugging Face `tokenizers` library: the golden files in
// tests/data/tokenizers/ hold the ids that library gave (tests/reference/make_tokenizer_fixtures.py).
// Also the GGUF path: a BpeVocab filled the way a GGUF loader fills it from tokenizer.ggml.*.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/unicode.h"
#include "tests/unit/tokenizer/tokenizer_test_util.h"

namespace latte {
namespace {

using json = nlohmann::json;
using test::corpus_path;
using test::fixture_path;
using test::read_file;

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids, ids_with_special;
  std::string decoded;
};

std::vector<GoldenCase> golden(const std::string& name) {
  const json j = json::parse(read_file(fixture_path(name + ".golden.json")));
  std::vector<GoldenCase> out;
  for (const json& c : j.at("cases"))
    out.push_back({c.at("text"), c.at("ids"), c.at("ids_with_special"), c.at("decoded")});
  EXPECT_GE(out.size(), 45u);
  return out;
}

bool contains_token(const Tokenizer& t, const std::string& text, int32_t id) {
  if (id < 0) return false;
  return text.find(t.bpe_vocab()->tokens[size_t(id)]) != std::string::npos;
}

// Every golden case: ids with and without special tokens, and decoding. HF decodes BOS/EOS as
// their text while Latte's decode leaves them out, so decoding is compared on texts without them.
// Decoding gives back the text itself unless the encoder added a dummy prefix in the middle (after
// a special token), Metaspace left one out (text starting with a space) or the text holds a literal
// "▁": sentencepiece-style decoding is lossy there, in HF too.
void check_golden(const Tokenizer& t, const std::string& name) {
  const BpeVocab& v = *t.bpe_vocab();
  int checked_decode = 0, checked_round_trip = 0;
  for (const GoldenCase& c : golden(name)) {
    EXPECT_EQ(t.encode(c.text, false), c.ids) << name << ": " << c.text;
    EXPECT_EQ(t.encode(c.text, true), c.ids_with_special) << name << ": " << c.text;
    if (contains_token(t, c.text, t.bos_id()) || contains_token(t, c.text, t.eos_id())) continue;
    EXPECT_EQ(t.decode(c.ids), c.decoded) << name << ": " << c.text;
    ++checked_decode;
    bool lossy = false;
    if (v.kind == BpeVocab::Kind::sentencepiece) {
      for (const std::string& s : v.special_tokens) lossy = lossy || c.text.find(s) != std::string::npos;
      lossy = lossy || c.text.find("\xE2\x96\x81") != std::string::npos;  // a literal "▁" decodes as a space
      lossy = lossy || (v.metaspace && !c.text.empty() && c.text[0] == ' ');
    }
    if (!lossy) {
      EXPECT_EQ(t.decode(c.ids), c.text) << name << ": " << c.text;
      ++checked_round_trip;
    }
  }
  EXPECT_GE(checked_decode, 40);
  EXPECT_GE(checked_round_trip, 35);
}

class HfGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(HfGolden, ReproducesTokenizersLibrary) {
  const std::string name = GetParam();
  const std::unique_ptr<Tokenizer> t = load_tokenizer(fixture_path(name + ".json"));
  check_golden(*t, name);
}

TEST_P(HfGolden, RoundTripsCorpora) {
  const std::string name = GetParam();
  const std::unique_ptr<Tokenizer> t = load_hf_tokenizer_json(fixture_path(name + ".json"));
  const std::string shakespeare = read_file(corpus_path("tinyshakespeare.txt"));
  const std::vector<int32_t> ids = t->encode(shakespeare, false);
  EXPECT_LT(ids.size(), shakespeare.size() / 2);  // trained on it: well compressed
  EXPECT_EQ(t->decode(ids), shakespeare);
  const std::string stories = read_file(corpus_path("tinystories_valid_head.txt")).substr(0, 200000);
  EXPECT_EQ(t->decode(t->encode(stories, true)), stories);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGolden,
                         ::testing::Values("bytelevel_gpt2", "bytelevel_smollm", "bytelevel_llama3", "spm_llama",
                                           "spm_metaspace"));

TEST(HfTokenizerJson, ReadsFixtureSettings) {
  auto gpt2 = load_hf_tokenizer_json(fixture_path("bytelevel_gpt2.json"));
  const BpeVocab* v = gpt2->bpe_vocab();
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->kind, BpeVocab::Kind::byte_level);
  EXPECT_EQ(v->pre, "gpt2");
  EXPECT_EQ(gpt2->vocab_size(), 600);
  EXPECT_EQ(gpt2->id(), "bpe-bytelevel:600");
  EXPECT_EQ(gpt2->bos_id(), -1);
  EXPECT_EQ(gpt2->eos_id(), 0);  // <|endoftext|>
  EXPECT_FALSE(v->add_bos);
  EXPECT_EQ(v->special_tokens, (std::vector<std::string>{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}));

  EXPECT_EQ(load_hf_tokenizer_json(fixture_path("bytelevel_smollm.json"))->bpe_vocab()->pre, "smollm");
  auto llama3 = load_hf_tokenizer_json(fixture_path("bytelevel_llama3.json"));
  EXPECT_EQ(llama3->bpe_vocab()->pre, "llama3");
  EXPECT_TRUE(llama3->bpe_vocab()->ignore_merges);
  EXPECT_TRUE(llama3->bpe_vocab()->add_bos);
  EXPECT_EQ(llama3->bos_id(), 0);
  EXPECT_EQ(llama3->eos_id(), 1);

  auto spm = load_hf_tokenizer_json(fixture_path("spm_llama.json"));
  v = spm->bpe_vocab();
  EXPECT_EQ(v->kind, BpeVocab::Kind::sentencepiece);
  EXPECT_EQ(spm->id(), "bpe-spm:819");
  EXPECT_TRUE(v->add_bos);
  EXPECT_TRUE(v->add_space_prefix);
  EXPECT_FALSE(v->space_prefix_first_only);
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->eos_id(), 2);
  EXPECT_EQ(v->unk_id, 0);
  auto meta = load_hf_tokenizer_json(fixture_path("spm_metaspace.json"));
  EXPECT_TRUE(meta->bpe_vocab()->metaspace);
  EXPECT_TRUE(meta->bpe_vocab()->space_prefix_first_only);
  EXPECT_FALSE(meta->bpe_vocab()->split_on_space);
}

TEST(BpeTokenizer, SentencepieceDecodePiece) {
  auto t = load_hf_tokenizer_json(fixture_path("spm_llama.json"));
  const std::vector<int32_t> ids = t->encode("Hello world", false);
  ASSERT_GE(ids.size(), 2u);
  const std::string first = t->bpe_vocab()->tokens[ids[0]];
  ASSERT_EQ(first.substr(0, 3), "\xE2\x96\x81");  // starts with the dummy prefix "▁"
  EXPECT_EQ(t->decode_piece(-1, ids[0]), first.substr(3));  // dropped at the start
  EXPECT_EQ(t->decode_piece(1, ids[0]), first.substr(3));   // and after BOS
  EXPECT_EQ(t->decode_piece(ids[1], ids[0]), " " + first.substr(3));
  EXPECT_EQ(t->decode_piece(-1, 3 + 0x41), "A");  // <0x41>
  EXPECT_EQ(t->decode_piece(-1, 3 + 0x20), " ");  // a byte token is never stripped
  EXPECT_EQ(t->decode_piece(-1, 1), "");          // BOS
  EXPECT_EQ(t->decode_piece(-1, 2), "");          // EOS
  EXPECT_THROW(t->decode_piece(-1, 819), Error);
  // piece(): the stored entry, dummy prefix and byte-fallback form kept.
  EXPECT_EQ(t->piece(ids[0]), first);
  EXPECT_EQ(t->piece(3 + 0x41), "<0x41>");
  EXPECT_THROW(t->piece(819), Error);
}

// --- The GGUF path -------------------------------------------------------------------------------

// What a GGUF loader builds from a "gpt2" model (SmolLM2): tokens and "a b" merges as stored,
// token types (3 for control tokens), no explicit special list, add_space_prefix left at its
// default, pre from tokenizer.ggml.pre.
BpeVocab gguf_gpt2_from_fixture(const std::string& name, const std::string& pre) {
  const json j = json::parse(read_file(fixture_path(name + ".json")));
  BpeVocab v;
  v.kind = BpeVocab::Kind::byte_level;
  v.tokens.resize(j["model"]["vocab"].size());
  for (const auto& [tok, id] : j["model"]["vocab"].items()) v.tokens[id.get<size_t>()] = tok;
  v.token_types.assign(v.tokens.size(), 1);
  for (const json& a : j["added_tokens"]) v.token_types[a["id"].get<size_t>()] = 3;
  for (const json& m : j["model"]["merges"]) {
    const std::string s = m[0].get<std::string>() + " " + m[1].get<std::string>();  // GGUF stores "a b"
    const size_t sp = s.find(' ');
    v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
  }
  v.eos_id = 0;
  v.pre = pre;
  return v;
}

TEST(GgufVocab, Gpt2SmolLM) {
  auto t = make_bpe_tokenizer(gguf_gpt2_from_fixture("bytelevel_smollm", "smollm"), "smollm.gguf");
  // Control tokens (type 3) are matched verbatim, as the added tokens are in tokenizer.json.
  EXPECT_EQ(t->bpe_vocab()->special_tokens, (std::vector<std::string>{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}));
  check_golden(*t, "bytelevel_smollm");
  auto g = make_bpe_tokenizer(gguf_gpt2_from_fixture("bytelevel_gpt2", "gpt-2"), "gpt2.gguf");
  check_golden(*g, "bytelevel_gpt2");
  auto l3 = make_bpe_tokenizer(gguf_gpt2_from_fixture("bytelevel_llama3", "llama-bpe"), "llama3.gguf");
  EXPECT_TRUE(l3->bpe_vocab()->ignore_merges);  // implied by the Llama 3 pre-tokenizer
  for (const GoldenCase& c : golden("bytelevel_llama3")) EXPECT_EQ(l3->encode(c.text, false), c.ids) << c.text;
}

TEST(GgufVocab, UnknownPreTokenizerIsRefused) {
  BpeVocab v = gguf_gpt2_from_fixture("bytelevel_gpt2", "qwen2");
  test::expect_error([&] { make_bpe_tokenizer(v, "q.gguf"); }, ErrorCode::unsupported, "q.gguf", "qwen2");
  EXPECT_FALSE(is_supported_bpe_pre("qwen2"));
  EXPECT_TRUE(is_supported_bpe_pre("smollm"));
}

// What a GGUF loader builds from a "llama" model: "▁" pieces with scores, token types (2 unknown,
// 3 control, 6 byte), no merges. The scores come from the fixture's merge ranks (a piece made by
// merge r scores -r), the relation sentencepiece's own BPE scores have to merge order.
BpeVocab gguf_llama_from_fixture(const std::string& name) {
  const json j = json::parse(read_file(fixture_path(name + ".json")));
  BpeVocab v;
  v.kind = BpeVocab::Kind::sentencepiece;
  v.tokens.resize(j["model"]["vocab"].size());
  for (const auto& [tok, id] : j["model"]["vocab"].items()) v.tokens[id.get<size_t>()] = tok;
  std::unordered_map<std::string, size_t> id_of;
  for (size_t i = 0; i < v.tokens.size(); ++i) id_of[v.tokens[i]] = i;
  v.scores.assign(v.tokens.size(), 0.0f);
  int rank = 0;
  for (const json& m : j["model"]["merges"]) {
    const size_t id = id_of.at(m[0].get<std::string>() + m[1].get<std::string>());
    v.scores[id] = -float(rank++);
  }
  v.token_types.assign(v.tokens.size(), 1);
  v.token_types[0] = 2;
  v.token_types[1] = v.token_types[2] = 3;
  for (int b = 0; b < 256; ++b) v.token_types[size_t(3 + b)] = 6;
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  v.pre = "default";
  return v;
}

TEST(GgufVocab, LlamaScoresMatchRankedMerges) {
  auto t = make_bpe_tokenizer(gguf_llama_from_fixture("spm_llama"), "llama.gguf");
  EXPECT_EQ(t->bpe_vocab()->special_tokens, (std::vector<std::string>{"<unk>", "<s>", "</s>"}));
  check_golden(*t, "spm_llama");
  const std::string shakespeare = read_file(corpus_path("tinyshakespeare.txt")).substr(0, 100000);
  auto hf = load_hf_tokenizer_json(fixture_path("spm_llama.json"));
  EXPECT_EQ(t->encode(shakespeare, true), hf->encode(shakespeare, true));
}

// llama.cpp's sentencepiece rule on a vocabulary made by hand: the pair whose concatenation scores
// highest merges first, leftmost on ties, and characters without a piece become <0xXX> tokens.
TEST(GgufVocab, LlamaScoreRuleByHand) {
  BpeVocab v;
  v.kind = BpeVocab::Kind::sentencepiece;
  v.tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
  }
  const int32_t base = int32_t(v.tokens.size());
  for (const char* p : {"\xE2\x96\x81", "a", "b", "ab", "ba", "\xE2\x96\x81" "a", "aa"}) v.tokens.push_back(p);
  v.scores.assign(v.tokens.size(), 0.0f);
  v.scores[size_t(base + 3)] = -2.0f;  // "ab"
  v.scores[size_t(base + 4)] = -1.0f;  // "ba" beats "ab"
  v.scores[size_t(base + 5)] = -3.0f;  // "▁a"
  v.scores[size_t(base + 6)] = -1.0f;  // "aa", ties with "ba"
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  auto t = make_bpe_tokenizer(v, "hand.gguf");
  const int32_t sp = base, a = base + 1, b = base + 2, ab = base + 3, ba = base + 4, sa = base + 5, aa = base + 6;
  (void)b;
  (void)ab;
  // "▁aba": "ba" (-1) first -> ▁ a ba; then "▁a" (-3) -> ▁a ba.
  EXPECT_EQ(t->encode("aba", false), (std::vector<int32_t>{sa, ba}));
  // "▁aaa": "aa" twice possible at the same score: the leftmost wins -> ▁ aa a; then "▁a"? no:
  // "▁" + "aa" is not a piece, so ▁ aa a stays.
  EXPECT_EQ(t->encode("aaa", false), (std::vector<int32_t>{sp, aa, a}));
  // "c" has no piece: its byte. "é" has none either: two bytes.
  EXPECT_EQ(t->encode("c\xC3\xA9", false), (std::vector<int32_t>{sp, 3 + 'c', 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->decode(t->encode("c\xC3\xA9 aba", true)), "c\xC3\xA9 aba");
}

// A pair listed twice in merges takes its last rank, as HF's merge map does: with merges
// (a b), (b c), (a b) the tokenizers library (0.23.3) encodes "abc" as [a, bc].
TEST(BpeTokenizer, DuplicateMergeTakesLastRank) {
  BpeVocab v;
  v.kind = BpeVocab::Kind::byte_level;
  v.tokens = {"a", "b", "c", "ab", "bc"};
  v.merges = {{"a", "b"}, {"b", "c"}, {"a", "b"}};
  EXPECT_EQ(make_bpe_tokenizer(v, "dup")->encode("abc", false), (std::vector<int32_t>{0, 4}));
  v.merges = {{"a", "b"}, {"b", "c"}};
  EXPECT_EQ(make_bpe_tokenizer(v, "dup")->encode("abc", false), (std::vector<int32_t>{3, 2}));
}

// --- Pre-tokenizer scanners ------------------------------------------------------------------------

std::vector<std::string> pieces(unicode::PreTokenizer k, const std::string& s) {
  std::vector<std::string> out;
  for (auto sp : unicode::pre_tokenize(k, s)) out.push_back(s.substr(sp.begin, sp.size));
  return out;
}

TEST(PreTokenizer, Gpt2Regex) {
  using V = std::vector<std::string>;
  const auto k = unicode::PreTokenizer::gpt2;
  EXPECT_EQ(pieces(k, "Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces(k, "I'm  here!!\n"), (V{"I", "'m", " ", " here", "!!", "\n"}));
  EXPECT_EQ(pieces(k, "a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(pieces(k, "x 123 4"), (V{"x", " 123", " 4"}));
  EXPECT_EQ(pieces(k, "caf\xC3\xA9 \xCE\xB1\xCE\xB2"), (V{"caf\xC3\xA9", " \xCE\xB1\xCE\xB2"}));
  EXPECT_EQ(pieces(k, "end  "), (V{"end", "  "}));
  EXPECT_EQ(pieces(k, "bad\xFF\xFEx"), (V{"bad", "\xFF\xFE", "x"}));  // invalid bytes are "other"
  EXPECT_EQ(pieces(unicode::PreTokenizer::smollm, "x 123"), (V{"x", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces(unicode::PreTokenizer::llama3, "Hello 12345 world\n\n  x"),
            (V{"Hello", " ", "123", "45", " world", "\n\n", " ", " x"}));
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::is_letter('a'));
  EXPECT_TRUE(unicode::is_letter(0x4E2D));   // 中
  EXPECT_TRUE(unicode::is_letter(0x0416));   // Ж
  EXPECT_FALSE(unicode::is_letter(0x0301));  // combining acute (Mn)
  EXPECT_TRUE(unicode::is_number(0x0663));   // Arabic-Indic three
  EXPECT_TRUE(unicode::is_number(0x00BD));   // ½ (No)
  EXPECT_TRUE(unicode::is_space(0x3000));
  EXPECT_FALSE(unicode::is_space(0x200B));  // zero width space is not White_Space
  EXPECT_EQ(unicode::byte_to_unicode(' '), "\xC4\xA0");  // Ġ
  EXPECT_EQ(unicode::unicode_to_byte(0x120), ' ');
}

}  // namespace
}  // namespace latte
