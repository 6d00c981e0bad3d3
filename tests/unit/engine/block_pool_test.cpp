#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "core/base/error.h"
#include "inference/engine/block_pool.h"

namespace latte {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::internal);
    return e.what();
  }
  return "(no error)";
}

TEST(BlockPoolTest, AllocatesEveryBlockOnceThenRunsOut) {
  BlockPool pool(5, 16);
  std::set<int32_t> ids;
  for (int i = 0; i < 5; ++i) {
    std::optional<int32_t> id = pool.allocate();
    ASSERT_TRUE(id);
    EXPECT_EQ(pool.refcount(*id), 1);
    ids.insert(*id);
  }
  EXPECT_EQ(ids, (std::set<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(pool.free_count(), 0);
  EXPECT_FALSE(pool.allocate());
  for (int32_t id : ids) pool.release(id);
  EXPECT_EQ(pool.free_count(), 5);
  EXPECT_EQ(pool.stats().used_blocks, 0);
}

TEST(BlockPoolTest, RefcountKeepsBlockUntilLastRelease) {
  BlockPool pool(3, 4);
  const int32_t id = *pool.allocate();
  pool.retain(id);
  EXPECT_EQ(pool.refcount(id), 2);
  pool.release(id);
  EXPECT_EQ(pool.refcount(id), 1);
  EXPECT_EQ(pool.free_count(), 2);
  pool.release(id);
  EXPECT_EQ(pool.refcount(id), 0);
  EXPECT_EQ(pool.free_count(), 3);
}

TEST(BlockPoolTest, MisuseThrowsNamingTheBlock) {
  BlockPool pool(4, 4);
  EXPECT_NE(error_of([&] { pool.release(2); }).find("release of free block 2"), std::string::npos);
  EXPECT_NE(error_of([&] { pool.retain(3); }).find("free block 3"), std::string::npos);
  EXPECT_NE(error_of([&] { pool.release(4); }).find("block 4, which does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pool.refcount(-1); }).find("block -1"), std::string::npos);
  EXPECT_NE(error_of([&] { pool.publish(1, 7); }).find("publish of free block 1"),
            std::string::npos);
  const int32_t id = *pool.allocate();
  pool.release(id);
  EXPECT_NE(error_of([&] { pool.release(id); }).find("free block " + std::to_string(id)),
            std::string::npos);
  EXPECT_EQ(pool.free_count(), 4);
  EXPECT_THROW(BlockPool(0, 16), Error);
  EXPECT_THROW(BlockPool(4, 0), Error);
}

TEST(BlockPoolTest, ReleasedCachedBlockStaysFindableUntilReclaimedLast) {
  BlockPool pool(2, 4);
  const int32_t cached = *pool.allocate();
  ASSERT_TRUE(pool.publish(cached, 42));
  pool.release(cached);
  EXPECT_EQ(pool.free_count(), 2);  // evictable blocks count as free
  EXPECT_EQ(pool.lookup(42), cached);
  EXPECT_EQ(pool.stats().evictable_blocks, 1);

  const int32_t plain = *pool.allocate();  // the never-published block goes first
  EXPECT_NE(plain, cached);
  EXPECT_EQ(pool.lookup(42), cached);
  EXPECT_EQ(pool.stats().evictions, 0);

  EXPECT_EQ(pool.allocate(), cached);  // reclaimed only now: its hash is gone
  EXPECT_FALSE(pool.lookup(42));
  EXPECT_EQ(pool.stats().evictions, 1);
  EXPECT_EQ(pool.stats().cached_blocks, 0);
  EXPECT_FALSE(pool.allocate());
  pool.release(plain);
  pool.release(cached);
  EXPECT_EQ(pool.free_count(), 2);
  EXPECT_EQ(pool.stats().evictable_blocks, 0);  // unpublished now: back on the plain free list
}

TEST(BlockPoolTest, EvictableBlocksAreReclaimedLeastRecentlyReleasedFirst) {
  BlockPool pool(3, 4);
  const int32_t a = *pool.allocate(), b = *pool.allocate(), c = *pool.allocate();
  pool.publish(a, 1);
  pool.publish(b, 2);
  pool.publish(c, 3);
  pool.release(a);
  pool.release(b);
  pool.release(c);
  // Reusing a makes it the most recently used again.
  EXPECT_EQ(pool.acquire_cached(1), a);
  pool.release(a);
  EXPECT_EQ(pool.allocate(), b);
  EXPECT_EQ(pool.allocate(), c);
  EXPECT_EQ(pool.allocate(), a);
  EXPECT_EQ(pool.stats().evictions, 3);
}

TEST(BlockPoolTest, AcquireCachedRetainsAndCountsHits) {
  BlockPool pool(4, 4);
  const int32_t id = *pool.allocate();
  pool.publish(id, 99);
  pool.release(id);
  EXPECT_EQ(pool.free_count(), 4);

  EXPECT_EQ(pool.acquire_cached(99), id);  // from the evictable list
  EXPECT_EQ(pool.refcount(id), 1);
  EXPECT_EQ(pool.free_count(), 3);
  EXPECT_EQ(pool.acquire_cached(99), id);  // live: shared
  EXPECT_EQ(pool.refcount(id), 2);
  EXPECT_FALSE(pool.acquire_cached(100));

  BlockPoolStats s = pool.stats();
  EXPECT_EQ(s.prefix_queries, 3);
  EXPECT_EQ(s.prefix_hits, 2);
  EXPECT_EQ(s.used_blocks, 1);
  EXPECT_EQ(s.cached_blocks, 1);
  pool.release(id);
  pool.release(id);
  EXPECT_EQ(pool.free_count(), 4);
}

TEST(BlockPoolTest, DuplicatePublishKeepsTheFirstBlock) {
  BlockPool pool(4, 4);
  const int32_t first = *pool.allocate(), second = *pool.allocate();
  EXPECT_TRUE(pool.publish(first, 7));
  EXPECT_TRUE(pool.publish(first, 7));  // idempotent
  EXPECT_FALSE(pool.publish(second, 7));
  EXPECT_EQ(pool.lookup(7), first);
  EXPECT_THROW(pool.publish(first, 8), Error);  // one block, one prefix
  pool.release(second);  // unpublished: plain free, not evictable
  EXPECT_EQ(pool.stats().evictable_blocks, 0);
  pool.release(first);
  EXPECT_EQ(pool.stats().evictable_blocks, 1);
  EXPECT_EQ(pool.stats().cached_blocks, 1);
  EXPECT_EQ(pool.free_count(), 4);
}

TEST(BlockPoolTest, ChainHashDependsOnParentTokensAndOrder) {
  const std::vector<int32_t> t{1, 2, 3, 4}, swapped{2, 1, 3, 4}, other{1, 2, 3, 5};
  const uint64_t root = BlockPool::root_hash();
  const uint64_t h = BlockPool::chain_hash(root, t);
  EXPECT_EQ(h, BlockPool::chain_hash(root, t));
  EXPECT_NE(h, BlockPool::chain_hash(root, swapped));
  EXPECT_NE(h, BlockPool::chain_hash(root, other));
  EXPECT_NE(h, BlockPool::chain_hash(root + 1, t));
  EXPECT_NE(h, BlockPool::chain_hash(BlockPool::root_hash(1), t));  // salt separates caches
  EXPECT_NE(h, BlockPool::chain_hash(root, std::span(t).first(3)));
  // Same block, different prefix before it: different hash.
  EXPECT_NE(BlockPool::chain_hash(BlockPool::chain_hash(root, t), t),
            BlockPool::chain_hash(BlockPool::chain_hash(root, other), t));
  // Token ids are mixed as 32-bit values: -1 and 2^32-1 must not be told apart by sign extension
  // on one platform and not another.
  EXPECT_NE(BlockPool::chain_hash(root, std::vector<int32_t>{-1}),
            BlockPool::chain_hash(root, std::vector<int32_t>{0}));
}

TEST(BlockPoolTest, ChainHashIsFixedAcrossRunsAndPlatforms) {
  // Pinned values, also reproduced by an independent Python version of the same mix: a change
  // here silently invalidates any persisted or cross-process cache index.
  const std::vector<int32_t> t{1, 15043, 29892, 920};
  EXPECT_EQ(BlockPool::root_hash(), 0x62d56452d3fc34a1ull);
  EXPECT_EQ(BlockPool::chain_hash(BlockPool::root_hash(), t), 0x83464a203321d255ull);
}

}  // namespace
}  // namespace latte
