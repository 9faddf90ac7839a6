"""Keeps `kvmesh up`'s children running: restart with backoff, give up on a crash loop.

Contract (`Supervisor.poll()`, called every half second or so by the launcher):
- A child that exits is started again (same command, same log file, appended) after a pause
  that doubles with each quick death in a row: `backoff_s`, 2x, 4x... at most `max_backoff_s`.
- A death is quick when the child lived less than `quick_s`. After `give_up_after` quick deaths
  in a row the supervisor stops restarting that child and says so (`Event.gave_up`); a child
  that lived longer than `quick_s` starts a new count.
- `poll` returns what happened (exits, restarts, give-ups) for the launcher to print; it never
  blocks and never raises for a child's failure.
- `essential_lost()` names a service the mesh cannot serve without, once given up: nats,
  redis, router or auth, or every copy of a service that runs several (workers, gateways).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kvmesh.cli import procs

ESSENTIAL = ("nats", "redis", "router", "auth", "w", "gateway")  # name prefixes; "w" = workers


@dataclass
class Event:
    name: str
    what: str  # "exited", "restarted" or "gave_up"
    detail: str = ""

    def __str__(self) -> str:
        return f"kvmesh: {self.name} {self.what.replace('_', ' ')}{self.detail}"


@dataclass
class Supervised:
    name: str
    start: Callable[[], procs.Child]
    child: procs.Child
    started_at: float
    quick_deaths: int = 0
    restart_at: float | None = None
    given_up: bool = False


class Supervisor:
    def __init__(self, quick_s: float = 30.0, give_up_after: int = 3, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quick_s, self.give_up_after = quick_s, give_up_after
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.clock = clock
        self.services: list[Supervised] = []

    def add(self, name: str, start: Callable[[], procs.Child]) -> procs.Child:
        """Start `name` with `start()` and keep it running; returns the first child."""
        child = start()
        self.services.append(Supervised(name, start, child, self.clock()))
        return child

    @property
    def children(self) -> list[procs.Child]:
        return [s.child for s in self.services]

    def poll(self) -> list[Event]:
        now = self.clock()
        events: list[Event] = []
        for s in self.services:
            if s.given_up:
                continue
            if s.restart_at is not None:
                if now >= s.restart_at:
                    s.child, s.started_at, s.restart_at = s.start(), now, None
                    events.append(Event(s.name, "restarted", f" (pid {s.child.proc.pid})"))
                continue
            if s.child.alive:
                continue
            events.append(self._died(s, now))
        return events

    def _died(self, s: Supervised, now: float) -> Event:
        lived = now - s.started_at
        # a long life ends a run of quick deaths: its own death is no quick one
        s.quick_deaths = s.quick_deaths + 1 if lived < self.quick_s else 0
        code = s.child.proc.returncode
        if s.quick_deaths >= self.give_up_after:
            s.given_up = True
            return Event(s.name, "gave_up", f": it exited ({code}) {s.quick_deaths} times in a "
                         f"row within {self.quick_s:g}s of starting; not restarting it")
        pause = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, s.quick_deaths - 1))
        s.restart_at = now + pause
        return Event(s.name, "exited", f" ({code}) after {lived:.0f}s; restarting in {pause:g}s")

    def essential_lost(self) -> str | None:
        """The first essential service with no copy left running or coming back, if any."""
        for prefix in ESSENTIAL:
            group = [s for s in self.services if _kind(s.name) == prefix]
            if group and all(s.given_up for s in group):
                return group[0].name if len(group) == 1 else f"every {prefix}*"
        return None


def _kind(name: str) -> str:
    """`w0` -> "w", `gateway1` -> "gateway": the service a child is a copy of."""
    return name.rstrip("0123456789")
