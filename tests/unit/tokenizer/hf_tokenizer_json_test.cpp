// tokenizer.json reading details, write_hf_tokenizer_json round trips, and malformed files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/base/file_io.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/tokenizer_test_util.h"

namespace latte {
namespace {

using json = nlohmann::json;
using test::corpus_path;
using test::expect_error;
using test::fixture_path;
using test::read_file;
using test::TempDir;

const char* const kFixtures[] = {"bytelevel_gpt2", "bytelevel_smollm", "bytelevel_llama3", "spm_llama",
                                 "spm_metaspace"};

// Golden texts plus a stretch of each corpus.
std::vector<std::string> sample_texts() {
  std::vector<std::string> out;
  const json g = json::parse(read_file(fixture_path("spm_llama.golden.json")));
  for (const json& c : g["cases"]) out.push_back(c["text"]);
  out.push_back(read_file(corpus_path("tinyshakespeare.txt")).substr(50000, 20000));
  out.push_back(read_file(corpus_path("tinystories_train_head.txt")).substr(0, 20000));
  return out;
}

void expect_same_vocab(const BpeVocab& a, const BpeVocab& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.scores, b.scores);
  EXPECT_EQ(a.token_types, b.token_types);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.special_tokens, b.special_tokens);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.unk_id, b.unk_id);
  EXPECT_EQ(a.add_bos, b.add_bos);
  EXPECT_EQ(a.add_space_prefix, b.add_space_prefix);
  EXPECT_EQ(a.pre, b.pre);
  EXPECT_EQ(a.ignore_merges, b.ignore_merges);
  EXPECT_EQ(a.metaspace, b.metaspace);
  EXPECT_EQ(a.space_prefix_first_only, b.space_prefix_first_only);
  EXPECT_EQ(a.split_on_space, b.split_on_space);
}

void expect_same_encodings(const Tokenizer& a, const Tokenizer& b) {
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(a.bos_id(), b.bos_id());
  EXPECT_EQ(a.eos_id(), b.eos_id());
  for (const std::string& t : sample_texts()) {
    EXPECT_EQ(a.encode(t, false), b.encode(t, false)) << t;
    EXPECT_EQ(a.encode(t, true), b.encode(t, true)) << t;
    const std::vector<int32_t> ids = a.encode(t, true);
    EXPECT_EQ(a.decode(ids), b.decode(ids)) << t;
  }
}

TEST(WriteHfTokenizerJson, RoundTripsFixtures) {
  TempDir dir;
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    auto original = load_hf_tokenizer_json(fixture_path(std::string(name) + ".json"));
    const std::string out = dir.file(std::string(name) + ".tokenizer.json");
    write_hf_tokenizer_json(*original->bpe_vocab(), out);
    auto again = load_hf_tokenizer_json(out);
    expect_same_vocab(*original->bpe_vocab(), *again->bpe_vocab());
    expect_same_encodings(*original, *again);
    // Writing what was read gives the same file again.
    const std::string out2 = dir.file(std::string(name) + ".2.json");
    write_hf_tokenizer_json(*again->bpe_vocab(), out2);
    EXPECT_EQ(read_file(out), read_file(out2));
  }
}

// A GGUF "llama"-style vocabulary: scores and token types, no merges. The written file carries
// merges derived from the scores (for HF) and the scores themselves (for Latte).
BpeVocab scores_only_vocab() {
  auto hf = load_hf_tokenizer_json(fixture_path("spm_llama.json"));
  BpeVocab v = *hf->bpe_vocab();
  std::unordered_map<std::string, size_t> id_of;
  for (size_t i = 0; i < v.tokens.size(); ++i) id_of[v.tokens[i]] = i;
  v.scores.assign(v.tokens.size(), 0.0f);
  for (size_t r = 0; r < v.merges.size(); ++r) v.scores[id_of.at(v.merges[r].first + v.merges[r].second)] = -float(r);
  v.merges.clear();
  v.special_tokens.clear();
  v.token_types.assign(v.tokens.size(), 1);
  v.token_types[0] = 2;
  v.token_types[1] = v.token_types[2] = 3;
  for (size_t b = 0; b < 256; ++b) v.token_types[3 + b] = 6;
  v.pre = "default";
  return v;
}

TEST(WriteHfTokenizerJson, RoundTripsScoresOnlyVocab) {
  TempDir dir;
  auto original = make_bpe_tokenizer(scores_only_vocab(), "llama.gguf");
  const std::string out = dir.file("tokenizer.json");
  write_hf_tokenizer_json(*original->bpe_vocab(), out);
  auto again = load_hf_tokenizer_json(out);
  expect_same_vocab(*original->bpe_vocab(), *again->bpe_vocab());
  expect_same_encodings(*original, *again);

  const json j = json::parse(read_file(out));
  EXPECT_FALSE(j["model"]["merges"].empty());  // derived, so that HF can run the file
  EXPECT_TRUE(j["model"]["latte"]["merges_from_scores"].get<bool>());
  EXPECT_EQ(j["post_processor"]["type"], "TemplateProcessing");

  // Without Latte's extra object the file is an ordinary HF tokenizer.json: Latte then follows the
  // derived merges by rank, as HF does, and gets the same ids here.
  json plain = j;
  plain["model"].erase("latte");
  const std::string plain_path = dir.write("plain.json", plain.dump());
  auto hf_style = load_hf_tokenizer_json(plain_path);
  EXPECT_TRUE(hf_style->bpe_vocab()->scores.empty());
  for (const std::string& t : sample_texts()) EXPECT_EQ(hf_style->encode(t, true), original->encode(t, true)) << t;
}

