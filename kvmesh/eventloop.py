"""Every service's event loop: uvloop where it is installed (it halves the loop's own cost per
message and per socket write), else asyncio's. The heap built while starting (imports, config)
is frozen first (kvmesh/gc_heap.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from kvmesh import gc_heap


def run(main: Coroutine[Any, Any, None]) -> None:
    gc_heap.freeze()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
