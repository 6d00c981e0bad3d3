// Hugging Face tokenizer.json <-> BpeVocab.
//
// Only the configurations Llama-family models ship are accepted; anything else (another model type,
// a normalizer or pre-tokenizer Latte does not implement) is refused with an error naming the file,
// because tokenizing differently from the model's training would fail silently later.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "core/base/error.h"
#include "core/base/file_io.h"
#include "core/base/json_integer.h"
#include "core/tokenizer/tokenizer.h"

namespace latte {

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kMetaspace = "\xE2\x96\x81";  // "▁"
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Fields a plain tokenizer.json cannot hold (scores and token types from GGUF, the exact BOS/EOS
// ids, the pre-tokenizer's name) live in this object inside "model": the `tokenizers` library
// ignores unknown keys there (it rejects them at the top level), so the file stays loadable by HF.
constexpr const char* kLatteKey = "latte";

// A one-line summary of a JSON value for error messages.
std::string brief(const json& j) {
  std::string s = j.dump();
  if (s.size() > 160) s = s.substr(0, 157) + "...";
  return s;
}

std::string type_of(const json& j) { return j.is_object() ? j.value("type", std::string()) : std::string(); }

// The steps of a Sequence (normalizers / pretokenizers / decoders / processors), or the value
// itself when it is a single step; empty for null.
std::vector<json> steps(const json& j, const char* list_key) {
  if (j.is_null()) return {};
  if (type_of(j) == "Sequence" && j.contains(list_key) && j[list_key].is_array())
    return j[list_key].get<std::vector<json>>();
  return {j};
}

bool is_replace(const json& j, const std::string& from, const std::string& to) {
  if (type_of(j) != "Replace") return false;
  const json& pat = j.value("pattern", json());
  return pat.is_object() && pat.value("String", std::string("\x01")) == from && j.value("content", std::string()) == to;
}

std::string token_content(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content")) return j["content"].get<std::string>();
  return {};
}

struct Parsed {
  BpeVocab vocab;
  std::optional<int32_t> template_bos;  // from the post_processor's TemplateProcessing
};

void parse_byte_level_pre(const json& pre, BpeVocab& v, const std::string& path) {
  auto byte_level_step = [&](const json& j, bool want_regex) {
    if (type_of(j) != "ByteLevel") return false;
    LATTE_REQUIRE(!j.value("add_prefix_space", false), ErrorCode::unsupported, path,
                  ": ByteLevel pre-tokenizer with add_prefix_space=true is not supported");
    return j.value("use_regex", true) == want_regex;
  };
  const std::vector<json> s = steps(pre, "pretokenizers");
  if (s.size() == 1 && byte_level_step(s[0], true)) {
    v.pre = "gpt2";
    return;
  }
  if (s.size() == 2 && type_of(s[0]) == "Digits" && s[0].value("individual_digits", false) &&
      byte_level_step(s[1], true)) {
    v.pre = "smollm";
    return;
  }
  if (s.size() == 2 && type_of(s[0]) == "Split" && byte_level_step(s[1], false)) {
    const json& pat = s[0].value("pattern", json());
    if (pat.is_object() && pat.value("Regex", std::string()) == kLlama3Regex &&
        s[0].value("behavior", std::string()) == "Isolated" && !s[0].value("invert", false)) {
      v.pre = "llama3";
      return;
    }
  }
  fail(ErrorCode::unsupported, path, ": unsupported byte-level pre_tokenizer ", brief(pre),
       " (supported: ByteLevel, Digits+ByteLevel, Llama 3 Split+ByteLevel)");
}

void parse_sentencepiece_spaces(const json& normalizer, const json& pre, BpeVocab& v, const std::string& path) {
  const std::vector<json> norm = steps(normalizer, "normalizers");
  const std::vector<json> pres = steps(pre, "pretokenizers");
  v.metaspace = false;
  v.space_prefix_first_only = false;
  v.split_on_space = false;
  // Llama 2 / Mistral v0.1 style: the normalizer does the spaces, no pre-tokenizer.
  if (pres.empty()) {
    if (norm.size() == 2 && type_of(norm[0]) == "Prepend" && norm[0].value("prepend", std::string()) == kMetaspace &&
        is_replace(norm[1], " ", kMetaspace)) {
      v.add_space_prefix = true;
      return;
    }
    if (norm.size() == 1 && is_replace(norm[0], " ", kMetaspace)) {
      v.add_space_prefix = false;
      return;
    }
  }
  // Newer files: a Metaspace pre-tokenizer and no normalizer.
  if (norm.empty() && pres.size() == 1 && type_of(pres[0]) == "Metaspace" &&
      pres[0].value("replacement", std::string()) == kMetaspace) {
    const json& m = pres[0];
    std::string scheme = m.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = m.value("add_prefix_space", true) ? "always" : "never";  // pre-0.15 files
    LATTE_REQUIRE(scheme == "always" || scheme == "first" || scheme == "never", ErrorCode::unsupported, path,
                  ": unsupported Metaspace prepend_scheme \"", scheme, "\"");
    v.metaspace = true;
    v.add_space_prefix = scheme != "never";
    v.space_prefix_first_only = scheme == "first";
    v.split_on_space = m.value("split", true);
    return;
  }
  fail(ErrorCode::unsupported, path, ": unsupported sentencepiece-style normalizer ", brief(normalizer),
       " with pre_tokenizer ", brief(pre), " (supported: Prepend+Replace, Replace, Metaspace)");
}

Parsed parse_tokenizer_json(const json& j, const std::string& path) {
  Parsed out;
  BpeVocab& v = out.vocab;
  LATTE_REQUIRE(j.is_object(), ErrorCode::bad_file, path, ": tokenizer.json is not a JSON object");
  LATTE_REQUIRE(j.contains("model") && j["model"].is_object(), ErrorCode::bad_file, path,
                ": tokenizer.json has no \"model\" object");
  const json& model = j["model"];
  const std::string mtype = model.value("type", std::string(model.contains("merges") ? "BPE" : ""));
  LATTE_REQUIRE(mtype == "BPE", ErrorCode::unsupported, path, ": tokenizer model type \"", mtype,
                "\" is not supported (only BPE)");
  LATTE_REQUIRE(model.contains("vocab") && model["vocab"].is_object(), ErrorCode::bad_file, path,
                ": tokenizer.json has no model.vocab object");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    LATTE_REQUIRE(!model.contains(k) || model[k].is_null() || model[k] == "", ErrorCode::unsupported, path,
                  ": BPE ", k, " is not supported");

  // Ids: model.vocab plus added_tokens, which may extend past it.
  std::unordered_map<int64_t, std::string> by_id;
  int64_t max_id = -1;
  auto put = [&](const std::string& tok, int64_t id, bool replace) {
    LATTE_REQUIRE(id >= 0 && id < INT32_MAX, ErrorCode::bad_file, path, ": token \"", tok, "\" has invalid id ", id);
    auto [it, fresh] = by_id.try_emplace(id, tok);
    if (!fresh && it->second != tok) {
      LATTE_REQUIRE(replace, ErrorCode::bad_file, path, ": id ", id, " is given to both \"", it->second, "\" and \"",
                    tok, "\"");
      it->second = tok;  // an added token's content is what HF uses for its id
    }
    max_id = std::max(max_id, id);
  };
  for (const auto& [tok, id] : model["vocab"].items()) {
    LATTE_REQUIRE(id.is_number_integer(), ErrorCode::bad_file, path, ": model.vocab[\"", tok,
                  "\"] is not an integer id");
    put(tok, id.get<int64_t>(), false);
  }
  std::vector<std::pair<std::string, int64_t>> added;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    for (const json& a : j["added_tokens"]) {
      LATTE_REQUIRE(a.is_object() && a.contains("id") && a.contains("content"), ErrorCode::bad_file, path,
                    ": added_tokens entry without id and content: ", brief(a));
      const std::optional<int64_t> id = json_integer<int64_t>(a["id"]);
      LATTE_REQUIRE(id.has_value(), ErrorCode::bad_file, path, ": added_tokens entry with id ", brief(a["id"]),
                    ", not an integer");
      added.emplace_back(a["content"].get<std::string>(), *id);
      put(added.back().first, added.back().second, true);
    }
  }
  LATTE_REQUIRE(max_id >= 0, ErrorCode::bad_file, path, ": model.vocab is empty");
  LATTE_REQUIRE(int64_t(by_id.size()) == max_id + 1, ErrorCode::bad_file, path, ": token ids are not contiguous (",
                by_id.size(), " tokens, highest id ", max_id, ")");
  v.tokens.resize(size_t(max_id + 1));
  for (auto& [id, tok] : by_id) v.tokens[size_t(id)] = std::move(tok);
  for (auto& [tok, id] : added) v.special_tokens.push_back(tok);

  // Merges: "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs.
  if (model.contains("merges") && !model["merges"].is_null()) {
    LATTE_REQUIRE(model["merges"].is_array(), ErrorCode::bad_file, path, ": model.merges is not an array");
    v.merges.reserve(model["merges"].size());
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        LATTE_REQUIRE(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, ErrorCode::bad_file, path,
                      ": merge \"", s, "\" is not two tokens separated by one space");
        v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else {
        LATTE_REQUIRE(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), ErrorCode::bad_file,
                      path, ": merge ", brief(m), " is not a pair of tokens");
        v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }
  }
  v.ignore_merges = model.value("ignore_merges", false);

