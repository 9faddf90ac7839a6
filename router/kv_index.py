"""The router's picture of every worker's KV cache, built only from the workers' KV events.

Contract:
- Per worker, the set of block hashes (`kvmesh.block_hash` chained keys) it holds now.
  Incremental `KVEvent`s add `stored` and drop `evicted`; a `full` event replaces the set.
- Events of one worker carry `seq` 1, 2, 3...; an event whose `seq` is not the next one means
  events were lost (NATS core is at-most-once), so the worker is marked stale and `needs_resync`
  names it until a `full` event arrives. A worker the index has never seen is stale too: that
  is how a router that starts (or a worker that reappears) rebuilds from scratch.
- `overlap(worker, keys)` counts the leading keys of a prompt's chain that the worker holds.
  Because keys are chained, the first miss ends the shared prefix.
- Nothing here is authoritative: a wrong guess costs a prefill, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmesh.block_hash import BlockHash
from kvmesh.wire import KVEvent


@dataclass
class WorkerBlocks:
    keys: set[int] = field(default_factory=set)
    seq: int = 0
    stale: bool = True  # contents unknown until a full event


class KVIndex:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerBlocks] = {}

    def apply(self, event: KVEvent) -> None:
        w = self._workers.setdefault(event.worker_id, WorkerBlocks())
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

    def needs_resync(self, worker_id: str) -> bool:
        w = self._workers.get(worker_id)
        return w is None or w.stale

    def mark_stale(self, worker_id: str) -> None:
        self._workers.setdefault(worker_id, WorkerBlocks()).stale = True

    def drop(self, worker_id: str) -> None:
        """Forget a worker that died; when it comes back it resends its set."""
        self._workers.pop(worker_id, None)

    def overlap(self, worker_id: str, keys: Sequence[BlockHash]) -> int:
        """Leading blocks of `keys` (a prompt's chain) that `worker_id` holds."""
        w = self._workers.get(worker_id)
        if w is None:
            return 0
        held = w.keys
        n = 0
        for k in keys:
            if k not in held:
                break
            n += 1
        return n
