"""Which worker gets a request: least loaded first (cache-aware scoring is a later step).

Load is the number of sequences the worker has (running + waiting + sent since its last
heartbeat); ties go to the worker with more free KV blocks, then to the lower id so the order
is deterministic. `rank` returns every candidate in preference order: the router tries them in
turn until one accepts.
"""

from __future__ import annotations

from router.workers import WorkerView


def load_of(view: WorkerView) -> tuple[int, float, str]:
    b = view.beat
    return (b.running + b.waiting + view.pending, b.kv_usage, b.worker_id)


def rank(candidates: list[WorkerView]) -> list[WorkerView]:
    return sorted(candidates, key=load_of)
