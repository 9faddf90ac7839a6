"""Prometheus plumbing every kvmesh service shares; each service's own families live beside it
(gateway/telemetry.py, router/telemetry.py, inference/metrics.py, auth/telemetry.py,
cache/telemetry.py).

Contract:
- `once(name, make)` returns the object `make()` built on the first call for `name` (a
  service's families, registered in the process's default registry once: registering twice
  would raise), so a process exposes only the families of the service it runs (plus the
  client's process and platform collectors). Names start with `kvmesh_<service>_`; latencies
  are histograms in seconds (the shared buckets below); counters end in `_total`.
- Labels: `model` (bounded: served model names) everywhere it applies; `tenant` only where a
  service's module says so (bounded by the tenant table); never a request id or a prompt.
- `describe_instance(service, instance)` exports `kvmesh_service_info{service, instance}`
  (telemetry.setup calls it), which joins a scrape target to a worker's heartbeats.
- `serve_metrics(port)` exposes `/metrics` on its own port (every service but the gateway;
  0 = off); a port that is taken logs a warning instead of killing the service. The gateway
  serves `render()` at its own `/metrics` route.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("kvmesh.telemetry")
CONTENT_TYPE = CONTENT_TYPE_LATEST
T = TypeVar("T")

TTFT_BUCKETS = (.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2.5, 5, 10, 20, 40)
ITL_BUCKETS = (.001, .0025, .005, .01, .015, .02, .025, .03, .04, .05, .075, .1, .25, .5, 1)
E2E_BUCKETS = (.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class InstanceInfo(Collector):
    """`kvmesh_service_info{service, instance} 1`: which service and instance (a worker's id)
    a scrape target is, so a dashboard or `kvmesh top` can join an endpoint to its heartbeats."""

    def __init__(self, service: str, instance: str) -> None:
        self.service, self.instance = service, instance

    def collect(self) -> Iterable[Any]:
        f = GaugeMetricFamily("kvmesh_service_info", "This process: service and instance id",
                              labels=["service", "instance"])
        f.add_metric([self.service, self.instance], 1)
        yield f


def observe_many(child: Any, values: Sequence[float]) -> None:
    """`child.observe(v)` for each of `values`, in one pass: their buckets counted by `bisect`,
    then each bucket and the sum incremented once (a step's 256 inter-token latencies cost
    one call, not 256). `child`: a labelled prometheus_client `Histogram`, or anything with
    its own `observe_many` (a vLLM twin, inference/vllm_names.py). It reads the child's
    `_upper_bounds`, `_buckets` and `_sum`, prometheus_client's layout; the exposition equals
    observing one by one (tests/unit/test_observe_many.py pins it)."""
    many = getattr(child, "observe_many", None)
    if many is not None:
        many(values)
        return
    total = sum(values)
    if math.isnan(total):  # `bisect` would put a NaN in the first bucket; `observe` in none
        for v in values:
            child.observe(v)
        return
    bounds = child._upper_bounds
    for i, n in Counter(map(partial(bisect_left, bounds), values)).items():
        child._buckets[i].inc(n)
    if values:
        child._sum.inc(total)


_made: dict[str, Any] = {}


def once(name: str, make: Callable[[], T]) -> T:
    """The object `make()` built for `name`, made on first use (see the module contract)."""
    if name not in _made:
        _made[name] = make()
    return _made[name]  # type: ignore[no-any-return]


def describe_instance(service: str, instance: str) -> None:
    """Export `kvmesh_service_info` for this process (once; later calls are ignored)."""
    once("instance", lambda: REGISTRY.register(InstanceInfo(service, instance)) or True)


def render() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE


def serve_metrics(port: int, host: str = "127.0.0.1") -> bool:
    """Start the `/metrics` HTTP server on `host:port` (port 0 = off; the service's
    `metrics_host`, never a wildcard unless configured). False if it could not bind."""
    if port <= 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics: cannot listen on %s:%d (%s); /metrics is off", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True
