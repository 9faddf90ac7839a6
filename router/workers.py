"""What a router knows about workers: their last heartbeat, rebuilt from the heartbeat stream.

A worker is live while its last heartbeat is younger than `dead_after` seconds and it is not
draining. Between heartbeats the router counts requests it sent to a worker (`pending`) so
that a burst does not all land on the worker that looked idle; a new heartbeat resets it,
since the heartbeat then counts those requests itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kvmesh.wire import Heartbeat


@dataclass
class WorkerView:
    beat: Heartbeat
    seen_at: float  # time.monotonic() of the last heartbeat
    pending: int = 0


class WorkerRegistry:
    def __init__(self, dead_after: float) -> None:
        self.dead_after = dead_after
        self._workers: dict[str, WorkerView] = {}

    def observe(self, beat: Heartbeat) -> None:
        self._workers[beat.worker_id] = WorkerView(beat, time.monotonic())

    def sent(self, worker_id: str) -> None:
        view = self._workers.get(worker_id)
        if view is not None:
            view.pending += 1

    def forget(self, worker_id: str) -> None:
        """Drop a worker that did not answer; its next heartbeat brings it back."""
        self._workers.pop(worker_id, None)

    def live(self, model: str | None = None) -> list[WorkerView]:
        """Live, non-draining workers (serving `model`, when given)."""
        now = time.monotonic()
        for wid in [w for w, v in self._workers.items() if now - v.seen_at > 4 * self.dead_after]:
            del self._workers[wid]  # long dead: keep the map small
        return [v for v in self._workers.values()
                if now - v.seen_at <= self.dead_after and not v.beat.draining
                and (model is None or v.beat.model == model)]

    def live_count(self) -> int:
        """Live, non-draining workers now; reads without changing anything, so the metrics
        thread may call it (`list()` of a dict's values holds the GIL throughout)."""
        now = time.monotonic()
        return sum(1 for v in list(self._workers.values())
                   if now - v.seen_at <= self.dead_after and not v.beat.draining)

    def is_live(self, worker_id: str) -> bool:
        view = self._workers.get(worker_id)
        return view is not None and time.monotonic() - view.seen_at <= self.dead_after

    def models(self) -> dict[str, int]:
        """Model name -> the smallest max_model_len among its live workers."""
        out: dict[str, int] = {}
        for v in self.live():
            m = v.beat.model
            out[m] = min(out.get(m, v.beat.max_model_len), v.beat.max_model_len)
        return out
