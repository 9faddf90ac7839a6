"""The median time of a callable, for the microbenchmarks under bench/."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_us(fn: Callable[[], object], rounds: int, warmup: int = 1) -> float:
    """`fn()` run `warmup` times untimed, then `rounds` times: the median call, in µs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6
