"""The metric names a kvmesh mesh exports, as a scrape shows them, for the static checks of
the alert rules and dashboards: every name a PromQL expression in the repo uses must be one.

`exported()` makes every service's metrics (the same objects the services make, in this
process's default registry; the scrape-time collectors with stats of zeros) and lists the
names a scrape can show (`_total`, `_bucket`, `_sum`, `_count` included).
`promql_names(expr)` lists the names an expression mentions: kvmesh's (`kvmesh_*`), the
recording rules' (`kvmesh:*`), vLLM's (`vllm:*`), Prometheus's own `up` and the blackbox
exporter's `probe_*`.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace

from prometheus_client import REGISTRY, CollectorRegistry

from auth import telemetry as auth_telemetry
from cache import telemetry as cache_telemetry
from gateway import telemetry as gateway_telemetry
from inference import metrics as worker_metrics
from router import telemetry as router_telemetry
from telemetry.metrics import InstanceInfo

# Series that come from Prometheus and the blackbox exporter, not from kvmesh.
EXTERNAL = frozenset({"up", "probe_success", "probe_duration_seconds"})
_NAME = re.compile(r"(?<![\w:])(kvmesh_[a-z0-9_]+|kvmesh:[a-z0-9_:]+|vllm:[a-z0-9_:]+|"
                   r"probe_[a-z_]+|up)(?![\w(])")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def promql_names(expr: str) -> set[str]:
    """Metric names in `expr` (label values in quotes are skipped)."""
    return set(_NAME.findall(_STRINGS.sub('""', expr)))


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count"), "info": ("_info",)}


@functools.cache
def exported() -> frozenset[str]:
    stats = SimpleNamespace(running=0, waiting=0, used_blocks=0, num_blocks=1, free_blocks=1,
                            cached_blocks=0, prefix_hit_tokens=0, prompt_tokens=0,
                            preemptions=0, hits=0, misses=0, leads=0, waited_hits=0, puts=0,
                            errors=0)
    for make in (gateway_telemetry.metrics, router_telemetry.metrics, worker_metrics.worker,
                 auth_telemetry.metrics, cache_telemetry.metrics, cache_telemetry.client_metrics):
        make()  # each service's families, in this process's default registry (made once)
    collectors = CollectorRegistry()  # the scrape-time collectors, with stats of zeros
    collectors.register(worker_metrics.EngineCollector("m", lambda: stats, vllm_names=True))
    collectors.register(cache_telemetry.CacheStatsCollector(lambda: stats))
    collectors.register(InstanceInfo("worker", "w0"))
    names = set()
    for family in [*REGISTRY.collect(), *collectors.collect()]:
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return frozenset(names)
