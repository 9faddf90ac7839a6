"""Whether a worker's engine process is stalled: alive, but not stepping.

A paused (SIGSTOP), deadlocked or starved engine process does not exit, so the worker's
`on_exit` never fires; its heartbeats would go on, with stats frozen at the last step, and
routers would keep sending it requests that time out one by one. The worker watches instead:

- It is *stalled* when it has held requests for `timeout` seconds with no step arriving
  (time counted from the later of the last step and the moment it went from holding nothing
  to holding something: an idle engine sends no steps and is not stalled).
- Once stalled it stays so until a step arrives, whether or not it still holds requests
  (clients cancel what it held; that does not prove the engine runs). The worker asks for
  one with a `Probe` on each check while stalled, so an engine that runs again, with work or
  without, says so within a check.

While stalled the worker sends no heartbeats (routers and gateways count it dead after
`worker_dead_after`: they fail or re-route what it held, and send it nothing new) and
refuses requests with 503 `engine_stalled`. `timeout` 0 turns the watch off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class StallWatch:
    timeout: float  # seconds; 0 = never stalled
    stalled: bool = False
    _last_step: float = 0.0
    _busy_since: float = 0.0

    def busy(self, now: float | None = None) -> None:
        """The worker went from holding no request to holding one."""
        self._busy_since = time.monotonic() if now is None else now

    def stepped(self, now: float) -> None:
        """A step arrived: the engine runs."""
        self._last_step = now
        self.stalled = False

    def check(self, holding: bool, now: float | None = None) -> bool:
        """Whether the engine is stalled now (`holding`: the worker holds requests)."""
        now = time.monotonic() if now is None else now
        if self.timeout and holding and not self.stalled:
            self.stalled = now - max(self._last_step, self._busy_since) > self.timeout
        return self.stalled
