// llama2.c's tokenizer.bin and the encode/decode of its run.c, reproduced token for token so that
// prompts tokenize exactly as the reference implementation (and the stories models' training) did.
#include <cstring>
#include <functional>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "core/base/error.h"
#include "core/base/file_io.h"
#include "core/tokenizer/tokenizer.h"

namespace latte {

namespace {

// run.c hard-codes these ids: BOS 1 (encode, and the leading-space rule in decode), EOS 2, and
// byte b as token b + 3.
constexpr int32_t kBos = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kByteOffset = 3;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> vocab, std::vector<float> scores)
      : vocab_(std::move(vocab)), scores_(std::move(scores)) {
    lookup_.reserve(vocab_.size() * 2);
    // run.c finds pieces by bsearch over a sorted copy; with no duplicate pieces (true of real
    // files) any lookup gives the same id, and for duplicates the lowest id is as good as any.
    for (size_t i = 0; i < vocab_.size(); ++i) lookup_.try_emplace(vocab_[i], int32_t(i));
  }

  int64_t vocab_size() const override { return int64_t(vocab_.size()); }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  std::string id() const override { return str_cat("llama2c:", vocab_.size()); }
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const override;
  std::string decode_piece(int32_t prev, int32_t token) const override;
  std::string piece(int32_t token) const override {
    LATTE_REQUIRE(token >= 0 && token < int32_t(vocab_.size()), ErrorCode::invalid_argument, "token id ", token,
                  " is outside the llama2.c vocabulary of ", vocab_.size(), " tokens");
    return vocab_[size_t(token)];
  }

 private:
  int32_t lookup(std::string_view s) const {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }

  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> lookup_;
};

std::vector<int32_t> Llama2cTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> tokens;
  tokens.reserve(text.size() + 2);
  if (add_bos) tokens.push_back(kBos);
  if (!text.empty()) {
    // run.c pushes whatever str_lookup(" ") returns, -1 included; a vocabulary without " " gets no
    // dummy prefix here instead of an invalid id.
    const int32_t dummy = lookup(" ");
    if (dummy >= 0) tokens.push_back(dummy);
  }

  // run.c's byte loop: gather a lead byte and up to 3 continuation bytes, look the code point up,
  // else emit each byte as byte + 3. Invalid UTF-8 is grouped exactly as run.c groups it.
  const size_t n = text.size();
  auto byte_at = [&](size_t i) -> uint8_t { return i < n ? uint8_t(text[i]) : 0; };
  std::string buf;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = byte_at(i);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf += char(c);
    if ((byte_at(i + 1) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int32_t id = lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (char b : buf) tokens.push_back(int32_t(uint8_t(b)) + kByteOffset);
    }
    buf.clear();
  }

  // run.c rescans all adjacent pairs after every merge (quadratic). The same choice, the
  // highest-scoring pair and the leftmost among equals, comes from a priority queue over a linked
  // list: list order is original-index order, so "leftmost" is the smallest left index. Entries
  // that an earlier merge made stale are recognised by the symbols' generation counters.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t gen;
    bool alive;
  };
  std::vector<Symbol> sym(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    sym[i] = {tokens[i], int32_t(i) - 1, i + 1 < tokens.size() ? int32_t(i + 1) : -1, 0, true};
  struct Pair {
    float score;
    int32_t left, right, new_id;
    uint32_t left_gen, right_gen;
    bool operator<(const Pair& o) const { return score < o.score || (score == o.score && left > o.left); }
  };
  std::priority_queue<Pair> queue;
  std::string cat;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    cat = vocab_[sym[l].id];
    cat += vocab_[sym[r].id];
    const int32_t id = lookup(cat);
    // run.c: best_score starts at -1e10 and a pair must beat it strictly (so NaN never merges).
    if (id < 0 || !(scores_[id] > -1e10f)) return;
    queue.push({scores_[id], l, r, id, sym[l].gen, sym[r].gen});
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) try_pair(i, i + 1);
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    Symbol& r = sym[p.right];
    if (!l.alive || !r.alive || l.next != p.right || l.gen != p.left_gen || r.gen != p.right_gen) continue;
    l.id = p.new_id;
    ++l.gen;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = p.left;
    try_pair(l.prev, p.left);
    try_pair(p.left, l.next);
  }
  std::vector<int32_t> out;
  out.reserve(tokens.size());
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  // run.c's encode takes an eos flag, but its generate/chat never set it; Tokenizer::encode adds none.
  return out;
}

