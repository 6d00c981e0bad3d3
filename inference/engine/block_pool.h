// The physical blocks of a paged KV cache, as bookkeeping only: which block ids are in use, by how
// many sequences (refcount), and which hold a published prefix (vLLM-style automatic prefix
// caching). A block whose refcount drops to 0 while it holds a published prefix is not wiped: it
// joins an LRU list of evictable blocks that lookup() still finds, and allocate() reclaims the
// least recently released one only when no never-published block is left, so cached prefixes
// survive as long as memory allows.
//
// Misuse (a bad id, releasing a free block, publishing a free block) is a Latte bug in the caller
// and throws latte::Error(ErrorCode::internal) naming the block id.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace latte {

struct BlockPoolStats {
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;    // allocatable: never-published free blocks + evictable cached blocks
  int64_t used_blocks = 0;    // refcount > 0
  int64_t cached_blocks = 0;  // holding a published prefix, in use or evictable
  int64_t evictable_blocks = 0;
  int64_t prefix_queries = 0;  // acquire_cached() calls, one per block looked up
  int64_t prefix_hits = 0;     // of those, blocks found
  int64_t evictions = 0;       // cached blocks reclaimed by allocate()
};

class BlockPool {
 public:
  // Parent hash of a sequence's first block. `salt` separates caches that must never share
  // blocks (e.g. two models, or two adapters on one model) while keeping one pool.
  static uint64_t root_hash(uint64_t salt = 0);
  // Hash of a block given the hash of the block before it, so equal hashes mean equal whole
  // prefixes, not just equal blocks. Deterministic across runs and platforms (fixed integer mix).
  static uint64_t chain_hash(uint64_t parent_hash, std::span<const int32_t> block_tokens);

  BlockPool(int32_t num_blocks, int32_t block_size);  // throws invalid_argument when either < 1

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }

  // A block with refcount 1, or nullopt when every block is in use.
  std::optional<int32_t> allocate();
  void retain(int32_t id);
  void release(int32_t id);
  int32_t refcount(int32_t id) const;
  int32_t free_count() const;  // what allocate() can still hand out

  // Marks an in-use, full block as holding the prefix `hash`. Returns false, leaving the block
  // unpublished, when another block already holds that hash (two sequences computed the same
  // prefix before either was published): the existing block stays the one lookups find.
  bool publish(int32_t id, uint64_t hash);
  std::optional<int32_t> lookup(uint64_t hash) const;  // no side effects, not counted
  // lookup() + retain(): an evictable block leaves the LRU list. Counted in the query/hit stats.
  std::optional<int32_t> acquire_cached(uint64_t hash);

  BlockPoolStats stats() const;

 private:
  struct Block {
    int32_t refcount = 0;
    std::optional<uint64_t> hash;
    std::list<int32_t>::iterator lru_pos;  // valid while evictable
  };
  void check_id(int32_t id, const char* what) const;

  int32_t num_blocks_;
  int32_t block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;     // never-published free blocks, popped from the back
  std::list<int32_t> evictable_;  // refcount 0 with a hash; front = least recently used
  std::unordered_map<uint64_t, int32_t> by_hash_;
  int64_t used_ = 0;
  int64_t queries_ = 0;
  int64_t hits_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace latte
