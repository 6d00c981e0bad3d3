// Tokenizer interface. Implementations: llama2c_tokenizer (tokenizer.bin, run.c semantics) and
// bpe_tokenizer (HF tokenizer.json / GGUF vocab: byte-level GPT-2 style, or SentencePiece style
// with byte fallback). All are project code: Debian's libsentencepiece cannot share a process with
// protobuf (shared/notes/env-feasibility.md pitfall 8).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace latte {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;  // -1 when the vocabulary has none
  // The token ids for text; a BOS id first when add_bos (and the vocabulary has one).
  virtual std::vector<int32_t> encode(const std::string& text, bool add_bos) const = 0;
  // Whether prompts for this model start with BOS (llama2.c's run.c: always; HF/GGUF: the
  // vocabulary's add_bos_token).
  virtual bool adds_bos_to_prompts() const { return bos_id() >= 0; }
  // The bytes token `token` adds to the output when it follows `prev` (-1 at the start): the
  // streaming form used by generate, which handles SentencePiece's leading-space rule and
  // byte-fallback pieces. Concatenating these over a sequence gives its text. BOS and EOS add
  // nothing; other special tokens add their text.
  virtual std::string decode_piece(int32_t prev, int32_t token) const = 0;
  std::string decode(const std::vector<int32_t>& ids) const;
  // The vocabulary entry of `token` as the tokenizer file stores it (byte-fallback pieces as
  // "<0xXX>", byte-level BPE pieces in their mapped characters, SentencePiece's "▁"), for display;
  // throws invalid_argument for an id outside the vocabulary.
  virtual std::string piece(int32_t token) const = 0;
  // A short stable name ("llama2c:512", "bpe-bytelevel:49152") recorded in token shards.
  virtual std::string id() const = 0;
  // The vocabulary, for BPE tokenizers (so an exporter can write it out as tokenizer.json).
  virtual const struct BpeVocab* bpe_vocab() const { return nullptr; }
};

// The vocabulary a BPE tokenizer is built from, whichever file it came from (tokenizer.json or
// GGUF "tokenizer.ggml.*" metadata).
struct BpeVocab {
  enum class Kind { byte_level, sentencepiece };  // GGUF "gpt2" / "llama"; tokenizer.json decoder
  Kind kind = Kind::byte_level;
  std::vector<std::string> tokens;               // id -> piece as stored in the file
  std::vector<float> scores;                     // sentencepiece merge priority (may be empty)
  std::vector<int32_t> token_types;              // GGUF token types (1 normal, 2 unknown, 3 control,
                                                 // 4 user defined, 6 byte); may be empty
  std::vector<std::pair<std::string, std::string>> merges;  // byte_level merge rules, in rank order
  std::vector<std::string> special_tokens;       // added tokens matched verbatim before BPE
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = false;                          // whether the model expects BOS on prompts
  bool add_space_prefix = true;                  // sentencepiece's dummy prefix
  std::string pre;                               // GGUF tokenizer.ggml.pre (pre-tokenizer name)

  // Added for HF tokenizer.json files (GGUF loaders can leave them at their defaults; a GGUF
  // "llama-bpe"/"llama3" pre implies ignore_merges, as in llama.cpp).
  //
  // HF BPE "ignore_merges": a pre-token that is itself in the vocabulary is emitted whole, without
  // running the merges (Llama 3). Byte-level only.
  bool ignore_merges = false;
  // Sentencepiece kind only: spaces handled by an HF Metaspace pre-tokenizer instead of the legacy
  // Prepend+Replace normalizers (and llama.cpp), which prefix every raw-text segment. Metaspace adds
  // no dummy prefix to a segment that already starts with a space; with prepend_scheme "first"
  // (space_prefix_first_only) only the segment at the start of the input gets one; with split=true
  // (split_on_space) BPE runs on each "▁word" separately. The last two require metaspace.
  bool metaspace = false;
  bool space_prefix_first_only = false;
  bool split_on_space = false;
};

// The pre-tokenizer names make_bpe_tokenizer accepts in BpeVocab::pre for byte_level vocabularies:
// "" / "default" / "gpt2" / "gpt-2" (the GPT-2 regex), "smollm" (single digits, then the GPT-2
// regex), "llama3" / "llama-bpe" / "llama-v3" (the Llama 3 regex). Others are rejected rather than
// tokenized differently from the model's training.
bool is_supported_bpe_pre(const std::string& pre);

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int64_t expected_vocab = -1);
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path);
// Validates vocab (errors name `source`). A vocabulary with an empty special_tokens list but token
// types (GGUF) gets its special tokens from types 2/3/4 (unknown, control, user defined), matched
// verbatim in text. Sentencepiece vocabularies with scores merge by score as llama.cpp does; without
// scores by merge rank as HF does. bpe_vocab() of the result is this normalized vocabulary.
std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeVocab vocab, const std::string& source);
// Writes vocab as a Hugging Face tokenizer.json that load_hf_tokenizer_json reads back to the same
// tokenizer (atomic write).
void write_hf_tokenizer_json(const BpeVocab& vocab, const std::string& path);
// By file name: "tokenizer.json" (any *.json) -> HF, anything else -> llama2.c tokenizer.bin.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace latte