  // Which kind: the decoder says it most directly; the pre-tokenizer and byte_fallback otherwise.
  const json normalizer = j.value("normalizer", json());
  const json pre = j.value("pre_tokenizer", json());
  const json decoder = j.value("decoder", json());
  auto mentions = [](const json& x, const char* type, const char* list_key) {
    for (const json& s : steps(x, list_key))
      if (type_of(s) == type) return true;
    return false;
  };
  bool byte_level = mentions(decoder, "ByteLevel", "decoders") || mentions(pre, "ByteLevel", "pretokenizers");
  bool spm = model.value("byte_fallback", false) || mentions(decoder, "Metaspace", "decoders") ||
             mentions(decoder, "ByteFallback", "decoders") || mentions(pre, "Metaspace", "pretokenizers");
  for (const json& s : steps(normalizer, "normalizers")) spm = spm || is_replace(s, " ", kMetaspace);
  LATTE_REQUIRE(byte_level != spm, ErrorCode::unsupported, path,
                byte_level ? ": tokenizer.json mixes byte-level and sentencepiece-style steps"
                           : ": tokenizer.json is neither byte-level (ByteLevel) nor sentencepiece-style "
                             "(Metaspace/▁)");
  if (byte_level) {
    v.kind = BpeVocab::Kind::byte_level;
    LATTE_REQUIRE(normalizer.is_null(), ErrorCode::unsupported, path, ": byte-level tokenizer with normalizer ",
                  brief(normalizer), " is not supported");
    parse_byte_level_pre(pre, v, path);
  } else {
    v.kind = BpeVocab::Kind::sentencepiece;
    LATTE_REQUIRE(model.value("byte_fallback", false), ErrorCode::unsupported, path,
                  ": sentencepiece-style BPE without byte_fallback is not supported");
    parse_sentencepiece_spaces(normalizer, pre, v, path);
  }

