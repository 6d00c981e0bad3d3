// Token shards: the binary files `latte tokenize` writes and the trainer memory-maps.
//
// Layout (little-endian): a 64-byte header, then `count` token ids of `token_bytes` each.
//   0  char[8]  magic "LATTETOK"
//   8  u32      version (1)
//  12  u32      token_bytes (2 for vocabularies up to 65536, else 4)
//  16  u64      vocab_size
//  24  u64      count
//  32  char[32] tokenizer id (Tokenizer::id(), NUL-padded), checked against the model's
// Documents are joined with the tokenizer's EOS between them (when it has one) so that the
// model sees where one text ends.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/file_io.h"

namespace latte {

struct TokenShardHeader {
  uint32_t token_bytes = 2;
  uint64_t vocab_size = 0;
  uint64_t count = 0;
  std::string tokenizer_id;
};

// Writes ids atomically (temp + rename).
void write_token_shard(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab_size,
                       const std::string& tokenizer_id);

class TokenShard {
 public:
  explicit TokenShard(const std::string& path);  // throws bad_file naming the path and the problem
  const TokenShardHeader& header() const { return header_; }
  int64_t size() const { return int64_t(header_.count); }
  int32_t at(int64_t i) const;
  // Copies tokens [begin, begin + n) into out.
  void read(int64_t begin, int64_t n, int32_t* out) const;
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  TokenShardHeader header_;
  const uint8_t* tokens_ = nullptr;
};

}  // namespace latte
