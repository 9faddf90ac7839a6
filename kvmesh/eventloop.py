"""Every service's event loop: uvloop where it is installed (it halves the loop's own cost per
message and per socket write), else asyncio's. The heap built while starting (imports, config)
is frozen first (kvmesh/gc_heap.py); `busy_poll` seconds is how long the loop polls without
sleeping after each message (kvmesh/busy_poll.py; 0 = never)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from kvmesh import busy_poll as polling
from kvmesh import gc_heap


def run(main: Coroutine[Any, Any, None], busy_poll: float = 0.0) -> None:
    gc_heap.freeze()
    polling.install(busy_poll)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
