"""The KV cache manager keeps its invariants under long random sequences of operations."""

from __future__ import annotations

import random

import pytest

from inference.engine.kv_cache import KVCacheManager
from inference.engine.sampling_params import SamplingParams
from inference.engine.sequence import Sequence, SequenceStatus

BS = 4


def _seq(i: int, tokens: list[int]) -> Sequence:
    return Sequence(i, f"r{i}", 0, list(tokens), len(tokens), SamplingParams(), float(i),
                    status=SequenceStatus.RUNNING)


class ShadowPool:
    """Writes a marker per (block, slot) so a test can see a write into a shared block."""

    def __init__(self, kv: KVCacheManager):
        self.kv = kv
        self.content: dict[int, list[int | None]] = {}

    def write(self, seq: Sequence, n: int) -> None:
        for src, dst in self.kv.take_copies():
            assert self.kv._ref_count[dst] == 1
            self.content[dst] = list(self.content.get(src, [None] * BS))
        for p in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
            block = seq.block_table[p // BS]
            assert self.kv._ref_count[block] == 1, "copy-on-write broken: wrote a shared block"
            assert self.kv._block_hash[block] is None, "wrote into a keyed (full, cached) block"
            self.content.setdefault(block, [None] * BS)[p % BS] = seq.token_ids[p]
        seq.num_computed_tokens += n
        self.kv.commit_running([seq], [n])  # as the engine keys a step's blocks

    def assert_holds(self, seq: Sequence) -> None:
        for p in range(seq.num_computed_tokens):
            assert self.content[seq.block_table[p // BS]][p % BS] == seq.token_ids[p]


@pytest.mark.parametrize("seed", range(6))
def test_invariants_hold_under_random_allocate_fork_append_free(seed):
    rng = random.Random(seed)
    kv = KVCacheManager(num_blocks=40, block_size=BS)
    pool = ShadowPool(kv)
    live: list[Sequence] = []
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(1, 14))] for _ in range(4)]
    refused = 0
    for step in range(600):
        op = rng.random()
        if op < 0.3:  # allocate a new sequence, often sharing a prefix
            tokens = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(0, 6))]
            seq = _seq(step, tokens)
            if kv.can_admit(seq, seq.num_tokens):
                kv.admit(seq)
                n = seq.num_new_tokens
                kv.reserve(seq, n)
                pool.write(seq, n)
                live.append(seq)
        elif op < 0.45 and live:  # fork
            parent = rng.choice(live)
            child = _seq(step, parent.token_ids)
            kv.fork(parent, child)
            live.append(child)
        elif op < 0.8 and live:  # append a decoded token, reserved either way
            seq = rng.choice(live)
            seq.token_ids.append(rng.randrange(50))
            before = (list(seq.block_table), kv.num_free_blocks)
            if rng.random() < 0.5:
                reserved = kv.can_reserve(seq, 1)
                if reserved:
                    kv.reserve(seq, 1)
            else:
                reserved = kv.try_reserve(seq, 1)
            if reserved:
                pool.write(seq, 1)
            else:  # refused: nothing changed
                assert (seq.block_table, kv.num_free_blocks) == before
                refused += 1
                seq.token_ids.pop()
        elif live:  # free
            seq = live.pop(rng.randrange(len(live)))
            kv.free(seq)
        kv.check_invariants()
        for seq in live:
            pool.assert_holds(seq)
    for seq in live:
        kv.free(seq)
    kv.check_invariants()
    assert kv.num_free_blocks == kv.num_blocks, "the pool is not whole at the end"
    assert refused, "the pool never ran short: the refusal path went untested"


def test_prefix_hit_reuses_blocks_and_keeps_last_token_computed():
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    a = _seq(0, list(range(12)))
    kv.admit(a)
    kv.reserve(a, 12)
    a.num_computed_tokens = 12
    kv.commit(a)
    kv.free(a)
    b = _seq(1, list(range(12)))  # identical prompt: two of three blocks reused
    assert kv.admit(b) == 8
    c = _seq(2, [*range(8), 99, 98])
    assert kv.admit(c) == 8
    assert c.block_table == b.block_table[:2]
    assert kv._ref_count[b.block_table[0]] == 2


def test_cached_free_blocks_are_evicted_lru_and_only_when_needed():
    kv = KVCacheManager(num_blocks=4, block_size=BS)
    old, new = _seq(0, [1] * 5), _seq(1, [2] * 5)
    for s in (old, new):
        kv.admit(s)
        kv.reserve(s, 5)
        s.num_computed_tokens = 5
        kv.commit(s)
        kv.free(s)
    assert kv.stats().cached_blocks == 2
    grab = _seq(2, [3] * 8)  # two blocks: the two keyless ones first, no eviction
    kv.admit(grab)
    kv.reserve(grab, 8)
    assert kv.take_events()[1] == []
    more = _seq(3, [4] * 4)
    kv.admit(more)
    kv.reserve(more, 4)  # must evict: the least recently freed cached block goes
    _, evicted = kv.take_events()
    assert len(evicted) == 1
    assert kv.admit(_seq(5, [1] * 5)) == 0, "the older cached prefix was evicted"
    assert kv.admit(_seq(4, [2] * 5)) == 4, "the newer cached prefix survives"
    kv.check_invariants()


