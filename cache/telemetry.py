"""The result cache's telemetry: the cache actor's metrics, and the spans and metrics of its
client (cache/client.py, which runs in the gateway).

Contract:
- Actor side (cache/service.py): `metrics()` makes the actor's families once per process:
  `kvmesh_cache_lookup_seconds{result}` (lookup time, single-flight waits included), and
  `watch(stats)` registers `CacheStatsCollector`, which reads the replica's `CacheStats`
  (hits, misses, leads, waited hits, puts, Redis errors, hit ratio) at scrape time.
- Client side: `cache_looked_up` is the `observe` hook of `@traced("cache.lookup")` on
  `ResultCacheClient.lookup`: hit or miss (and whether this caller leads) on the span, and one
  count in `kvmesh_gateway_result_cache_lookups_total{result}`, whose running hit ratio is
  `kvmesh_gateway_result_cache_hit_ratio`. Those two carry the gateway's prefix because they
  are measured in the gateway's process, where dashboards and `kvmesh top` look for them;
  `client_metrics()` makes them (the client's constructor calls it, so a gateway exports them
  from its start, before any lookup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kvmesh.wire import CacheHit
from telemetry import tracing
from telemetry.metrics import TTFT_BUCKETS, once


class CacheMetrics:
    def __init__(self) -> None:
        self.lookup_latency = Histogram("kvmesh_cache_lookup_seconds", "Result-cache lookup "
                                        "time, single-flight waits included", ["result"],
                                        buckets=TTFT_BUCKETS)

    def watch(self, stats: Callable[[], Any]) -> None:
        """Export this replica's `CacheStats` counters, read at scrape time."""
        REGISTRY.register(CacheStatsCollector(stats))


class CacheStatsCollector(Collector):
    """Hits, misses, leads, waits, puts and Redis errors of one result-cache replica."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Any]:
        s = self.stats()
        p = "kvmesh_cache_"
        for name, doc in (("hits", "Lookups answered from Redis"),
                          ("misses", "Lookups that found nothing (or Redis down)"),
                          ("leads", "Misses whose caller took the single-flight lease"),
                          ("waited_hits", "Hits served after waiting for another caller"),
                          ("puts", "Answers stored"),
                          ("redis_errors", "Redis calls that failed or timed out")):
            value = s.errors if name == "redis_errors" else getattr(s, name)
            yield CounterMetricFamily(p + name, doc, value=value)
        looked = s.hits + s.misses
        yield GaugeMetricFamily(p + "hit_ratio", "Hits / lookups since start",
                                value=s.hits / looked if looked else 0.0)


class ClientMetrics:
    """The lookups the gateway's cache client made, by result, and their hit ratio."""

    def __init__(self) -> None:
        p = "kvmesh_gateway_"
        self.lookups = Counter(p + "result_cache_lookups", "Result-cache lookups", ["result"])
        self.hits = self.lookups.labels("hit")
        self.misses = self.lookups.labels("miss")
        self.hit_ratio = Gauge(p + "result_cache_hit_ratio",
                               "Result-cache hits / lookups since start")
        self.hit_ratio.set_function(self._hit_ratio)

    def _hit_ratio(self) -> float:
        hits, misses = self.hits._value.get(), self.misses._value.get()
        return hits / (hits + misses) if hits + misses else 0.0


def metrics() -> CacheMetrics:
    """The cache actor's families, made on first use."""
    return once("cache", CacheMetrics)


def client_metrics() -> ClientMetrics:
    """The cache client's families (in the gateway's process), made on first use."""
    return once("cache_client", ClientMetrics)


def cache_looked_up(key: Any, result: Any, seconds: float) -> None:
    """After a result-cache lookup: hit or miss on the span and in the hit-ratio counters."""
    hit = isinstance(result, CacheHit)
    busy = getattr(result, "busy", False)
    tracing.set_attributes(kvmesh__cache__hit=hit,
                           kvmesh__cache__lead=getattr(result, "lead", None),
                           kvmesh__cache__busy=busy or None)
    if busy:
        return  # not an answer yet: the lookup that waits for the leader counts
    m = client_metrics()
    (m.hits if hit else m.misses).inc()
