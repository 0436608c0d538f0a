"""The paged KV cache: prefix hits by chained block hashes, pinning, LRU eviction."""

from __future__ import annotations

from forebay.sim.kv_cache import KvCache, block_hashes


def test_shared_prefix_hits_exactly_the_common_full_blocks() -> None:
    kv = KvCache(total_blocks=100, block_size=4)
    a = list(range(20))
    b = list(range(10)) + [99] * 10
    ha, hb = block_hashes(a, 4), block_hashes(b, 4)
    alloc = kv.admit(ha, kv.match(ha, len(a)), len(a))
    assert alloc is not None and kv.match(hb, len(b)) == 0  # nothing published yet
    kv.publish(alloc, ha)
    assert kv.match(hb, len(b)) == 2  # blocks [0..3] and [4..7] agree; [8..11] does not
    assert kv.match(ha, len(a)) == 4  # the last token is always recomputed: 19 // 4


def test_usage_counts_running_blocks_and_cached_blocks_are_evicted_lru() -> None:
    kv = KvCache(total_blocks=4, block_size=4)
    first = list(range(8))
    h1 = block_hashes(first, 4)
    alloc = kv.admit(h1, 0, 9)  # 8 prompt tokens + 1 -> 3 blocks
    assert alloc is not None and kv.usage == 0.75
    kv.publish(alloc, h1)
    kv.release(alloc)
    assert kv.usage == 0 and kv.match(h1, 9) == 2  # kept as evictable cache
    other = kv.admit(block_hashes([7] * 16, 4), 0, 16)  # needs all 4 blocks: evicts both
    assert other is not None and kv.usage == 1.0 and kv.match(h1, 9) == 0
    assert kv.admit([], 0, 1) is None  # full


def test_pinned_prefix_blocks_survive_eviction() -> None:
    kv = KvCache(total_blocks=4, block_size=4)
    prompt = list(range(8))
    h = block_hashes(prompt, 4)
    a = kv.admit(h, 0, 9)
    assert a is not None
    kv.publish(a, h)
    b = kv.admit(h, kv.match(h, 9), 9)  # shares the two cached blocks, adds one
    assert b is not None and b.shared == h and b.private == 1
    assert kv.admit([], 0, 4) is None  # shared blocks are pinned, nothing to evict
