"""Whether a worker's engine process is stalled: alive, but not stepping.

A paused (SIGSTOP), deadlocked or starved engine process does not exit, so the worker's
`on_exit` never fires; its heartbeats would go on, with stats frozen at the last step, and
routers would keep sending it requests that time out one by one. The worker watches instead:

- It is *stalled* when it has held requests for `timeout` seconds with no step arriving
  (time counted from the later of the last step and the moment it went from holding nothing
  to holding something), or when a `Probe` it sent has gone `timeout` seconds unanswered.
- An idle engine sends no steps, so the worker asks for one (`wants_probe`) once none has
  come for half of `timeout`: an idle engine that stalls is found within about 1.5 × `timeout`
  and before a request is sent to it, not by the first request's wait.
- Once stalled it stays so until a step arrives, whether or not it still holds requests
  (clients cancel what it held; that does not prove the engine runs). The worker keeps one
  `Probe` in the pipe while stalled, so an engine that runs again, with work or without,
  says so at once.

While stalled the worker sends no heartbeats (routers and gateways count it dead after
`worker_dead_after`: they fail or re-route what it held, and send it nothing new) and
refuses requests with 503 `engine_stalled`. `timeout` 0 turns the watch off (and its probes).
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
    _probe_sent: float | None = None  # a Probe is in the engine's pipe since then

    def busy(self, now: float | None = None) -> None:
        """The worker went from holding no request to holding one."""
        self._busy_since = time.monotonic() if now is None else now

    def stepped(self, now: float) -> None:
        """A step arrived: the engine runs (and has answered any probe)."""
        self._last_step = now
        self._probe_sent = None
        self.stalled = False

    def wants_probe(self, holding: bool, now: float) -> bool:
        """Whether to send a `Probe` now (then call `probed`): none is in the pipe, and the
        engine is stalled or idle with no step for half of `timeout`. A busy engine steps
        by itself."""
        if not self.timeout or self._probe_sent is not None:
            return False
        return self.stalled or (not holding and now - self._last_step > self.timeout / 2)

    def probed(self, now: float) -> None:
        """A `Probe` was sent: a step must answer it within `timeout`."""
        self._probe_sent = now

    def check(self, holding: bool, now: float | None = None) -> bool:
        """Whether the engine is stalled now (`holding`: the worker holds requests)."""
        now = time.monotonic() if now is None else now
        if self.timeout and not self.stalled:
            since = max(self._last_step, self._busy_since)
            self.stalled = ((holding and now - since > self.timeout)
                            or (self._probe_sent is not None
                                and now - self._probe_sent > self.timeout))
        return self.stalled