  auto id_of = [&](const std::string& tok) -> int32_t {
    for (size_t i = 0; i < v.tokens.size(); ++i)
      if (v.tokens[i] == tok) return int32_t(i);
    return -1;
  };
  if (model.contains("unk_token") && model["unk_token"].is_string())
    v.unk_id = id_of(model["unk_token"].get<std::string>());

  // add_bos: the post-processor template starts with a special token (Llama: "<s> $A").
  const json post = j.value("post_processor", json());
  for (const json& s : steps(post, "processors")) {
    if (type_of(s) != "TemplateProcessing" || !s.contains("single") || !s["single"].is_array() || s["single"].empty())
      continue;
    const json& first = s["single"][0];
    if (!first.is_object() || !first.contains("SpecialToken")) continue;
    const std::string name = first["SpecialToken"].value("id", std::string());
    int32_t id = -1;
    if (s.contains("special_tokens") && s["special_tokens"].contains(name)) {
      const json& ids = s["special_tokens"][name].value("ids", json::array());
      if (ids.is_array() && ids.size() == 1) id = json_integer<int32_t>(ids[0]).value_or(-1);
    }
    if (id < 0) id = id_of(name);
    LATTE_REQUIRE(id >= 0 && id < int32_t(v.tokens.size()), ErrorCode::bad_file, path, ": post_processor adds \"",
                  name, "\", which is not in the vocabulary");
    out.template_bos = id;
  }
  v.add_bos = out.template_bos.has_value();

