// BPE tokenizers built from a BpeVocab (tokenizer.json or GGUF tokenizer.ggml.* metadata).
//
// Two merge algorithms, because the two sources define tokenization differently:
//  - by merge rank (Hugging Face `tokenizers` BPE::merge_word / Word::merge_all), used whenever the
//    vocabulary has merges and no scores: byte-level vocabularies and tokenizer.json files;
//  - by token score (llama.cpp llm_tokenizer_spm), used for sentencepiece vocabularies that carry
//    scores (GGUF "llama"), where there are no merges to rank.
// Each is reproduced step for step, tie-breaking included, so ids match the reference exactly.
#include <algorithm>
#include <array>
#include <optional>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "core/base/error.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/unicode.h"

namespace latte {

namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 "▁", sentencepiece's space

// "<0xAB>" -> 0xAB; -1 for anything else.
int parse_byte_piece(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(s[3]), lo = hex(s[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

std::optional<unicode::PreTokenizer> pre_kind(const std::string& pre) {
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") return unicode::PreTokenizer::gpt2;
  if (pre == "smollm") return unicode::PreTokenizer::smollm;
  if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3") return unicode::PreTokenizer::llama3;
  return std::nullopt;
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// Lets the token map be searched with a string_view, without building a std::string per lookup.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(BpeVocab vocab, const std::string& source);

  int64_t vocab_size() const override { return int64_t(v_.tokens.size()); }
  int32_t bos_id() const override { return v_.bos_id; }
  int32_t eos_id() const override { return v_.eos_id; }
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override;
  std::string decode_piece(int32_t prev, int32_t token) const override;
  std::string piece(int32_t token) const override {
    LATTE_REQUIRE(token >= 0 && token < int32_t(v_.tokens.size()), ErrorCode::invalid_argument, "token id ",
                  token, " is outside the vocabulary of ", v_.tokens.size(), " tokens");
    return v_.tokens[size_t(token)];
  }
  std::string id() const override {
    return str_cat(byte_level() ? "bpe-bytelevel:" : "bpe-spm:", v_.tokens.size());
  }
  const BpeVocab* bpe_vocab() const override { return &v_; }
  bool adds_bos_to_prompts() const override { return v_.add_bos && v_.bos_id >= 0; }

 private:
  bool byte_level() const { return v_.kind == BpeVocab::Kind::byte_level; }
  int32_t lookup(std::string_view s) const {
    auto it = token_to_id_.find(s);
    return it == token_to_id_.end() ? -1 : it->second;
  }
  // Calls raw(begin, size) for each stretch of text between special tokens and special(id) for
  // each special token, in order.
  template <typename Raw, typename Special>
  void split_specials(std::string_view text, Raw raw, Special special) const;
  void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
  void encode_sentencepiece(std::string_view text, bool prefix, std::vector<int32_t>& out) const;
  void bpe_by_rank(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_by_score(std::string_view word, std::vector<int32_t>& out) const;
  void push_bytes(std::string_view s, std::vector<int32_t>& out) const;

  BpeVocab v_;
  unicode::PreTokenizer pre_ = unicode::PreTokenizer::gpt2;
  bool by_score_ = false;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, new id)
  // Special tokens by first byte, longest first, so that the longest match at a position wins.
  std::vector<std::vector<int32_t>> specials_by_byte_;
  std::vector<uint8_t> is_special_;
  std::vector<std::string> decoded_;  // the bytes each token stands for in output text
  std::array<int32_t, 256> byte_ids_{};  // sentencepiece "<0xXX>" tokens; -1 where absent
};

BpeTokenizer::BpeTokenizer(BpeVocab vocab, const std::string& source) : v_(std::move(vocab)) {
  const size_t n = v_.tokens.size();
  LATTE_REQUIRE(n > 0, ErrorCode::bad_file, source, ": tokenizer vocabulary is empty");
  LATTE_REQUIRE(n < size_t(INT32_MAX), ErrorCode::bad_file, source, ": tokenizer vocabulary too large");
  LATTE_REQUIRE(v_.scores.empty() || v_.scores.size() == n, ErrorCode::bad_file, source, ": ",
                v_.scores.size(), " token scores for ", n, " tokens");
  LATTE_REQUIRE(v_.token_types.empty() || v_.token_types.size() == n, ErrorCode::bad_file, source, ": ",
                v_.token_types.size(), " token types for ", n, " tokens");
  for (auto [name, id] : {std::pair<const char*, int32_t>{"bos", v_.bos_id}, {"eos", v_.eos_id}, {"unk", v_.unk_id}})
    LATTE_REQUIRE(id >= -1 && id < int64_t(n), ErrorCode::bad_file, source, ": ", name, " id ", id,
                  " is outside the vocabulary of ", n, " tokens");

  if (byte_level()) {
    auto kind = pre_kind(v_.pre);
    LATTE_REQUIRE(kind.has_value(), ErrorCode::unsupported, source, ": unsupported pre-tokenizer \"",
                  v_.pre, "\" (supported: gpt2, smollm, llama3)");
    pre_ = *kind;
    // llama.cpp ties ignore_merges to the Llama 3 pre-tokenizer; recording it keeps a vocabulary
    // that came from GGUF identical after a round trip through tokenizer.json.
    if (pre_ == unicode::PreTokenizer::llama3) v_.ignore_merges = true;
  }

  // llama.cpp lets a later duplicate replace an earlier one (token_to_id[text] = id in id order).
  token_to_id_.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) token_to_id_[v_.tokens[i]] = int32_t(i);

  for (size_t r = 0; r < v_.merges.size(); ++r) {
    const auto& [a, b] = v_.merges[r];
    const int32_t ia = lookup(a), ib = lookup(b), ic = lookup(a + b);
    LATTE_REQUIRE(ia >= 0 && ib >= 0, ErrorCode::bad_file, source, ": merge ", r, " (\"", a, "\" \"", b,
                  "\") uses a token that is not in the vocabulary");
    LATTE_REQUIRE(ic >= 0, ErrorCode::bad_file, source, ": merge ", r, " (\"", a, "\" \"", b, "\") makes \"",
                  a + b, "\", which is not in the vocabulary");
    // A pair listed twice takes its last rank: HF builds its merge map by inserting in order.
    merges_.insert_or_assign(pair_key(ia, ib), std::pair<int32_t, int32_t>(int32_t(r), ic));
  }

  LATTE_REQUIRE(v_.metaspace || (!v_.space_prefix_first_only && !v_.split_on_space), ErrorCode::invalid_argument,
                source, ": space_prefix_first_only and split_on_space describe a Metaspace pre-tokenizer; ",
                "set metaspace");

  // Scores define llama.cpp's order; a tokenizer.json has only merges, whose rank defines HF's.
  by_score_ = !byte_level() && !v_.scores.empty();

  // Special tokens: the explicit list, or for GGUF vocabularies without one the token types that
  // llama.cpp matches verbatim (2 unknown, 3 control, 4 user defined).
  if (v_.special_tokens.empty() && !v_.token_types.empty()) {
    for (size_t i = 0; i < n; ++i) {
      const int32_t t = v_.token_types[i];
      if ((t == 2 || t == 3 || t == 4) && !v_.tokens[i].empty()) v_.special_tokens.push_back(v_.tokens[i]);
    }
  }
  is_special_.assign(n, 0);
  specials_by_byte_.assign(256, {});
  for (const std::string& s : v_.special_tokens) {
    const int32_t id = lookup(s);
    LATTE_REQUIRE(id >= 0, ErrorCode::bad_file, source, ": special token \"", s, "\" is not in the vocabulary");
    LATTE_REQUIRE(!s.empty(), ErrorCode::bad_file, source, ": empty special token");
    if (is_special_[id]) continue;
    is_special_[id] = 1;
    specials_by_byte_[uint8_t(s[0])].push_back(id);
  }
  for (auto& list : specials_by_byte_)
    std::stable_sort(list.begin(), list.end(),
                     [&](int32_t a, int32_t b) { return v_.tokens[a].size() > v_.tokens[b].size(); });

  byte_ids_.fill(-1);
  decoded_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = v_.tokens[i];
    if (is_special_[i]) {
      decoded_[i] = t;  // added tokens decode verbatim (HF), not through the byte/space mapping
    } else if (byte_level()) {
      std::string& out = decoded_[i];
      for (size_t k = 0; k < t.size();) {
        size_t len = 0;
        const uint32_t cp = unicode::decode_utf8(t, k, &len);
        const int b = unicode::unicode_to_byte(cp);
        if (b >= 0) out += char(b);
        else out.append(t, k, len);  // not a byte stand-in: keep as is rather than lose it
        k += len;
      }
    } else {
      const int b = parse_byte_piece(t);
      const bool byte_token = b >= 0 && (v_.token_types.empty() || v_.token_types[i] == 6);
      if (byte_token) {
        decoded_[i] = std::string(1, char(b));
        if (byte_ids_[b] < 0) byte_ids_[b] = int32_t(i);
      } else {
        std::string& out = decoded_[i];
        for (size_t k = 0; k < t.size();) {
          if (t.compare(k, kMetaspace.size(), kMetaspace) == 0) {
            out += ' ';
            k += kMetaspace.size();
          } else {
            out += t[k++];
          }
        }
      }
    }
  }
}

template <typename Raw, typename Special>
void BpeTokenizer::split_specials(std::string_view text, Raw raw, Special special) const {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int32_t hit = -1;
    for (int32_t id : specials_by_byte_[uint8_t(text[i])]) {
      const std::string& s = v_.tokens[id];
      if (text.compare(i, s.size(), s) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > start) raw(start, i - start);
    special(hit);
    i += v_.tokens[hit].size();
    start = i;
  }
  if (text.size() > start) raw(start, text.size() - start);
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 2 + 2);
  if (add_bos && v_.bos_id >= 0) out.push_back(v_.bos_id);
  const std::string_view all(text);
  split_specials(
      all,
      [&](size_t begin, size_t size) {
        const std::string_view seg = all.substr(begin, size);
        if (byte_level()) {
          encode_byte_level(seg, out);
        } else {
          // Every raw segment starts the text or follows a special token: the legacy Prepend
          // normalizer (per segment) and llama.cpp (after each special) both prefix it; Metaspace
          // "first" only prefixes the segment at offset 0.
          const bool prefix = v_.add_space_prefix && (!v_.space_prefix_first_only || begin == 0);
          encode_sentencepiece(seg, prefix, out);
        }
      },
      [&](int32_t id) { out.push_back(id); });
  return out;
}

void BpeTokenizer::encode_byte_level(std::string_view text, std::vector<int32_t>& out) const {
  std::string mapped;
  for (const unicode::Span& sp : unicode::pre_tokenize(pre_, text)) {
    mapped.clear();
    for (size_t k = 0; k < sp.size; ++k) mapped += unicode::byte_to_unicode(uint8_t(text[sp.begin + k]));
    bpe_by_rank(mapped, out);
  }
}

void BpeTokenizer::encode_sentencepiece(std::string_view text, bool prefix, std::vector<int32_t>& out) const {
  std::string norm;
  norm.reserve(text.size() * 2 + 3);
  if (prefix) norm += kMetaspace;
  for (char c : text) {
    if (c == ' ') norm += kMetaspace;
    else norm += c;
  }
  // HF Metaspace prefixes only text that does not already start with "▁" (a space, once replaced).
  if (prefix && v_.metaspace && norm.compare(kMetaspace.size(), kMetaspace.size(), kMetaspace) == 0)
    norm.erase(0, kMetaspace.size());
  auto run = [&](std::string_view word) {
    if (by_score_) bpe_by_score(word, out);
    else bpe_by_rank(word, out);
  };
  if (!v_.split_on_space) {
    run(norm);
    return;
  }
  // Metaspace split=true: each "▁" starts a new word (HF's MergedWithNext).
  const std::string_view all(norm);
  size_t start = 0;
  for (size_t pos = all.find(kMetaspace, 1); pos != std::string_view::npos; pos = all.find(kMetaspace, pos + 1)) {
    run(all.substr(start, pos - start));
    start = pos;
  }
  if (start < all.size()) run(all.substr(start));
}

// Bytes of a character the vocabulary lacks: "<0xXX>" tokens, else <unk>, else dropped (HF drops
// characters when the model has neither byte fallback nor an unk token).
void BpeTokenizer::push_bytes(std::string_view s, std::vector<int32_t>& out) const {
  for (char c : s) {
    const int32_t id = byte_ids_[uint8_t(c)];
    if (id >= 0) out.push_back(id);
    else if (v_.unk_id >= 0) out.push_back(v_.unk_id);
  }
}

// HF tokenizers BPE::merge_word + Word::merge_all, without dropout.
void BpeTokenizer::bpe_by_rank(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (v_.ignore_merges) {
    const int32_t whole = lookup(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id) {
    const int32_t idx = int32_t(sym.size());
    if (idx > 0) sym.back().next = idx;
    sym.push_back({id, idx - 1, -1, true});
  };
  // Characters missing from the vocabulary: byte fallback when the model has it (all bytes or
  // none), else one <unk> per run of missing characters for sentencepiece (fuse_unk, as Llama's
  // tokenizer.json sets it) and one per character for byte-level; dropped without an unk token.
  bool pending_unk = false;
  for (size_t i = 0; i < word.size();) {
    size_t len = 0;
    unicode::decode_utf8(word, i, &len);
    const std::string_view ch = word.substr(i, len);
    i += len;
    const int32_t id = lookup(ch);
    if (id >= 0) {
      if (pending_unk) add(v_.unk_id);
      pending_unk = false;
      add(id);
      continue;
    }
    if (!byte_level()) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[uint8_t(c)] >= 0;
      if (all) {
        // HF emits the bytes without first flushing a pending <unk> (it follows them); kept so.
        for (char c : ch) add(byte_ids_[uint8_t(c)]);
        continue;
      }
    }
    if (v_.unk_id < 0) continue;
    if (byte_level()) add(v_.unk_id);
    else pending_unk = true;
  }
  if (pending_unk) add(v_.unk_id);

  struct Merge {
    int32_t pos, rank, new_id;
    // std::priority_queue pops the greatest: make that the lowest rank, then the leftmost.
    bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Merge> queue;
  auto find = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i)
    if (auto m = find(sym[i].id, sym[i + 1].id)) queue.push({int32_t(i), m->first, m->second});

  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    // An entry is stale when either side changed since it was queued.
    auto m = find(left.id, right.id);
    if (!m || m->second != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (auto mp = find(sym[left.prev].id, left.id)) queue.push({left.prev, mp->first, mp->second});
    if (left.next >= 0)
      if (auto mn = find(left.id, sym[left.next].id)) queue.push({top.pos, mn->first, mn->second});
  }
  for (const Symbol& s : sym)
    if (s.alive) out.push_back(s.id);
}

// llama.cpp llm_tokenizer_spm_session::tokenize: symbols are UTF-8 characters; the adjacent pair
// whose concatenation is the highest-scoring token merges first (leftmost on ties).
void BpeTokenizer::bpe_by_score(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  struct Symbol {
    size_t begin, n;
    int32_t prev, next;
  };
  std::vector<Symbol> sym;
  for (size_t offs = 0; offs < word.size();) {
    const size_t len = std::min(unicode::utf8_len(uint8_t(word[offs])), word.size() - offs);
    const int32_t idx = int32_t(sym.size());
    sym.push_back({offs, len, idx - 1, offs + len == word.size() ? -1 : idx + 1});
    offs += len;
  }
  struct Bigram {
    int32_t left, right;
    float score;
    size_t size;
    bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
  };
  std::priority_queue<Bigram> queue;
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::string_view text = word.substr(sym[l].begin, sym[l].n + sym[r].n);
    const int32_t id = lookup(text);
    if (id < 0) return;
    queue.push({l, r, v_.scores[id], text.size()});
  };
  for (int32_t i = 1; i < int32_t(sym.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale: one side already merged
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  // Every merged symbol is a token by construction; only single characters can be missing, and
  // those fall back to bytes (llama.cpp's resegment never needs its rev_merge table otherwise).
  for (int32_t i = 0; i != -1; i = sym[i].next) {
    const std::string_view text = word.substr(sym[i].begin, sym[i].n);
    const int32_t id = lookup(text);
    if (id >= 0) out.push_back(id);
    else push_bytes(text, out);
  }
}

std::string BpeTokenizer::decode_piece(int32_t prev, int32_t token) const {
  LATTE_REQUIRE(token >= 0 && token < int32_t(v_.tokens.size()), ErrorCode::invalid_argument, "token id ",
                token, " is outside the vocabulary of ", v_.tokens.size(), " tokens");
  // BOS/EOS mark sequence boundaries, they are not text.
  if (token == v_.bos_id || token == v_.eos_id) return {};
  const std::string& s = decoded_[token];
  // The dummy prefix the encoder added is not part of the text: drop it at the start of the
  // sequence (prev -1 or BOS), as sentencepiece and llama.cpp do.
  if (!byte_level() && v_.add_space_prefix && !is_special_[token] && (prev < 0 || prev == v_.bos_id) &&
      !s.empty() && s[0] == ' ' && parse_byte_piece(v_.tokens[token]) < 0)
    return s.substr(1);
  return s;
}

}  // namespace

bool is_supported_bpe_pre(const std::string& pre) { return pre_kind(pre).has_value(); }

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeVocab vocab, const std::string& source) {
  return std::make_unique<BpeTokenizer>(std::move(vocab), source);
}

}  // namespace latte
