"""The router's picture of every worker's KV cache: the workers' KV events, plus what it routed.

Contract:
- Per worker, the set of block hashes (`kvmesh.block_hash` chained keys) it holds now.
  Incremental `KVEvent`s add `stored` and drop `evicted`; a `full` event replaces the set.
- Events of one worker carry `seq` 1, 2, 3...; an event whose `seq` is not the next one means
  events were lost (NATS core is at-most-once), so the worker is marked stale and `needs_resync`
  names it until a `full` event arrives. A worker the index has never seen is stale too: that
  is how a router that starts (or a worker that reappears) rebuilds from scratch.
- `expect(worker, keys)`: the router just sent a prompt with these keys to that worker, which
  will store them once it has prefilled it. Its KV event comes later, after the first token
  has gone to the client, so a client that sends the same prefix again at once could beat it
  to the router and be sent to another worker. Expected keys count as held for `EXPECT_S`
  seconds, until the worker's event stores them, or until it evicts them.
- `overlap(worker, keys)` counts the leading keys of a prompt's chain that the worker holds or
  is expected to. Because keys are chained, the first miss ends the shared prefix.
- Nothing here is authoritative: a wrong guess costs a prefill, never a wrong answer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmesh.block_hash import BlockHash
from kvmesh.wire import KVEvent

# Long enough for a routed prompt to wait in a busy worker's queue and be prefilled; short
# enough that a request aborted before its prefill misleads routing only briefly.
EXPECT_S = 5.0


@dataclass
class WorkerBlocks:
    keys: set[int] = field(default_factory=set)
    seq: int = 0
    stale: bool = True  # contents unknown until a full event
    expected: dict[int, float] = field(default_factory=dict)  # key -> monotonic deadline
    # (deadline, keys) in the order `expect` added them: deadlines only grow, so expired
    # entries are swept from the left, a constant amount of work per key added
    expiry: deque[tuple[float, Sequence[int]]] = field(default_factory=deque)


class KVIndex:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerBlocks] = {}

    def apply(self, event: KVEvent) -> None:
        w = self._workers.setdefault(event.worker_id, WorkerBlocks())
        if w.expected:
            for k in event.stored:
                w.expected.pop(k, None)
            for k in event.evicted:
                w.expected.pop(k, None)
        if event.full:
            w.keys = set(event.stored)
            w.keys.difference_update(event.evicted)
            w.seq, w.stale = event.seq, False
            return
        if event.seq and w.seq and event.seq != w.seq + 1:
            w.stale = True  # lost events: keep what we have as a hint, ask for the whole set
        w.seq = event.seq or w.seq
        w.keys.update(event.stored)
        w.keys.difference_update(event.evicted)

    def expect(self, worker_id: str, keys: Sequence[BlockHash]) -> None:
        """`worker_id` was sent a prompt with `keys`: count them as held for `EXPECT_S`."""
        w = self._workers.get(worker_id)
        if w is None or not keys:
            return
        now = time.monotonic()
        _sweep(w, now)
        deadline = now + EXPECT_S
        held, expected = w.keys, w.expected
        for k in keys:
            if k not in held:
                expected[k] = deadline
        w.expiry.append((deadline, keys))

    def needs_resync(self, worker_id: str) -> bool:
        w = self._workers.get(worker_id)
        return w is None or w.stale

    def mark_stale(self, worker_id: str) -> None:
        self._workers.setdefault(worker_id, WorkerBlocks()).stale = True

    def worker_ids(self) -> list[str]:
        return list(self._workers)

    def drop(self, worker_id: str) -> None:
        """Forget a worker that died; when it comes back it resends its set."""
        self._workers.pop(worker_id, None)

    def overlap(self, worker_id: str, keys: Sequence[BlockHash]) -> int:
        """Leading blocks of `keys` (a prompt's chain) that `worker_id` holds or will."""
        w = self._workers.get(worker_id)
        if w is None:
            return 0
        held, expected = w.keys, w.expected
        now = time.monotonic() if expected else 0.0
        n = 0
        for k in keys:
            if k not in held and expected.get(k, 0.0) <= now:
                break
            n += 1
        return n


def _sweep(w: WorkerBlocks, now: float) -> None:
    """Forget the expected keys whose deadline has passed."""
    expiry, expected = w.expiry, w.expected
    while expiry and expiry[0][0] <= now:
        deadline, keys = expiry.popleft()
        for k in keys:
            if expected.get(k) == deadline:
                del expected[k]
