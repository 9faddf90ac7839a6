"""Prometheus metrics of each kvmesh service, in the process's default registry.

Contract:
- Each service's metrics are one object, made on first use by `gateway()`, `router()`,
  `worker()`, `auth()` or `cache()`, so a process exposes only its own service's families
  (plus the client's process and platform collectors). Names start with `kvmesh_<service>_`;
  latencies are histograms in seconds; counters end in `_total`.
- Workers also export vLLM's names for what vLLM also measures (`vllm:*`, label `model_name`;
  telemetry/vllm_names.py), observed at the same calls; `worker(vllm_names=False)` turns them
  off (`WorkerConfig.vllm_metrics`).
- Labels: `model` (bounded: served model names) everywhere it applies; `tenant` only on the
  gateway's request and token counters and auth's rate-limit refusals and headroom (one series
  per tenant, bounded by the tenant table); never a request id or a prompt.
- `describe_instance(service, instance)` exports `kvmesh_service_info{service, instance}`
  (telemetry.setup calls it), which joins a scrape target to a worker's heartbeats.
- `serve_metrics(port)` exposes `/metrics` on its own port (every service but the gateway;
  0 = off); a port that is taken logs a warning instead of killing the service. The gateway
  serves `render()` at its own `/metrics` route.
- `record_cache_lookup(hit)`: the result cache's hit/miss counter and ratio (gateway side).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from telemetry.vllm_names import VLLM_NAMES, Twin, vllm_labels

log = logging.getLogger("kvmesh.telemetry")
CONTENT_TYPE = CONTENT_TYPE_LATEST

TTFT_BUCKETS = (.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2.5, 5, 10, 20, 40)
ITL_BUCKETS = (.001, .0025, .005, .01, .015, .02, .025, .03, .04, .05, .075, .1, .25, .5, 1)
E2E_BUCKETS = (.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
STEP_BUCKETS = (.001, .0025, .005, .01, .02, .03, .05, .075, .1, .2, .5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GatewayMetrics:
    def __init__(self) -> None:
        p = "kvmesh_gateway_"
        self.requests = Counter(p + "requests", "HTTP requests by route, status code, model, "
                                "tenant", ["route", "status", "model", "tenant"])
        self.in_flight = Gauge(p + "requests_in_flight", "HTTP requests being served")
        self.e2e = Histogram(p + "e2e_request_latency_seconds", "Request start to last byte",
                             ["route", "model"], buckets=E2E_BUCKETS)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Request start to the first "
                              "token at the gateway", ["model"], buckets=TTFT_BUCKETS)
        self.itl = Histogram(p + "inter_token_latency_seconds", "Time between tokens of one "
                             "choice, as the gateway receives them", ["model"],
                             buckets=ITL_BUCKETS)
        self.finish = Counter(p + "finish_reason", "Finished choices by finish reason",
                              ["model", "reason"])
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens of served requests",
                                     ["model", "tenant"])
        self.generation_tokens = Counter(p + "generation_tokens", "Generated tokens",
                                         ["model", "tenant"])
        self.cache_lookups = Counter(p + "result_cache_lookups", "Result-cache lookups",
                                     ["result"])
        self._hits = self.cache_lookups.labels("hit")
        self._misses = self.cache_lookups.labels("miss")
        self.cache_hit_ratio = Gauge(p + "result_cache_hit_ratio",
                                     "Result-cache hits / lookups since start")
        self.cache_hit_ratio.set_function(self._hit_ratio)

    def _hit_ratio(self) -> float:
        hits, misses = self._hits._value.get(), self._misses._value.get()
        return hits / (hits + misses) if hits + misses else 0.0


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

    def watch_workers(self, live_count: Callable[[], int]) -> None:
        """`live_workers` reads `live_count()` at scrape time (from the metrics thread, so it
        must not mutate what the event loop uses)."""
        self.live_workers.set_function(live_count)


class WorkerMetrics:
    """The worker's families; with `vllm_names` each measurement vLLM also exports is observed
    under vLLM's name too (telemetry/vllm_names.py), at the same call."""

    def __init__(self, vllm_names: bool = True) -> None:
        self.vllm_names = vllm_names
        p = "kvmesh_worker_"
        twin = self._twin
        self.requests = Counter(p + "requests", "Requests by outcome status (200 finished, 4xx "
                                "refused, 499 cancelled, 5xx failed)", ["model", "status"])
        self.finish = twin(Counter, "finish_reason", "Finished choices by finish reason",
                           ["model", "reason"])
        self.queue_time = twin(Histogram, "queue_time_seconds", "Admission to first scheduled "
                               "step", ["model"], buckets=TTFT_BUCKETS)
        self.ttft = twin(Histogram, "time_to_first_token_seconds", "Admission to first token",
                         ["model"], buckets=TTFT_BUCKETS)
        self.itl = twin(Histogram, "inter_token_latency_seconds", "Time between tokens of one "
                        "choice", ["model"], buckets=ITL_BUCKETS)
        self.e2e = twin(Histogram, "e2e_request_latency_seconds", "Admission to the last token",
                        ["model"], buckets=E2E_BUCKETS)
        self.prompt_tokens = twin(Counter, "prompt_tokens", "Prompt tokens admitted", ["model"])
        self.generation_tokens = twin(Counter, "generation_tokens", "Tokens generated",
                                      ["model"])
        self.step_time = Histogram(p + "engine_step_seconds", "Engine step wall time",
                                   ["model"], buckets=STEP_BUCKETS)
        self.batch_size = Histogram(p + "engine_batch_size", "Sequences per engine step",
                                    ["model"], buckets=BATCH_BUCKETS)

    def _twin(self, kind: Any, name: str, doc: str, labels: list[str], **kw: Any) -> Twin:
        ours = kind("kvmesh_worker_" + name, doc, labels, **kw)
        theirs = kind(VLLM_NAMES[name], doc, vllm_labels(labels), **kw) \
            if self.vllm_names else None
        return Twin(ours, theirs)

    def watch_engine(self, model: str, stats: Callable[[], Any]) -> None:
        """Export the engine's live counters (`EngineStats`), read at scrape time."""
        REGISTRY.register(EngineCollector(model, stats, self.vllm_names))


