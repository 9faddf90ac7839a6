"""The KV cache manager: block accounting for one preallocated pool (the tensors live in the
runner; this module only decides which block holds what).

Invariants, kept by every public method and checked by `check_invariants` in tests:
- A block is either in use (`ref_count > 0`, listed in the tables of `ref_count` sequences)
  or free (`ref_count == 0`, in exactly one of the free lists). Never both, never neither.
- A block with a key (`_block_hash[b]` set) holds the K/V of exactly the prefix with that key
  and is full; keys are unique (`_hash_to_block` is a bijection onto keyed blocks). Only full
  blocks get keys, and a keyed block is never written again.
- A block with `ref_count > 1` is never written: `reserve` copies the shared partial last block
  first (copy-on-write) and queues the copy for the runner (`take_copies`).
- Free blocks without a key are reused first; free keyed blocks (cached prefixes) are evicted
  least-recently-freed first, and only when no keyless free block is left. Eviction drops the
  key and records it in the evicted events.
- A reference count drops to zero only in `free`.
- A sequence's chain starts at `root_hash(seq.params.cache_salt)`: blocks are only ever shared
  between sequences with the same salt (one tenant, or tenants that opted to share).
- `tables` (block_tables.py) holds every sequence's block table as it is: each change to a
  `block_table` here is written there.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from kvmesh.block_hash import BlockHash, hash_block, root_hash

from .block_tables import BlockTables
from .sequence import Sequence, SequenceStatus


@dataclass
class KVCacheStats:
    num_blocks: int
    free_blocks: int
    used_blocks: int
    cached_blocks: int
    prefix_query_tokens: int
    prefix_hit_tokens: int


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError(f"KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_count = [0] * num_blocks
        self._block_hash: list[BlockHash | None] = [None] * num_blocks
        self._hash_to_block: dict[BlockHash, int] = {}
        self._free_keyless: deque[int] = deque(range(num_blocks))
        self._free_keyed: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._copies: list[tuple[int, int]] = []
        self._stored: list[BlockHash] = []
        self._evicted: list[BlockHash] = []
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.tables = BlockTables()  # every block table as rows of one array, kept in step

    # ---- queries -------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self._free_keyless) + len(self._free_keyed)

    def stats(self) -> KVCacheStats:
        free = self.num_free_blocks
        return KVCacheStats(
            num_blocks=self.num_blocks,
            free_blocks=free,
            used_blocks=self.num_blocks - free,
            cached_blocks=len(self._hash_to_block),
            prefix_query_tokens=self.prefix_query_tokens,
            prefix_hit_tokens=self.prefix_hit_tokens,
        )

    def cached_hashes(self) -> list[BlockHash]:
        """Every key held now, for a router rebuilding its index."""
        return list(self._hash_to_block)

    def _match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks of the longest cached prefix under the sequence's salt. The last
        prompt token is never taken from cache: its logits are needed, so at least one token
        is always computed. A sequence that needs every position computed takes none
        (`Sequence.reuse_prefix`)."""
        if not self.enable_prefix_caching or not seq.reuse_prefix:
            return []
        hits: list[int] = []
        for i in range((len(seq.token_ids) - 1) // self.block_size):
            block = self._hash_to_block.get(self._key(seq, i))
            if block is None:  # no later block can hit: hash none of them
                break
            hits.append(block)
        return hits

    def _key(self, seq: Sequence, i: int) -> BlockHash:
        """The chained key of `seq`'s full block `i` (its tokens final), from the sequence's
        memo: each block is hashed once in its life, however often its prefix is looked up
        (`can_admit`, then `admit`, again after a preemption) or keyed (`commit`)."""
        keys, bs = seq.prefix_keys, self.block_size
        while len(keys) <= i:
            j = len(keys)
            parent = keys[-1] if keys else root_hash(seq.params.cache_salt)
            keys.append(hash_block(parent, seq.token_ids[j * bs : (j + 1) * bs]))
        return keys[i]

    def _blocks_to_grow(self, seq: Sequence, num_new_tokens: int) -> int:
        """Fresh blocks `reserve(seq, n)` takes: new blocks plus a copy-on-write copy."""
        total = seq.num_computed_tokens + num_new_tokens
        grow = max(0, -(-total // self.block_size) - len(seq.block_table))
        return grow + int(self._needs_copy(seq))

    def _needs_copy(self, seq: Sequence) -> bool:
        if seq.num_computed_tokens % self.block_size == 0 or not seq.block_table:
            return False
        last = seq.block_table[seq.num_computed_tokens // self.block_size]
        return self._ref_count[last] > 1

    def can_admit(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Whether a waiting sequence (no blocks yet) fits with `num_new_tokens` to compute
        after its cached prefix. Cached blocks that are free now count against free space."""
        hits = self._match_prefix(seq)
        num_new = min(num_new_tokens, seq.num_tokens - len(hits) * self.block_size)
        need = -(-(len(hits) * self.block_size + num_new) // self.block_size) - len(hits)
        revived = sum(1 for b in hits if self._ref_count[b] == 0)
        return need + revived <= self.num_free_blocks

    def can_reserve(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self._blocks_to_grow(seq, num_new_tokens) <= self.num_free_blocks

    # ---- changes -------------------------------------------------------------------------

    def admit(self, seq: Sequence) -> int:
        """Give a waiting sequence its cached prefix; returns the tokens it need not compute."""
        assert not seq.block_table, "admit() is for sequences that hold no blocks"
        hits = self._match_prefix(seq)
        for block in hits:
            self._take_ref(block)
        seq.block_table = hits
        self.tables.write(seq, 0)
        seq.num_keyed_blocks = len(hits)  # their keys are in `seq.prefix_keys` already
        seq.num_computed_tokens = len(hits) * self.block_size
        self.prefix_query_tokens += seq.num_tokens
        self.prefix_hit_tokens += seq.num_computed_tokens
        return seq.num_computed_tokens

    def try_reserve(self, seq: Sequence, num_new_tokens: int) -> bool:
        """`reserve` when the pool can take it; False, changing nothing, when it cannot. A
        decode whose slot is in a block of its own already (most steps) checks and is done."""
        if num_new_tokens == 1:  # hot path, inlined: once per decode per step
            at, table, bs = seq.num_computed_tokens, seq.block_table, self.block_size
            i = at // bs
            if i < len(table) and (at % bs == 0 or self._ref_count[table[i]] == 1):
                return True  # the slot's block is there, and no other sequence shares it
        grow = self._blocks_to_grow(seq, num_new_tokens)
        if grow > self.num_free_blocks:
            return False
        if grow:
            self.reserve(seq, num_new_tokens)
        return True

    def reserve(self, seq: Sequence, num_new_tokens: int) -> None:
        """Make slots for the next `num_new_tokens` tokens writable. Caller checked
        `can_reserve`; raises if the pool is short anyway."""
        changed = len(seq.block_table)
        if self._needs_copy(seq):
            changed = i = seq.num_computed_tokens // self.block_size
            src = seq.block_table[i]
            dst = self._allocate()
            self._copies.append((src, dst))
            self._ref_count[src] -= 1  # still > 0: it was shared
            seq.block_table[i] = dst
        total = seq.num_computed_tokens + num_new_tokens
        while len(seq.block_table) * self.block_size < total:
            seq.block_table.append(self._allocate())
        if changed < len(seq.block_table) or seq.table_row < 0:
            self.tables.write(seq, changed)

    def commit_running(self, seqs: list[Sequence], num_tokens: list[int]) -> None:
        """`commit` each running sequence of a step's batch that filled a block: its
        `num_tokens` computed in the step, ending at `num_computed_tokens`, crossed a block
        boundary. Hot path: most rows fill none and are passed over without a call, and
        without reading their keyed-block count (one attribute less a row; `commit` catches up on
        every block full by then)."""
        if not self.enable_prefix_caching:
            return
        bs, running = self.block_size, SequenceStatus.RUNNING
        for seq, n in zip(seqs, num_tokens, strict=True):
            if seq.num_computed_tokens % bs < n and seq.status is running:
                self.commit(seq)

    def commit(self, seq: Sequence) -> None:
        """After a step computed tokens of `seq`: key its newly full blocks."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed_tokens // self.block_size
        while seq.num_keyed_blocks < full:
            i = seq.num_keyed_blocks
            key = self._key(seq, i)
            seq.num_keyed_blocks += 1
            block = seq.block_table[i]
            if self._block_hash[block] is None and key not in self._hash_to_block:
                self._block_hash[block] = key
                self._hash_to_block[key] = block
                self._stored.append(key)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """`child` shares every block of `parent`; the first write copies the partial one."""
        for block in parent.block_table:
            self._ref_count[block] += 1
        child.block_table = list(parent.block_table)
        self.tables.write(child, 0)
        child.num_keyed_blocks = parent.num_keyed_blocks
        child.prefix_keys = list(parent.prefix_keys)
        child.num_computed_tokens = parent.num_computed_tokens
        child.num_cached_tokens = parent.num_cached_tokens
        child.admitted = parent.admitted

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references. Tail blocks are freed first so that, under LRU
        eviction, a prefix's tail goes before its head (heads are shared more often)."""
        for block in reversed(seq.block_table):
            self._ref_count[block] -= 1
            assert self._ref_count[block] >= 0, f"block {block} freed twice"
            if self._ref_count[block] == 0:
                if self._block_hash[block] is None:
                    self._free_keyless.append(block)
                else:
                    self._free_keyed[block] = None
        seq.block_table = []
        seq.num_keyed_blocks = 0
        self.tables.release(seq)

    def take_copies(self) -> list[tuple[int, int]]:
        """Pending (src, dst) block copies; the runner applies them before the next forward."""
        copies, self._copies = self._copies, []
        return copies

    def take_events(self) -> tuple[list[BlockHash], list[BlockHash]]:
        """Keys stored and evicted since the last call, for the router's KV index."""
        out = (self._stored, self._evicted)
        self._stored, self._evicted = [], []
        return out

    def _take_ref(self, block: int) -> None:
        if self._ref_count[block] == 0:
            del self._free_keyed[block]  # a cached free block comes back into use
        self._ref_count[block] += 1

    def _allocate(self) -> int:
        if self._free_keyless:
            block = self._free_keyless.popleft()
        elif self._free_keyed:
            block, _ = self._free_keyed.popitem(last=False)
            key = self._block_hash[block]
            assert key is not None
            del self._hash_to_block[key]
            self._block_hash[block] = None
            self._evicted.append(key)
        else:
            raise RuntimeError("KV cache out of blocks: the scheduler reserved too much")
        self._ref_count[block] = 1
        return block

    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant in the module docstring is broken."""
        free = set(self._free_keyless) | set(self._free_keyed)
        assert len(free) == len(self._free_keyless) + len(self._free_keyed), "free twice"
        for b in range(self.num_blocks):
            rc = self._ref_count[b]
            assert rc >= 0, f"block {b} has negative refcount"
            assert (rc == 0) == (b in free), f"block {b} refcount {rc} vs free list"
            key = self._block_hash[b]
            if key is not None:
                assert self._hash_to_block.get(key) == b, f"block {b} key not indexed"
            else:
                assert b not in self._free_keyed, f"keyless block {b} in the keyed list"
        assert len(self._hash_to_block) == sum(k is not None for k in self._block_hash)
        self.tables.check()
