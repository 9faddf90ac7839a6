"""Polling without sleeping for a while after each message, so that the next one is read by a
process that is running rather than by one the OS must first wake.

Why: at one stream every hop of a first token finds its process asleep in `epoll_wait` (or the
engine process in `poll`), and on the virtual machines GPUs are rented on, waking a sleeping
vCPU costs far more than the hop's own work. On an H100 host a request through nats-server to
another process and back took 55-69 us back to back, 200-500 us after 4-50 ms idle, and
135-270 us so idle with both processes polling; the mesh's share of one stream's first token
(its TTFT less the engine's) fell by 0.38 ms on the mean of six fresh meshes, from 3.10 to
2.72 ms (docs/BENCHMARKS.md, issue 12, thirty-seventh session).

Contract:
- `BusyPoll(window)`: `touch()` keeps the running loop polling until `window` seconds after the
  latest touch, then lets it sleep again. Polling is a task that yields to the loop
  (`asyncio.sleep(0)`) in a loop, so every ready callback and every I/O event still runs in
  order between its turns; it costs one core while it lasts and none after. A window of 0 turns
  it off: `touch` does nothing.
- `touch()` is cheap enough for every message (a clock read and a store while polling already).
- `install(window)` makes one process-wide `BusyPoll` that `touch()` (the module function, for
  the places messages arrive: kvmesh/nats_client.py, inference/engine_pipe.py) reaches;
  without it `touch()` does nothing. `eventloop.run` installs it from the service's config.
- `default_window(cpus, pollers, gpu)`: what `kvmesh up` gives its services when not told:
  `AUTO_WINDOW` where the engines run on a GPU and the `pollers` processes that would poll
  take at most one CPU in `CPUS_PER_POLLER` (a GPU host of 16 CPUs with one gateway, router,
  worker and engine), else 0: on a laptop or CI runner, or with more gateways and workers than
  the CPUs spare, polling processes would starve the rest, and a CPU engine's torch threads
  want every core.
- `spin_until(deadline, ready)` is the engine process's form (no event loop there): call
  `ready()` until it is true or the monotonic clock passes `deadline`; its result is `ready`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

AUTO_WINDOW = 0.5  # seconds: longer than one stream's request, so the router stays awake
CPUS_PER_POLLER = 4


def default_window(cpus: int, pollers: int, gpu: bool) -> float:
    """The window `kvmesh up` uses on `cpus` CPUs with `pollers` processes that would poll,
    engines on a GPU or not, when not told one (see the module contract)."""
    return AUTO_WINDOW if gpu and cpus >= CPUS_PER_POLLER * pollers else 0.0


class BusyPoll:
    """See the module contract."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.until = 0.0
        self.task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        if self.window <= 0:
            return
        self.until = time.monotonic() + self.window
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        try:
            while time.monotonic() < self.until:
                await asyncio.sleep(0)  # one loop iteration whose poll does not sleep
        finally:
            self.task = None


_process: BusyPoll | None = None


def install(window: float) -> None:
    """The process's `BusyPoll` (see the module contract); a window of 0 removes it."""
    global _process
    _process = BusyPoll(window) if window > 0 else None


def touch() -> None:
    """Keep this process's loop polling (see the module contract); must run on the loop."""
    if _process is not None:
        _process.touch()


def spin_until(deadline: float, ready: Callable[[], bool]) -> bool:
    """Call `ready` until it is true or `time.monotonic()` passes `deadline`."""
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