std::string Llama2cTokenizer::decode_piece(int32_t prev, int32_t token) const {
  LATTE_REQUIRE(token >= 0 && token < int32_t(vocab_.size()), ErrorCode::invalid_argument, "token id ", token,
                " is outside the llama2.c vocabulary of ", vocab_.size(), " tokens");
  // BOS/EOS ("\n<s>\n", "\n</s>\n") are sequence markers that run.c never prints (generation stops
  // at BOS), so they add no text.
  if (token == kBos || token == kEos) return {};
  std::string_view piece = vocab_[token];
  // run.c: after BOS, drop the piece's leading space (the dummy prefix). prev == -1 is the start of
  // a sequence encoded without BOS, which starts with the same dummy prefix.
  if ((prev == kBos || prev < 0) && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  // run.c: sscanf(piece, "<0x%02hhX>") turns byte-fallback pieces into the raw byte.
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>') {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(piece[3]), lo = hex(piece[4]);
    if (hi >= 0 && lo >= 0) return std::string(1, char(hi * 16 + lo));
  }
  return std::string(piece);
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int64_t expected_vocab) {
  MappedFile file(path);
  const uint8_t* p = file.data();
  const size_t size = file.size();
  size_t off = 0;
  auto read_i32 = [&](const char* what, size_t token) -> int32_t {
    LATTE_REQUIRE(off + 4 <= size, ErrorCode::bad_file, path, ": truncated llama2.c tokenizer: ", what,
                  token == size_t(-1) ? std::string() : str_cat(" of token ", token), " at byte ", off,
                  " is past the end (", size, " bytes)");
    int32_t v;
    std::memcpy(&v, p + off, 4);
    off += 4;
    return v;
  };
  const int32_t max_token_length = read_i32("max_token_length", size_t(-1));
  LATTE_REQUIRE(max_token_length >= 0, ErrorCode::bad_file, path, ": negative max_token_length ",
                max_token_length, " in llama2.c tokenizer");

  std::vector<std::string> vocab;
  std::vector<float> scores;
  // The file has no token count (run.c takes it from the model): read to the end, then compare.
  while (off < size) {
    const size_t t = vocab.size();
    const int32_t score_bits = read_i32("score", t);
    const int32_t len = read_i32("length", t);
    LATTE_REQUIRE(len >= 0, ErrorCode::bad_file, path, ": token ", t, " has negative length ", len,
                  " in llama2.c tokenizer");
    LATTE_REQUIRE(size_t(len) <= size - off, ErrorCode::bad_file, path, ": truncated llama2.c tokenizer: token ",
                  t, " needs ", len, " bytes at byte ", off, ", file has ", size);
    float score;
    std::memcpy(&score, &score_bits, 4);
    scores.push_back(score);
    vocab.emplace_back(reinterpret_cast<const char*>(p + off), size_t(len));
    off += size_t(len);
  }
  if (expected_vocab >= 0)
    LATTE_REQUIRE(int64_t(vocab.size()) == expected_vocab, ErrorCode::bad_file, path, ": llama2.c tokenizer holds ",
                  vocab.size(), " tokens, the model's vocabulary has ", expected_vocab);
  LATTE_REQUIRE(vocab.size() >= size_t(kByteOffset + 256), ErrorCode::bad_file, path,
                ": llama2.c tokenizer holds ", vocab.size(),
                " tokens; run.c's layout needs at least 259 (<unk>, BOS, EOS, then the 256 byte tokens)");
  return std::make_unique<Llama2cTokenizer>(std::move(vocab), std::move(scores));
}

}  // namespace latte
