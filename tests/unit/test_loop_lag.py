"""The event-loop lag probe (telemetry/loop_lag.py) and the startup heap's freeze
(kvmesh/gc_heap.py)."""

from __future__ import annotations

import asyncio
import gc
import time

from kvmesh import gc_heap
from telemetry import loop_lag


def _lag(service: str) -> tuple[float, float]:
    """(sum, count) of the service's lag histogram so far."""
    child = loop_lag.lag_histogram().labels(service)
    count = sum(b.get() for b in child._buckets)
    return child._sum.get(), count


def test_a_callback_that_holds_the_loop_shows_as_lag() -> None:
    async def main() -> None:
        await asyncio.sleep(0.05)  # the probe's first timer is running
        time.sleep(0.2)  # holds the loop: the probe wakes ~0.2 s late
        await asyncio.sleep(0.05)

    asyncio.run(loop_lag.probed(main(), "test-held"))
    total, count = _lag("test-held")
    assert count >= 2
    assert total >= 0.15


def test_an_idle_loop_shows_little_lag() -> None:
    async def main() -> None:
        await asyncio.sleep(0.3)

    asyncio.run(loop_lag.probed(main(), "test-idle"))
    total, count = _lag("test-idle")
    assert count >= 5
    assert total / count < 0.1  # no callback held it; a loaded CI machine still wakes it


def test_the_probe_stops_with_main() -> None:
    async def main() -> None:
        await asyncio.sleep(0.05)

    async def outer() -> set[asyncio.Task]:
        await loop_lag.probed(main(), "test-stop")
        await asyncio.sleep(0)  # the cancelled probe finishes
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert asyncio.run(outer()) == set()


def test_freeze_keeps_what_is_alive_out_of_collections() -> None:
    alive = [[i] for i in range(1000)]  # tracked containers, alive at the freeze
    gc_heap.freeze()
    try:
        assert gc.get_freeze_count() >= len(alive)
        scanned = {id(o) for o in gc.get_objects()}  # what collections walk: no frozen object
        assert not scanned & {id(x) for x in alive}
    finally:
        gc.unfreeze()
