"""What a gateway or a router knows about workers: their last heartbeat, rebuilt from the
heartbeat stream. One registry, one liveness rule and one context rule for both.

- A worker is live while its last heartbeat is younger than `dead_after` seconds; it takes new
  requests while live and not draining (`live()`), and keeps serving what it holds while
  draining (`is_live()`).
- A heartbeat that is out of range (no id or model, a block size outside [1, 4096], a context
  under 2 tokens, usage outside [0, 1], negative counts) is refused and logged: one bad or forged
  heartbeat never changes how requests are routed or checked.
- Each worker's context is its own (`fits`): one worker's smaller `max_model_len` never limits
  requests that another worker can hold. (The router sends a request without `max_tokens`,
  which runs to its context's end, to the widest context that holds it: router/service.py.)
- Between heartbeats a router counts requests it sent to a worker (`pending`) so that a burst
  does not all land on the worker that looked idle; a new heartbeat resets it, since the
  heartbeat then counts those requests itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kvmesh.wire import Heartbeat

log = logging.getLogger("kvmesh.workers")
MAX_BLOCK_SIZE = 4096


@dataclass
class WorkerView:
    beat: Heartbeat
    seen_at: float  # time.monotonic() of the last heartbeat
    pending: int = 0

    def fits(self, prompt_tokens: int, max_tokens: int | None = None) -> bool:
        """Whether this worker's context holds the prompt (plus `max_tokens`, when given)."""
        ctx = self.beat.max_model_len
        return prompt_tokens < ctx and (max_tokens is None or prompt_tokens + max_tokens <= ctx)


def heartbeat_problem(beat: Heartbeat) -> str | None:
    """Why `beat` cannot be believed, or None."""
    if not beat.worker_id or not beat.model:
        return "no worker id or model"
    if not 1 <= beat.block_size <= MAX_BLOCK_SIZE:
        return f"block_size {beat.block_size} outside [1, {MAX_BLOCK_SIZE}]"
    if beat.max_model_len < 2:
        return f"max_model_len {beat.max_model_len} < 2"
    if not 0.0 <= beat.kv_usage <= 1.0:
        return f"kv_usage {beat.kv_usage} outside [0, 1]"
    counts = (beat.running, beat.waiting, beat.num_blocks, beat.free_blocks, beat.used_blocks,
              beat.cached_blocks)
    if min(counts) < 0:
        return "a negative count"
    return None


class WorkerRegistry:
    def __init__(self, dead_after: float) -> None:
        self.dead_after = dead_after
        self._workers: dict[str, WorkerView] = {}

    def observe(self, beat: Heartbeat) -> bool:
        """Record `beat`; False (and a log line) when it is out of range and was refused."""
        problem = heartbeat_problem(beat)
        if problem is not None:
            log.warning("ignoring heartbeat of %r: %s", beat.worker_id, problem)
            return False
        self._workers[beat.worker_id] = WorkerView(beat, time.monotonic())
        return True

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
        """Heard from recently, draining or not (a draining worker still finishes its work)."""
        view = self._workers.get(worker_id)
        return view is not None and time.monotonic() - view.seen_at <= self.dead_after

    def presumed_dead(self, worker_id: str, since: float) -> bool:
        """Whether a request `worker_id` accepted at `since` (monotonic) should be given up: its
        last heartbeat is too old, or none was heard in the `dead_after` since then (a fresh
        gateway may get a worker's deltas before its first heartbeat)."""
        view = self._workers.get(worker_id)
        now = time.monotonic()
        heard = view.seen_at if view is not None else since
        return now - max(heard, since) > self.dead_after

    def models(self) -> dict[str, int]:
        """Model name -> the largest context among its live workers."""
        out: dict[str, int] = {}
        for v in self.live():
            m = v.beat.model
            out[m] = max(out.get(m, 0), v.beat.max_model_len)
        return out

    def created(self, model: str) -> int:
        """When `model`'s files were made (Unix seconds), the oldest among its live workers
        that know; 0 when none does."""
        return min((v.beat.created for v in self.live(model) if v.beat.created), default=0)

    def revision(self, model: str) -> str:
        """The revisions live workers serve `model` at, joined (for result-cache keys)."""
        return ",".join(sorted({v.beat.revision for v in self.live(model)}))
