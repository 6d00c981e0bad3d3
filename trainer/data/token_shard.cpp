#include "trainer/data/token_shard.h"

#include <cstring>

#include "core/base/error.h"

namespace latte {

namespace {
constexpr char kMagic[8] = {'L', 'A', 'T', 'T', 'E', 'T', 'O', 'K'};
constexpr size_t kHeaderBytes = 64;

template <typename T>
void put(std::vector<uint8_t>& out, size_t offset, T v) {
  std::memcpy(out.data() + offset, &v, sizeof v);
}
}  // namespace

void write_token_shard(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab_size,
                       const std::string& tokenizer_id) {
  LATTE_REQUIRE(vocab_size > 0, ErrorCode::invalid_argument, "token shard: vocab_size must be positive");
  LATTE_REQUIRE(tokenizer_id.size() < 32, ErrorCode::invalid_argument, "token shard: tokenizer id '", tokenizer_id,
                "' is longer than 31 bytes");
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::vector<uint8_t> header(kHeaderBytes, 0);
  std::memcpy(header.data(), kMagic, 8);
  put<uint32_t>(header, 8, 1);
  put<uint32_t>(header, 12, width);
  put<uint64_t>(header, 16, uint64_t(vocab_size));
  put<uint64_t>(header, 24, uint64_t(ids.size()));
  std::memcpy(header.data() + 32, tokenizer_id.data(), tokenizer_id.size());
  atomic_write(path, [&](FileWriter& w) {
    w.write(header.data(), header.size());
    std::vector<uint8_t> buf;
    const size_t chunk = 1 << 16;
    for (size_t i = 0; i < ids.size(); i += chunk) {
      const size_t n = std::min(chunk, ids.size() - i);
      buf.resize(n * width);
      for (size_t k = 0; k < n; ++k) {
        const int32_t id = ids[i + k];
        LATTE_REQUIRE(id >= 0 && id < vocab_size, ErrorCode::invalid_argument, "token shard: id ", id, " at ", i + k,
                      " is outside the vocabulary of ", vocab_size);
        if (width == 2) {
          const uint16_t v = uint16_t(id);
          std::memcpy(buf.data() + k * 2, &v, 2);
        } else {
          const uint32_t v = uint32_t(id);
          std::memcpy(buf.data() + k * 4, &v, 4);
        }
      }
      w.write(buf.data(), buf.size());
    }
  });
}

TokenShard::TokenShard(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  const uint8_t* p = file_->data();
  LATTE_REQUIRE(file_->size() >= kHeaderBytes && std::memcmp(p, kMagic, 8) == 0, ErrorCode::bad_file, path,
                " is not a Latte token shard (no LATTETOK header; make one with latte tokenize)");
  uint32_t version = 0;
  std::memcpy(&version, p + 8, 4);
  LATTE_REQUIRE(version == 1, ErrorCode::bad_file, path, ": token shard version ", version, " is not supported");
  std::memcpy(&header_.token_bytes, p + 12, 4);
  std::memcpy(&header_.vocab_size, p + 16, 8);
  std::memcpy(&header_.count, p + 24, 8);
  header_.tokenizer_id.assign(reinterpret_cast<const char*>(p + 32), strnlen(reinterpret_cast<const char*>(p + 32), 32));
  LATTE_REQUIRE(header_.token_bytes == 2 || header_.token_bytes == 4, ErrorCode::bad_file, path, ": token width ",
                header_.token_bytes, " bytes is not 2 or 4");
  // Ids are int32 everywhere after the shard, and the writer picks 2-byte ids only up to 65536. A
  // vocab_size of 2^63 or more would also pass the trainer's signed comparison with the model's.
  const uint64_t max_vocab = header_.token_bytes == 2 ? 65536 : uint64_t(1) << 31;
  LATTE_REQUIRE(header_.vocab_size > 0 && header_.vocab_size <= max_vocab, ErrorCode::bad_file, path, ": vocab_size ",
                header_.vocab_size, " does not fit ", header_.token_bytes, "-byte token ids (1 to ", max_vocab, ")");
  // Compared as a count, not as count * token_bytes: that product wraps around for counts near
  // 2^64 and could equal the file size, accepting a shard whose size() is negative.
  const uint64_t payload = file_->size() - kHeaderBytes;
  LATTE_REQUIRE(payload % header_.token_bytes == 0 && header_.count == payload / header_.token_bytes,
                ErrorCode::bad_file, path, ": ", file_->size(), " bytes, the header promises ", header_.count,
                " tokens of ", header_.token_bytes, " bytes after the ", kHeaderBytes,
                "-byte header; the shard is truncated or corrupt");
  tokens_ = p + kHeaderBytes;
}

int32_t TokenShard::at(int64_t i) const {
  uint32_t v;
  if (header_.token_bytes == 2) {
    uint16_t v16;
    std::memcpy(&v16, tokens_ + size_t(i) * 2, 2);
    v = v16;
  } else {
    std::memcpy(&v, tokens_ + size_t(i) * 4, 4);
  }
  // Checked as read, not at open, so opening a large shard does not touch every page. The trainer
  // checks vocab_size against the model's, so an id within it is a valid embedding row.
  LATTE_REQUIRE(v < header_.vocab_size, ErrorCode::bad_file, path(), ": token ", i, " is ", v,
                ", outside the shard's vocabulary of ", header_.vocab_size, "; the shard is corrupt");
  return int32_t(v);
}

void TokenShard::read(int64_t begin, int64_t n, int32_t* out) const {
  LATTE_REQUIRE(begin >= 0 && n >= 0 && begin + n <= size(), ErrorCode::invalid_argument, "token shard ", path(),
                ": read [", begin, ", ", begin + n, ") past its ", size(), " tokens");
  for (int64_t i = 0; i < n; ++i) out[i] = at(begin + i);
}

}  // namespace latte