TEST(WriteHfTokenizerJson, RefusesDuplicateTokens) {
  TempDir dir;
  BpeVocab v = *load_hf_tokenizer_json(fixture_path("bytelevel_gpt2.json"))->bpe_vocab();
  v.tokens[500] = v.tokens[501];
  v.merges.clear();
  const std::string out = dir.file("dup.json");
  expect_error([&] { write_hf_tokenizer_json(v, out); }, ErrorCode::unsupported, out, "appears twice");
  EXPECT_FALSE(file_exists(out));
}

TEST(HfTokenizerJson, MergesAsStrings) {
  // tokenizers < 0.20 wrote merges as "a b" strings.
  TempDir dir;
  for (const char* name : {"bytelevel_gpt2", "spm_llama"}) {
    json j = json::parse(read_file(fixture_path(std::string(name) + ".json")));
    json merges = json::array();
    for (const json& m : j["model"]["merges"])
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    j["model"]["merges"] = merges;
    const std::string path = dir.write(std::string(name) + ".json", j.dump());
    auto a = load_hf_tokenizer_json(fixture_path(std::string(name) + ".json"));
    auto b = load_hf_tokenizer_json(path);
    expect_same_vocab(*a->bpe_vocab(), *b->bpe_vocab());
    expect_same_encodings(*a, *b);
  }
}

TEST(HfTokenizerJson, TokenizerConfigNamesBosAndEos) {
  TempDir dir;
  const std::string path = dir.write("tokenizer.json", read_file(fixture_path("bytelevel_smollm.json")));
  EXPECT_EQ(load_tokenizer(path)->bos_id(), -1);
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": true})");
  auto t = load_tokenizer(path);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_TRUE(t->bpe_vocab()->add_bos);
  EXPECT_EQ(t->encode("hi", true).front(), 1);
}

TEST(HfTokenizerJson, BadFiles) {
  TempDir dir;
  const json good = json::parse(read_file(fixture_path("bytelevel_gpt2.json")));

  const std::string missing = dir.file("nope.json");
  expect_error([&] { load_hf_tokenizer_json(missing); }, ErrorCode::io, missing, "nope.json");

  const std::string empty = dir.write("empty.json", "");
  expect_error([&] { load_hf_tokenizer_json(empty); }, ErrorCode::bad_file, empty, "not valid JSON");

  const std::string broken = dir.write("broken.json", "{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\": 0,,}}}");
  expect_error([&] { load_tokenizer(broken); }, ErrorCode::bad_file, broken, "not valid JSON");

  const std::string array = dir.write("array.json", "[1, 2]");
  expect_error([&] { load_hf_tokenizer_json(array); }, ErrorCode::bad_file, array, "not a JSON object");

  json j = good;
  j["model"].erase("vocab");
  const std::string no_vocab = dir.write("no_vocab.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(no_vocab); }, ErrorCode::bad_file, no_vocab, "model.vocab");

  j = good;
  j.erase("model");
  const std::string no_model = dir.write("no_model.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(no_model); }, ErrorCode::bad_file, no_model, "\"model\"");

  j = good;
  j["model"]["type"] = "Unigram";
  const std::string unigram = dir.write("unigram.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(unigram); }, ErrorCode::unsupported, unigram, "Unigram");

  j = good;
  j["model"]["vocab"]["Ġthe"] = "x";
  const std::string bad_id = dir.write("bad_id.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(bad_id); }, ErrorCode::bad_file, bad_id, "not an integer id");

  j = good;
  j["model"]["vocab"].erase("Ġthe");
  const std::string hole = dir.write("hole.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(hole); }, ErrorCode::bad_file, hole, "");

  j = good;
  j["model"]["merges"].push_back(json::array({"zzz", "q"}));
  const std::string bad_merge = dir.write("bad_merge.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(bad_merge); }, ErrorCode::bad_file, bad_merge, "not in the vocabulary");

  j = good;
  j["model"]["merges"] = json::array({"a b c"});
  const std::string bad_merge2 = dir.write("bad_merge2.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(bad_merge2); }, ErrorCode::bad_file, bad_merge2, "a b c");

  j = good;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  const std::string ws = dir.write("ws.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(ws); }, ErrorCode::unsupported, ws, "Whitespace");

  j = good;
  j["normalizer"] = {{"type", "NFC"}};
  const std::string nfc = dir.write("nfc.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(nfc); }, ErrorCode::unsupported, nfc, "NFC");

  j = good;
  j["added_tokens"][0]["content"] = 7;
  const std::string wrong_type = dir.write("wrong_type.json", j.dump());
  expect_error([&] { load_hf_tokenizer_json(wrong_type); }, ErrorCode::bad_file, wrong_type, "malformed");
}

TEST(LoadTokenizer, DispatchesByName) {
  EXPECT_EQ(load_tokenizer(fixture_path("spm_llama.json"))->id(), "bpe-spm:819");
  EXPECT_EQ(load_tokenizer(fixture_path("bytelevel_gpt2.json"))->id(), "bpe-bytelevel:600");
  EXPECT_EQ(load_tokenizer(test::tok512_path())->id(), "llama2c:512");
  // A tokenizer.bin is not JSON and a tokenizer.json is not a llama2.c file: the name decides.
  TempDir dir;
  const std::string bin_as_json = dir.write("tokenizer.json", read_file(test::tok512_path()));
  EXPECT_THROW(load_tokenizer(bin_as_json), Error);
}

}  // namespace
}  // namespace latte
