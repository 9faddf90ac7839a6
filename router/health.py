"""Failover helpers of the router: a circuit breaker per worker, and retry backoff with jitter.

Circuit breaker contract (per worker id):
- closed: requests flow. Each failure to accept (no responders, timeout, 5xx) counts; a
  success resets the count. `failures` consecutive failures open the circuit.
- open: the worker is not offered to the policy for `cooldown` seconds.
- half-open: after the cool-down one trial request may go; success closes the circuit,
  failure opens it for another cool-down. A trial that ends with neither (its caller went
  away: `abandon`) lets the next request be the trial.
Heartbeat liveness (kvmesh/worker_registry.py) is separate: a worker that stops heartbeating is
dropped whatever its circuit says; a breaker catches a worker that heartbeats but does not serve.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass
class Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_out: bool = False


class Breakers:
    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = max(1, failures)
        self.cooldown = cooldown
        self._circuits: dict[str, Circuit] = {}

    def allows(self, worker_id: str) -> bool:
        c = self._circuits.get(worker_id)
        if c is None or c.opened_at is None:
            return True
        if time.monotonic() - c.opened_at < self.cooldown:
            return False
        return not c.trial_out  # half-open: one trial at a time

    def attempt(self, worker_id: str) -> None:
        c = self._circuits.get(worker_id)
        if c is not None and c.opened_at is not None:
            c.trial_out = True

    def worker_ids(self) -> list[str]:
        return list(self._circuits)

    def forget(self, worker_id: str) -> None:
        """A worker gone for good: its circuit goes with it."""
        self._circuits.pop(worker_id, None)

    def abandon(self, worker_id: str) -> None:
        """An attempt that ended with no answer to judge by (cancelled)."""
        c = self._circuits.get(worker_id)
        if c is not None:
            c.trial_out = False

    def success(self, worker_id: str) -> None:
        self._circuits.pop(worker_id, None)

    def failure(self, worker_id: str) -> None:
        c = self._circuits.setdefault(worker_id, Circuit())
        c.failures += 1
        c.trial_out = False
        if c.failures >= self.threshold or c.opened_at is not None:
            c.opened_at = time.monotonic()

    def state(self, worker_id: str) -> str:
        c = self._circuits.get(worker_id)
        if c is None or c.opened_at is None:
            return "closed"
        return "open" if time.monotonic() - c.opened_at < self.cooldown else "half-open"


def backoff(attempt: int, base: float, cap: float = 2.0) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry): exponential with
    full jitter, so retries of many requests do not arrive together."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2 ** (attempt - 1))
