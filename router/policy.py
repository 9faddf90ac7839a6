"""Which worker gets a request: the routing policies, picked by name (`RouterConfig.policy`).

Every policy ranks the same `Candidate`s (live workers whose circuit is closed, minus those the
request excludes) and returns all of them in preference order; the router tries them in turn
until one accepts. Common rules:
- `load` is running + waiting + `pending` (sent by this router since the worker's last
  heartbeat, so a burst does not all land on the worker that looked idle).
- Overload guard: a worker with `load >= overload_queue` or KV usage >= `overload_kv_usage` is
  ranked after every worker that is not overloaded, whatever it holds in cache. That is what
  prevents the "death spiral" of piling requests onto the hot-cache worker.
- Ties go to the lower worker id, so a ranking is deterministic.

Policies:
- `kv`: cost = prefill blocks the worker would still compute (prompt blocks minus its cached
  prefix overlap) + `kv_load_weight` x load, minus `affinity_bonus` on the session's home worker
  (rendezvous hash of the session over the candidates, so router replicas agree without sharing
  state). Lowest cost first.
- `least-loaded`: lowest load first, then lower KV usage.
- `round-robin`: the next worker in id order each call (not overloaded ones first).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b

from kvmesh.block_hash import BlockHash
from kvmesh.config import ROUTING_POLICIES
from kvmesh.worker_registry import WorkerView


def worker_load(view: WorkerView) -> int:
    """Running + waiting at the last heartbeat + sent by this router since then."""
    return view.beat.running + view.beat.waiting + view.pending


@dataclass
class Candidate:
    view: WorkerView
    overlap: int  # leading prompt blocks the worker holds
    prompt_blocks: int  # full blocks of the prompt
    overloaded: bool
    keys: Sequence[BlockHash] = ()  # the prompt's block chain at this worker's block size

    @property
    def worker_id(self) -> str:
        return self.view.beat.worker_id

    @property
    def load(self) -> int:
        return worker_load(self.view)


@dataclass(frozen=True)
class PolicyParams:
    kv_load_weight: float = 4.0
    overload_queue: int = 16
    overload_kv_usage: float = 0.95
    affinity_bonus: float = 8.0


def is_overloaded(view: WorkerView, p: PolicyParams) -> bool:
    return worker_load(view) >= p.overload_queue or view.beat.kv_usage >= p.overload_kv_usage


def home_worker(session: str, worker_ids: list[str]) -> str | None:
    """Rendezvous (highest random weight) hash: the session's worker among `worker_ids`; only
    sessions whose home left move when the set changes."""
    if not session or not worker_ids:
        return None

    def weight(wid: str) -> int:
        return int.from_bytes(blake2b(f"{session}\0{wid}".encode(), digest_size=8).digest())

    return max(worker_ids, key=weight)


Rank = Callable[[list[Candidate], str], list[Candidate]]


class Policy:
    """A named ranking. `rank(candidates, session)` returns every candidate, best first."""

    def __init__(self, name: str, params: PolicyParams) -> None:
        if name not in ROUTING_POLICIES:
            raise ValueError(f"unknown routing policy {name!r}; choose one of {ROUTING_POLICIES}")
        self.name = name
        self.params = params
        self._rr = itertools.count()
        self.rank: Rank = {
            "kv": self._kv,
            "least-loaded": self._least_loaded,
            "round-robin": self._round_robin,
        }[name]

    def _kv(self, cands: list[Candidate], session: str) -> list[Candidate]:
        p = self.params
        home = home_worker(session, [c.worker_id for c in cands if not c.overloaded])

        def cost(c: Candidate) -> tuple[bool, float, int, str]:
            if c.overloaded:  # its cache does not count: least loaded among the overloaded
                return (True, float(c.load), c.load, c.worker_id)
            value = (c.prompt_blocks - c.overlap) + p.kv_load_weight * c.load
            if c.worker_id == home:
                value -= p.affinity_bonus
            return (False, value, c.load, c.worker_id)

        return sorted(cands, key=cost)

    def _least_loaded(self, cands: list[Candidate], session: str) -> list[Candidate]:
        return sorted(
            cands, key=lambda c: (c.overloaded, c.load, c.view.beat.kv_usage, c.worker_id)
        )

    def _round_robin(self, cands: list[Candidate], session: str) -> list[Candidate]:
        ordered = sorted(cands, key=lambda c: c.worker_id)
        if not ordered:
            return ordered
        turn = next(self._rr) % len(ordered)
        rotated = ordered[turn:] + ordered[:turn]
        return sorted(rotated, key=lambda c: c.overloaded)  # stable: keeps the rotation
