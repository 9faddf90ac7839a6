"""The router's telemetry: the `router.route` span's attributes and the router's metrics.

`observe_route` is the `observe` hook of `@traced("router.route", observe=...)` on the router's
generate handler; `candidates` and `attempt` are one-line calls from inside it. Cheap when
tracing is off: attribute setters return at once, metrics are a counter increment each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telemetry import metrics, tracing


def watch_workers(live_count: Callable[[], int]) -> None:
    """`kvmesh_router_live_workers` reads `live_count()` at each scrape."""
    metrics.router().watch_workers(live_count)


def candidates(msg: Any, views: list[Any]) -> None:
    """Record the workers the router may choose from (ids, in no particular order)."""
    tracing.set_attributes(kvmesh__request_id=msg.request_id,
                           gen_ai__request__model=msg.model,
                           kvmesh__router__candidates=[v.beat.worker_id for v in views])


def attempt(model: str, n: int) -> None:
    """The router asks its `n`th worker (1-based); every one after the first is a retry."""
    tracing.set_attributes(kvmesh__router__attempts=n)
    if n > 1:
        metrics.router().retries.labels(model).inc()


def observe_route(msg: Any, result: Any, seconds: float) -> None:
    status = getattr(result, "status", 200)
    model = (getattr(msg, "model", "") or "none") if status != 404 else "unknown"
    m = metrics.router()
    m.requests.labels(model, str(status)).inc()
    if status == 200:
        m.route_latency.labels(model).observe(seconds)
