#include "inference/engine/block_pool.h"

#include "core/base/error.h"

namespace latte {
namespace {

// splitmix64's finalizer: a bijection on 64 bits with full avalanche, so chaining it over the
// tokens collides only by chance (about 2^-64 per pair of distinct prefixes).
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
constexpr uint64_t kRootSeed = 0x4c61747465b10c4bull;  // any fixed constant; never change it

}  // namespace

uint64_t BlockPool::root_hash(uint64_t salt) { return mix64(kRootSeed ^ mix64(salt + kGolden)); }

uint64_t BlockPool::chain_hash(uint64_t parent_hash, std::span<const int32_t> block_tokens) {
  uint64_t h = mix64(parent_hash + kGolden);
  for (int32_t t : block_tokens) h = mix64(h ^ (uint64_t(uint32_t(t)) + kGolden));
  // The length closes the block, so a partial block can never alias a full one.
  return mix64(h ^ uint64_t(block_tokens.size()));
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  LATTE_REQUIRE(num_blocks >= 1, ErrorCode::invalid_argument,
                "block pool: num_blocks must be at least 1, got ", num_blocks);
  LATTE_REQUIRE(block_size >= 1, ErrorCode::invalid_argument,
                "block pool: block_size must be at least 1, got ", block_size);
  blocks_.resize(size_t(num_blocks));
  free_.reserve(size_t(num_blocks));
  // Popped from the back: block 0 is handed out first, which keeps plans easy to read in tests.
  for (int32_t id = num_blocks - 1; id >= 0; --id) free_.push_back(id);
}

void BlockPool::check_id(int32_t id, const char* what) const {
  if (id < 0 || id >= num_blocks_)
    fail(ErrorCode::internal, "block pool: ", what, " of block ", id, ", which does not exist (",
         num_blocks_, " blocks)");
}

std::optional<int32_t> BlockPool::allocate() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    id = evictable_.front();
    evictable_.pop_front();
    by_hash_.erase(*blocks_[size_t(id)].hash);
    blocks_[size_t(id)].hash.reset();
    ++evictions_;
  } else {
    return std::nullopt;
  }
  blocks_[size_t(id)].refcount = 1;
  ++used_;
  return id;
}

void BlockPool::retain(int32_t id) {
  check_id(id, "retain");
  Block& b = blocks_[size_t(id)];
  if (b.refcount == 0) {
    // Only a cached block can come back from refcount 0; a plain free block must be allocated.
    if (!b.hash) fail(ErrorCode::internal, "block pool: retain of free block ", id);
    evictable_.erase(b.lru_pos);
    ++used_;
  }
  ++b.refcount;
}

void BlockPool::release(int32_t id) {
  check_id(id, "release");
  Block& b = blocks_[size_t(id)];
  if (b.refcount == 0) fail(ErrorCode::internal, "block pool: release of free block ", id);
  if (--b.refcount > 0) return;
  --used_;
  if (b.hash) {
    b.lru_pos = evictable_.insert(evictable_.end(), id);
  } else {
    free_.push_back(id);
  }
}

int32_t BlockPool::refcount(int32_t id) const {
  check_id(id, "refcount");
  return blocks_[size_t(id)].refcount;
}

int32_t BlockPool::free_count() const { return int32_t(free_.size() + evictable_.size()); }

bool BlockPool::publish(int32_t id, uint64_t hash) {
  check_id(id, "publish");
  Block& b = blocks_[size_t(id)];
  if (b.refcount == 0) fail(ErrorCode::internal, "block pool: publish of free block ", id);
  if (b.hash) {
    if (*b.hash != hash)
      fail(ErrorCode::internal, "block pool: block ", id,
           " is already published with another hash");
    return true;
  }
  if (!by_hash_.try_emplace(hash, id).second) return false;
  b.hash = hash;
  return true;
}

std::optional<int32_t> BlockPool::lookup(uint64_t hash) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> BlockPool::acquire_cached(uint64_t hash) {
  ++queries_;
  std::optional<int32_t> id = lookup(hash);
  if (!id) return std::nullopt;
  retain(*id);
  ++hits_;
  return id;
}

BlockPoolStats BlockPool::stats() const {
  BlockPoolStats s;
  s.total_blocks = num_blocks_;
  s.free_blocks = free_count();
  s.used_blocks = used_;
  s.cached_blocks = int64_t(by_hash_.size());
  s.evictable_blocks = int64_t(evictable_.size());
  s.prefix_queries = queries_;
  s.prefix_hits = hits_;
  s.evictions = evictions_;
  return s;
}

}  // namespace latte
