"""A paged KV cache with automatic prefix caching, counted in blocks as vLLM does.

Blocks hold `block_size` tokens. A full prompt block is identified by a hash chained over
all tokens before it, so two prompts share cached blocks exactly as far as their tokens
agree from the start. Blocks that no running sequence uses stay cached (evictable, least
recently used first) until space is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


def block_hashes(tokens: list[int], block_size: int) -> list[int]:
    """Chained hashes of the full blocks of `tokens`."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start : start + block_size])))
        hashes.append(parent)
    return hashes


@dataclass
class Allocation:
    """The blocks one sequence holds: shared cached prefix blocks plus private ones."""

    shared: list[int] = field(default_factory=list)
    private: int = 0

    @property
    def blocks(self) -> int:
        return len(self.shared) + self.private


class KvCache:
    def __init__(self, total_blocks: int, block_size: int = 16) -> None:
        if total_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.total_blocks = total_blocks
        self.block_size = block_size
        self.free = total_blocks
        self._refs: dict[int, int] = {}  # cached block hash -> sequences using it
        self._evictable: OrderedDict[int, None] = OrderedDict()  # refs == 0, LRU first

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - self.free - len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by running sequences (vllm:gpu_cache_usage_perc)."""
        return self.used_blocks / self.total_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def match(self, hashes: list[int], prompt_len: int) -> int:
        """How many leading blocks of a prompt are cached (the last token is always
        recomputed, so a fully cached prompt still prefills one token)."""
        limit = (prompt_len - 1) // self.block_size
        hits = 0
        for h in hashes[:limit]:
            if h not in self._refs:
                break
            hits += 1
        return hits

    def _take(self, blocks: int) -> bool:
        while self.free < blocks and self._evictable:
            victim, _ = self._evictable.popitem(last=False)
            del self._refs[victim]
            self.free += 1
        if self.free < blocks:
            return False
        self.free -= blocks
        return True

    def available(self) -> int:
        return self.free + len(self._evictable)

    def admit(self, hashes: list[int], hit_blocks: int, tokens: int) -> Allocation | None:
        """Reserve blocks for a sequence of `tokens` whose first `hit_blocks` are cached."""
        shared = hashes[:hit_blocks]
        needed = self.blocks_for(tokens) - len(shared)
        # Pin the shared blocks first so eviction cannot take them.
        for h in shared:
            self._refs[h] += 1
            self._evictable.pop(h, None)
        if not self._take(needed):
            self._unpin(shared)
            return None
        return Allocation(list(shared), needed)

    def grow(self, alloc: Allocation, tokens: int) -> bool:
        """Make room for a sequence that now holds `tokens` tokens."""
        needed = self.blocks_for(tokens) - alloc.blocks
        if needed <= 0:
            return True
        if not self._take(needed):
            return False
        alloc.private += needed
        return True

    def publish(self, alloc: Allocation, hashes: list[int]) -> None:
        """After prefill, turn the sequence's private full prompt blocks into cached ones."""
        for h in hashes[len(alloc.shared) :]:
            if alloc.private == 0:
                break
            if h in self._refs:  # another sequence cached the same block meanwhile
                self._refs[h] += 1
                self._evictable.pop(h, None)
                self.free += 1
            else:
                self._refs[h] = 1
            alloc.private -= 1
            alloc.shared.append(h)

    def release(self, alloc: Allocation) -> None:
        self.free += alloc.private
        alloc.private = 0
        self._unpin(alloc.shared)
        alloc.shared = []

    def _unpin(self, hashes: list[int]) -> None:
        for h in hashes:
            self._refs[h] -= 1
            if self._refs[h] == 0:
                self._evictable[h] = None
                self._evictable.move_to_end(h)
