"""The router's telemetry: the `router.route` span's attributes and the router's metrics
(`kvmesh_router_*`, families in `RouterMetrics`, made once per process by `metrics()`).

`observe_route` is the `observe` hook of `@traced("router.route", observe=...)` on the router's
generate handler (it also puts the accepting worker on that span); `candidates` and `attempt`
are one-line calls from inside it. Cheap when tracing is off: attribute setters return at once,
metrics are a counter increment each.

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

from prometheus_client import Counter, Gauge, Histogram

from kvmesh.wire import Accepted
from telemetry import tracing
from telemetry.metrics import TTFT_BUCKETS, once


class RouterMetrics:
    def __init__(self) -> None:
        p = "kvmesh_router_"
        self.requests = Counter(p + "requests", "Routed requests by outcome status",
                                ["model", "status"])
        self.route_latency = Histogram(p + "route_latency_seconds", "Request arrival to a "
                                       "worker's acceptance", ["model"], buckets=TTFT_BUCKETS)
        self.retries = Counter(p + "retries", "Workers tried after the first", ["model"])
        self.live_workers = Gauge(p + "live_workers", "Workers with a fresh heartbeat")
        self.decisions = Counter(p + "decisions", "Requests a worker accepted, by why that "
                                 "worker: prefix_hit (it held part of the prompt), no_prefix "
                                 "(chosen for load), only_worker, after_retry",
                                 ["model", "reason"])
        self.routed_prompt_tokens = Counter(p + "routed_prompt_tokens", "Prompt tokens of "
                                            "accepted requests", ["model"])
        self.predicted_prefix_tokens = Counter(p + "predicted_prefix_tokens", "Prompt tokens "
                                               "the router expected the chosen worker to hold "
                                               "in its prefix cache", ["model"])


def metrics() -> RouterMetrics:
    """The router's families, made on first use."""
    return once("router", RouterMetrics)


@dataclass
class _Routing:
    workers: int = 0
    block_size: dict[str, int] = field(default_factory=dict)
    attempts: int = 0


_routing: contextvars.ContextVar[_Routing | None] = contextvars.ContextVar(
    "kvmesh_routing", default=None)


def watch_workers(live_count: Callable[[], int]) -> None:
    """`kvmesh_router_live_workers` reads `live_count()` at each scrape (from the metrics
    thread, so it must not mutate what the event loop uses)."""
    metrics().live_workers.set_function(live_count)


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
        metrics().retries.labels(model).inc()


def decision_reason(workers: int, attempts: int, overlap: int) -> str:
    """Why the accepted worker got the request (the `reason` label of router decisions)."""
    if attempts > 1:
        return "after_retry"
    if workers <= 1:
        return "only_worker"
    return "prefix_hit" if overlap > 0 else "no_prefix"


def observe_route(msg: Any, result: Any, seconds: float) -> None:
    if isinstance(result, Accepted):  # on the router.route span: who took it, and why
        tracing.set_attributes(kvmesh__worker_id=result.worker_id,
                               gen_ai__usage__input_tokens=result.prompt_tokens,
                               kvmesh__router__prefix_overlap_blocks=result.prefix_overlap)
    status = getattr(result, "status", 200)
    model = (getattr(msg, "model", "") or "none") if status != 404 else "unknown"
    m = metrics()
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