  // tokenizer.json does not say which tokens are BOS and EOS (tokenizer_config.json does): the
  // template's token, else the names Llama-family vocabularies use.
  auto first_present = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (int32_t id = id_of(n); id >= 0) return id;
    return -1;
  };
  v.bos_id = out.template_bos ? *out.template_bos : first_present({"<s>", "<|begin_of_text|>", "<|startoftext|>"});
  v.eos_id = first_present({"</s>", "<|end_of_text|>", "<|endoftext|>"});

  // What write_hf_tokenizer_json recorded overrides the guesses above.
  if (model.contains(kLatteKey) && model[kLatteKey].is_object()) {
    const json& x = model[kLatteKey];
    v.bos_id = x.value("bos_id", v.bos_id);
    v.eos_id = x.value("eos_id", v.eos_id);
    v.unk_id = x.value("unk_id", v.unk_id);
    v.add_bos = x.value("add_bos", v.add_bos);
    v.add_space_prefix = x.value("add_space_prefix", v.add_space_prefix);
    v.metaspace = x.value("metaspace", v.metaspace);
    v.space_prefix_first_only = x.value("space_prefix_first_only", v.space_prefix_first_only);
    v.split_on_space = x.value("split_on_space", v.split_on_space);
    if (x.contains("pre")) {
      const std::string name = x["pre"].get<std::string>();
      // Only a different spelling of the pre-tokenizer the JSON itself describes.
      LATTE_REQUIRE(v.kind != BpeVocab::Kind::byte_level || is_supported_bpe_pre(name), ErrorCode::bad_file, path,
                    ": model.latte.pre \"", name, "\" is not a supported pre-tokenizer");
      v.pre = name;
    }
    // Element by element: nlohmann's own conversion casts out-of-range numbers (undefined).
    if (x.contains("scores")) {
      LATTE_REQUIRE(x["scores"].is_array(), ErrorCode::bad_file, path, ": model.latte.scores is not an array");
      for (const json& e : x["scores"]) {
        const double d = e.is_number() ? e.get<double>() : NAN;
        LATTE_REQUIRE(std::fabs(d) <= double(std::numeric_limits<float>::max()), ErrorCode::bad_file, path,
                      ": model.latte.scores holds ", brief(e), ", not a finite float");
        v.scores.push_back(float(d));
      }
    }
    if (x.contains("token_types")) {
      LATTE_REQUIRE(x["token_types"].is_array(), ErrorCode::bad_file, path, ": model.latte.token_types is not an array");
      for (const json& e : x["token_types"]) {
        const std::optional<int32_t> t = json_integer<int32_t>(e);
        LATTE_REQUIRE(t.has_value(), ErrorCode::bad_file, path, ": model.latte.token_types holds ", brief(e),
                      ", not a 32-bit integer");
        v.token_types.push_back(*t);
      }
    }
    if (x.value("merges_from_scores", false)) v.merges.clear();  // written only for HF's benefit
  }
  return out;
}

// tokenizer_config.json next to tokenizer.json names BOS/EOS and whether BOS is added.
void apply_tokenizer_config(const std::string& path, BpeVocab& v) {
  const std::filesystem::path cfg = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (!file_exists(cfg.string())) return;
  json c;
  try {
    c = json::parse(read_text_file(cfg.string()));
  } catch (const json::exception& e) {
    fail(ErrorCode::bad_file, cfg.string(), ": not valid JSON: ", e.what());
  }
  if (!c.is_object()) return;
  auto find = [&](const char* key) -> int32_t {
    if (!c.contains(key)) return -2;
    const std::string name = token_content(c[key]);
    for (size_t i = 0; i < v.tokens.size(); ++i)
      if (v.tokens[i] == name) return int32_t(i);
    return -2;
  };
  if (int32_t id = find("bos_token"); id >= 0) v.bos_id = id;
  if (int32_t id = find("eos_token"); id >= 0) v.eos_id = id;
  if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean()) v.add_bos = c["add_bos_token"].get<bool>();
}

