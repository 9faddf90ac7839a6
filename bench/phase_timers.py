"""Wall time per engine phase: wrap methods (or module functions) in timers that add up."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

TIMED: collections.Counter[str] = collections.Counter()
"""Seconds spent inside each wrapped phase, by key, since the last `TIMED.clear()`."""


def wrap_all(targets: Iterable[tuple[Any, str, str]]) -> None:
    """For each (owner, attribute, key): replace `owner.attribute` with a version whose wall
    time is added to `TIMED[key]`. Phases may nest; each counts its own whole time."""
    for owner, name, key in targets:
        fn: Callable[..., Any] = getattr(owner, name)
        setattr(owner, name, _timed(fn, key))


def _timed(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMED[key] += time.perf_counter() - t0

    return timed