class AuthMetrics:
    def __init__(self) -> None:
        p = "kvmesh_auth_"
        self.verifications = Counter(p + "verifications", "Key verifications by result (ok, "
                                     "invalid, unavailable)", ["result"])
        self.admissions = Counter(p + "admissions", "Admission decisions by result (ok, "
                                  "rate_limited, unavailable, fail_open) and the limit hit",
                                  ["result", "limit"])
        self.rate_limited = Counter(p + "rate_limited", "Admissions refused by a tenant's limit",
                                    ["tenant", "limit"])
        self.headroom = Gauge(p + "tenant_headroom_ratio", "Share of a tenant's limit left at "
                              "its last admission (0 = refused by it)", ["tenant", "limit"])


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


class EngineCollector(Collector):
    """Running/waiting, KV usage and prefix-cache counters from the engine's last stats; each
    family that vLLM also exports is yielded under vLLM's name too when `vllm_names`."""

    def __init__(self, model: str, stats: Callable[[], Any], vllm_names: bool = True) -> None:
        self.model = model
        self.stats = stats
        self.vllm_names = vllm_names

    def _family(self, kind: Any, name: str, doc: str, value: float) -> Iterable[Any]:
        names = [("kvmesh_worker_" + name, "model")]
        if self.vllm_names and name in VLLM_NAMES:
            names.append((VLLM_NAMES[name], "model_name"))
        for full, label in names:
            f = kind(full, doc, labels=[label])
            f.add_metric([self.model], value)
            yield f

    def collect(self) -> Iterable[Any]:
        s = self.stats()
        g, c = GaugeMetricFamily, CounterMetricFamily
        for kind, name, doc, value in (
            (g, "num_requests_running", "Sequences running in the engine", s.running),
            (g, "num_requests_waiting", "Sequences waiting for the engine", s.waiting),
            (g, "kv_cache_usage_ratio", "Used KV blocks / all KV blocks (a fraction in [0, 1])",
             s.used_blocks / max(1, s.num_blocks)),
            (g, "kv_cache_blocks", "KV blocks in the pool", s.num_blocks),
            (g, "kv_cache_free_blocks", "Free KV blocks", s.free_blocks),
            (g, "kv_cache_cached_blocks", "Blocks holding a reusable prefix", s.cached_blocks),
            (g, "prefix_cache_hit_ratio", "Prompt tokens served from cached KV blocks / prompt "
             "tokens looked up, since start",
             s.prefix_hit_tokens / s.prompt_tokens if s.prompt_tokens else 0.0),
            (c, "prefix_cache_hit_tokens", "Prompt tokens found in the prefix cache",
             s.prefix_hit_tokens),
            (c, "prefix_cache_query_tokens", "Prompt tokens looked up in the prefix cache",
             s.prompt_tokens),
            (c, "preemptions", "Sequences preempted for KV space", s.preemptions),
        ):
            yield from self._family(kind, name, doc, value)
        gs = getattr(s, "grammar", None)  # constrained decoding (inference/engine/grammar.py)
        if gs is not None:
            for name, doc, value in (
                ("grammar_compiles", "Grammars compiled (cache misses)", gs.compiles),
                ("grammar_cache_hits", "Constrained sequences served a cached compiled grammar",
                 gs.cache_hits),
                ("grammar_compile_seconds", "Time spent compiling grammars", gs.compile_seconds),
                ("grammar_mask_seconds", "Host time building constrained rows' token bitmasks",
                 gs.mask_seconds),
                ("constrained_tokens", "Tokens sampled under a grammar mask",
                 gs.constrained_tokens),
            ):
                yield from self._family(c, name, doc, value)


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


_made: dict[str, Any] = {}


def _once(service: str, make: Callable[[], Any]) -> Any:
    """The service's metrics object, made on first use (registering twice would raise)."""
    if service not in _made:
        _made[service] = make()
    return _made[service]


def gateway() -> GatewayMetrics:
    return _once("gateway", GatewayMetrics)


def router() -> RouterMetrics:
    return _once("router", RouterMetrics)


def worker(vllm_names: bool = True) -> WorkerMetrics:
    """The worker's metrics; the first call decides whether vLLM's names are exported too."""
    return _once("worker", lambda: WorkerMetrics(vllm_names))


def auth() -> AuthMetrics:
    return _once("auth", AuthMetrics)


def cache() -> CacheMetrics:
    return _once("cache", CacheMetrics)


def describe_instance(service: str, instance: str) -> None:
    """Export `kvmesh_service_info` for this process (once; later calls are ignored)."""
    _once("instance", lambda: REGISTRY.register(InstanceInfo(service, instance)) or True)


def record_headroom(tenant: str, refused_by: str | None, headroom: Any) -> None:
    """After an admission: what is left of each of the tenant's limits (`auth.ratelimit.
    Headroom`), or 0 for the limit that refused it."""
    g = auth().headroom
    if refused_by is not None:
        g.labels(tenant, refused_by).set(0.0)
        return
    for limit in ("requests", "tokens", "concurrency"):
        left = getattr(headroom, limit)
        if left is not None:
            g.labels(tenant, limit).set(left)


def record_cache_lookup(hit: bool) -> None:
    """Count one result-cache lookup (gateway side); feeds the hit ratio."""
    gateway().cache_lookups.labels("hit" if hit else "miss").inc()


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
