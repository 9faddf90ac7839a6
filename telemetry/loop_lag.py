"""How late a service's event loop runs what is ready: `kvmesh_event_loop_lag_seconds`.

Contract:
- `probed(main, service)` runs `main` with `probe(service)` beside it; every service's loop
  runs that way (`telemetry.run_service`, the gateway's processes).
- `probe(service)` runs until cancelled: it sleeps `INTERVAL_S` and observes how much later
  than asked it woke, labelled `service`. That is how long the loop was busy with callbacks
  that were ready before it (plus the wake-up itself), so every message, request and reply in
  the process waited about as long: the process's own share of a hop's latency, apart from
  the network's and the other side's.
- Cost: one wake-up every `INTERVAL_S`, a few microseconds each.
- A lag above a hop's budget with the process under a core means bursts (many callbacks made
  ready at once, as a step's deltas are); at a full core the process itself is the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from prometheus_client import Histogram

from telemetry.metrics import once

INTERVAL_S = 0.02
LAG_BUCKETS = (.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5)


def lag_histogram() -> Histogram:
    return once("event_loop_lag", lambda: Histogram(
        "kvmesh_event_loop_lag_seconds",
        "How much later than asked the service's event loop woke a timer",
        ["service"], buckets=LAG_BUCKETS))


async def probe(service: str) -> None:
    """Observe the loop's lag every `INTERVAL_S` until cancelled."""
    child = lag_histogram().labels(service)
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + INTERVAL_S
        await asyncio.sleep(INTERVAL_S)
        child.observe(max(0.0, loop.time() - asked))


async def probed(main: Coroutine[Any, Any, None], service: str) -> None:
    """`main`, with its loop's lag measured (`probe`) for as long as it runs."""
    task = asyncio.ensure_future(probe(service))
    try:
        await main
    finally:
        task.cancel()