def _salted(i: int, tokens: list[int], salt: str) -> Sequence:
    return Sequence(i, f"r{i}", 0, list(tokens), len(tokens), SamplingParams(cache_salt=salt),
                    float(i))


def _computed(kv: KVCacheManager, seq: Sequence) -> None:
    kv.admit(seq)
    kv.reserve(seq, seq.num_new_tokens)
    seq.num_computed_tokens = seq.num_tokens
    kv.commit(seq)
    kv.free(seq)


def test_cached_prefixes_are_shared_only_under_the_same_salt() -> None:
    kv = KVCacheManager(16, BS)
    prompt = list(range(4 * BS + 1))
    _computed(kv, _salted(0, prompt, "tenant:a"))
    assert kv.admit(_salted(1, prompt, "tenant:b")) == 0  # another tenant finds nothing
    assert kv.admit(_salted(2, prompt, "")) == 0  # nor does an unsalted request
    assert kv.admit(_salted(3, prompt, "tenant:a")) == 4 * BS  # the tenant itself does
    kv.check_invariants()


def test_each_block_is_hashed_once_in_a_sequences_life(monkeypatch) -> None:
    """Admission looks the prompt up twice (`can_admit`, `admit`), stops at the first miss,
    and the computed blocks are keyed after: one hash per block in all, none again after a
    preemption; the keys are the chain every other holder (the router) computes."""
    import inference.engine.kv_cache as kv_mod
    from kvmesh.block_hash import hash_block, hash_prefix_blocks

    calls: list[int] = []

    def counted(parent, token_ids):
        calls.append(1)
        return hash_block(parent, token_ids)

    monkeypatch.setattr(kv_mod, "hash_block", counted)
    kv = KVCacheManager(num_blocks=16, block_size=BS)
    _computed(kv, _salted(0, list(range(2 * BS + 1)), "t"))  # two blocks cached
    seq = _salted(1, [*range(2 * BS), *range(100, 100 + 3 * BS + 1)], "t")  # 5 full blocks
    calls.clear()
    assert kv.can_admit(seq, seq.num_new_tokens)
    assert kv.admit(seq) == 2 * BS
    assert len(calls) == 3  # two hits and the first miss; nothing past it
    kv.reserve(seq, seq.num_new_tokens)
    seq.num_computed_tokens = seq.num_tokens
    kv.commit(seq)
    assert len(calls) == 5  # the two blocks not yet hashed, and no other
    assert seq.prefix_keys[:seq.num_keyed_blocks] == hash_prefix_blocks(seq.token_ids, BS, "t")
    kv.free(seq)
    seq.reset_for_recompute()  # preempted: looked up again in full, all hits, no new hash
    assert kv.admit(seq) == 5 * BS
    assert len(calls) == 5
    kv.check_invariants()


def test_commit_running_keys_the_full_blocks_of_running_sequences_only() -> None:
    kv = KVCacheManager(num_blocks=8, block_size=BS)
    running, waiting = _seq(0, list(range(9))), _seq(1, list(range(20, 29)))
    waiting.status = SequenceStatus.WAITING
    for seq in (running, waiting):
        kv.admit(seq)
        kv.reserve(seq, seq.num_new_tokens)
        seq.num_computed_tokens = seq.num_tokens
    kv.commit_running([running, waiting], [9, 9])
    assert running.num_keyed_blocks == 2  # 9 tokens: two full blocks of 4
    assert waiting.num_keyed_blocks == 0
    kv.check_invariants()


def test_the_block_tables_array_follows_every_table_as_it_grows_and_frees() -> None:
    """More sequences than the array's first rows, tables wider than its first width: each
    step's gather is the tables as lists, zero-padded, and freed rows go back to zeros."""
    kv = KVCacheManager(num_blocks=4000, block_size=BS)
    rng = random.Random(5)
    seqs = [_seq(i, list(range(rng.randrange(1, 30)))) for i in range(100)]
    for seq in seqs:
        kv.admit(seq)
        kv.reserve(seq, seq.num_new_tokens)
    for grow in range(0, 40, 8):
        for seq in seqs:
            seq.num_computed_tokens = seq.num_tokens
            seq.token_ids += [7] * grow
            kv.reserve(seq, seq.num_new_tokens)
        widest = max(len(s.block_table) for s in seqs)
        assert kv.tables.gather(seqs).tolist() == [
            s.block_table + [0] * (widest - len(s.block_table)) for s in seqs]
        kv.check_invariants()
    for seq in seqs[::2]:
        kv.free(seq)
    kv.check_invariants()
    assert all(s.table_row == -1 for s in seqs[::2])


def test_gathering_a_sequence_that_holds_no_row_is_refused() -> None:
    """A row index of -1 would read the last row's blocks: a sequence that never had blocks
    (or freed them) in a step's tables is a bug, said at once."""
    kv = KVCacheManager(num_blocks=8, block_size=BS)
    held, never = _seq(0, list(range(6))), _seq(1, list(range(3)))
    kv.admit(held)
    kv.reserve(held, held.num_new_tokens)
    with pytest.raises(AssertionError, match="without blocks"):
        kv.tables.gather([held, never])
