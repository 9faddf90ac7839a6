"""The router's telemetry: the `router.route` span's attributes and the router's metrics.

`observe_route` is the `observe` hook of `@traced("router.route", observe=...)` on the router's
generate handler; `candidates` and `attempt` are one-line calls from inside it. Cheap when
tracing is off: attribute setters return at once, metrics are a counter increment each.

What `candidates` and `attempt` learn about one routing (how many workers could take it, their
block sizes, the attempt number) waits in a context variable for `observe_route`, which runs in
the same task when the handler returns: it counts the decision (why the accepted worker) and
the prompt tokens the router expected that worker to hold, against those it routed, so a
dashboard can put the predicted prefix-hit rate beside the workers' actual one.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telemetry import metrics, tracing


@dataclass
class _Routing:
    workers: int = 0
    block_size: dict[str, int] = field(default_factory=dict)
    attempts: int = 0


_routing: contextvars.ContextVar[_Routing | None] = contextvars.ContextVar(
    "kvmesh_routing", default=None)


def watch_workers(live_count: Callable[[], int]) -> None:
    """`kvmesh_router_live_workers` reads `live_count()` at each scrape."""
    metrics.router().watch_workers(live_count)


def candidates(msg: Any, views: list[Any]) -> None:
    """Record the workers the router may choose from (ids, in no particular order)."""
    tracing.set_attributes(kvmesh__request_id=msg.request_id,
                           gen_ai__request__model=msg.model,
                           kvmesh__router__candidates=[v.beat.worker_id for v in views])
    _routing.set(_Routing(len(views), {v.beat.worker_id: v.beat.block_size for v in views}))


def attempt(model: str, n: int) -> None:
    """The router asks its `n`th worker (1-based); every one after the first is a retry."""
    tracing.set_attributes(kvmesh__router__attempts=n)
    r = _routing.get()
    if r is not None:
        r.attempts = n
    if n > 1:
        metrics.router().retries.labels(model).inc()


def decision_reason(workers: int, attempts: int, overlap: int) -> str:
    """Why the accepted worker got the request (the `reason` label of router decisions)."""
    if attempts > 1:
        return "after_retry"
    if workers <= 1:
        return "only_worker"
    return "prefix_hit" if overlap > 0 else "no_prefix"


def observe_route(msg: Any, result: Any, seconds: float) -> None:
    status = getattr(result, "status", 200)
    model = (getattr(msg, "model", "") or "none") if status != 404 else "unknown"
    m = metrics.router()
    m.requests.labels(model, str(status)).inc()
    if status != 200:
        return
    m.route_latency.labels(model).observe(seconds)
    r = _routing.get() or _Routing()
    _routing.set(None)  # an actor may run its next message in this same context
    overlap = getattr(result, "prefix_overlap", 0)
    m.decisions.labels(model, decision_reason(r.workers, r.attempts, overlap)).inc()
    block = r.block_size.get(getattr(result, "worker_id", ""), 16)
    m.routed_prompt_tokens.labels(model).inc(getattr(result, "prompt_tokens", 0))
    m.predicted_prefix_tokens.labels(model).inc(overlap * block)