ordered_json template_processing(const std::string& bos, int32_t bos_id) {
  auto special = [&](int type_id) { return ordered_json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
  auto seq = [&](const char* id, int type_id) {
    return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  ordered_json t;
  t["type"] = "TemplateProcessing";
  t["single"] = ordered_json::array({special(0), seq("A", 0)});
  t["pair"] = ordered_json::array({special(0), seq("A", 0), special(1), seq("B", 1)});
  t["special_tokens"] = {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}};
  return t;
}

ordered_json byte_level_step(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return ordered_json{{"type", "ByteLevel"},
                      {"add_prefix_space", add_prefix_space},
                      {"trim_offsets", trim_offsets},
                      {"use_regex", use_regex}};
}

ordered_json replace_step(const std::string& from, const std::string& to) {
  return ordered_json{{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

// Merges for a scores-only sentencepiece vocabulary, as transformers' SentencePieceExtractor
// derives them: every split of a piece into two pieces of the vocabulary, ordered by the piece's
// score (best first), ties by the two halves' ids. HF's rank order then follows the scores.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const BpeVocab& v) {
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < v.tokens.size(); ++i) ids.try_emplace(v.tokens[i], int32_t(i));
  std::vector<uint8_t> special(v.tokens.size(), 0);
  for (const std::string& s : v.special_tokens)
    if (auto it = ids.find(s); it != ids.end()) special[it->second] = 1;
  struct M {
    float score;
    int32_t l, r;
  };
  std::vector<M> all;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    // Control and byte tokens are never the result of a merge in sentencepiece.
    const int32_t type = v.token_types.empty() ? 1 : v.token_types[i];
    if (special[i] || type == 3 || type == 6) continue;
    const std::string& t = v.tokens[i];
    const size_t first_cut = all.size();
    for (size_t cut = 1; cut < t.size(); ++cut) {
      if ((uint8_t(t[cut]) & 0xC0) == 0x80) continue;  // split between characters only
      auto l = ids.find(t.substr(0, cut));
      auto r = ids.find(t.substr(cut));
      if (l != ids.end() && r != ids.end()) all.push_back({v.scores[i], l->second, r->second});
    }
    std::sort(all.begin() + first_cut, all.end(),
              [](const M& a, const M& b) { return a.l != b.l ? a.l < b.l : a.r < b.r; });
  }
  std::stable_sort(all.begin(), all.end(), [](const M& a, const M& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(all.size());
  for (const M& m : all) out.emplace_back(v.tokens[m.l], v.tokens[m.r]);
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path) {
  const std::string text = read_text_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorCode::bad_file, path, ": not valid JSON: ", e.what());
  }
  Parsed parsed;
  try {
    parsed = parse_tokenizer_json(j, path);
  } catch (const json::exception& e) {  // a field of the wrong JSON type
    fail(ErrorCode::bad_file, path, ": malformed tokenizer.json: ", e.what());
  }
  const bool has_latte = j.at("model").contains(kLatteKey);
  if (!has_latte) apply_tokenizer_config(path, parsed.vocab);
  return make_bpe_tokenizer(std::move(parsed.vocab), path);
}

void write_hf_tokenizer_json(const BpeVocab& v, const std::string& path) {
  const bool byte_level = v.kind == BpeVocab::Kind::byte_level;
  // Validates the vocabulary (and normalizes it: special tokens from token types) first.
  const std::unique_ptr<Tokenizer> tok = make_bpe_tokenizer(v, path);
  const BpeVocab& n = *tok->bpe_vocab();

  ordered_json vocab = ordered_json::object();
  for (size_t i = 0; i < n.tokens.size(); ++i) {
    LATTE_REQUIRE(!vocab.contains(n.tokens[i]), ErrorCode::unsupported, path, ": token \"", n.tokens[i],
                  "\" appears twice in the vocabulary; tokenizer.json cannot hold that");
    vocab[n.tokens[i]] = int32_t(i);
  }
  auto id_of = [&](const std::string& s) { return vocab[s].get<int32_t>(); };

  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  for (const std::string& s : n.special_tokens)
    added.push_back({{"id", id_of(s)},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  j["added_tokens"] = added;

  const bool template_bos = n.add_bos && n.bos_id >= 0;
  if (byte_level) {
    j["normalizer"] = nullptr;
    const std::string pre = n.pre;
    if (pre == "smollm") {
      j["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_step(false, true, true)}}};
    } else if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3") {
      ordered_json split = {{"type", "Split"},
                            {"pattern", {{"Regex", kLlama3Regex}}},
                            {"behavior", "Isolated"},
                            {"invert", false}};
      j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level_step(false, true, false)}}};
    } else {
      j["pre_tokenizer"] = byte_level_step(false, true, true);
    }
    if (template_bos) {
      j["post_processor"] = {{"type", "Sequence"},
                             {"processors",
                              {byte_level_step(true, false, true), template_processing(n.tokens[n.bos_id], n.bos_id)}}};
    } else {
      j["post_processor"] = byte_level_step(true, false, true);
    }
    j["decoder"] = byte_level_step(true, true, true);
  } else {
    if (n.metaspace) {
      j["normalizer"] = nullptr;
      j["pre_tokenizer"] = {{"type", "Metaspace"},
                            {"replacement", kMetaspace},
                            {"prepend_scheme", !n.add_space_prefix          ? "never"
                                               : n.space_prefix_first_only ? "first"
                                                                           : "always"},
                            {"split", n.split_on_space}};
    } else if (n.add_space_prefix) {
      j["normalizer"] = {{"type", "Sequence"},
                         {"normalizers",
                          {{{"type", "Prepend"}, {"prepend", kMetaspace}}, replace_step(" ", kMetaspace)}}};
      j["pre_tokenizer"] = nullptr;
    } else {
      j["normalizer"] = replace_step(" ", kMetaspace);
      j["pre_tokenizer"] = nullptr;
    }
    j["post_processor"] = template_bos ? template_processing(n.tokens[n.bos_id], n.bos_id) : ordered_json();
    ordered_json decoders = ordered_json::array(
        {replace_step(kMetaspace, " "), ordered_json{{"type", "ByteFallback"}}, ordered_json{{"type", "Fuse"}}});
    if (n.add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  }

  // HF's BPE needs merges; a scores-only vocabulary (GGUF "llama") gets them derived from scores.
  const bool derived = !byte_level && n.merges.empty() && !n.scores.empty();
  const auto merges = derived ? merges_from_scores(n) : n.merges;
  ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = n.unk_id >= 0 ? ordered_json(n.tokens[n.unk_id]) : ordered_json();
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = !byte_level;
  model["byte_fallback"] = !byte_level;
  model["ignore_merges"] = n.ignore_merges;
  model["vocab"] = std::move(vocab);
  ordered_json m = ordered_json::array();
  for (const auto& [a, b] : merges) m.push_back({a, b});
  model["merges"] = std::move(m);
  ordered_json x;
  x["bos_id"] = n.bos_id;
  x["eos_id"] = n.eos_id;
  x["unk_id"] = n.unk_id;
  x["add_bos"] = n.add_bos;
  x["add_space_prefix"] = n.add_space_prefix;
  x["metaspace"] = n.metaspace;
  x["space_prefix_first_only"] = n.space_prefix_first_only;
  x["split_on_space"] = n.split_on_space;
  x["pre"] = n.pre;
  x["merges_from_scores"] = derived;
  if (!n.scores.empty()) x["scores"] = n.scores;
  if (!n.token_types.empty()) x["token_types"] = n.token_types;
  model[kLatteKey] = std::move(x);
  j["model"] = std::move(model);

  std::string text;
  try {
    text = j.dump();
  } catch (const ordered_json::exception& e) {  // a token that is not valid UTF-8
    fail(ErrorCode::unsupported, path, ": cannot write tokenizer.json: ", e.what());
  }
  text += '\n';
  atomic_write_string(path, text);
}

}  // namespace latte
