"""`observe` hooks for `@traced(...)` on the auth and result-cache calls (see tracing.traced):

    @traced("auth.verify", observe=services.auth_verified)      # gateway/auth_client.py
    @traced("cache.lookup", observe=services.cache_looked_up)   # cache/client.py
    @traced("cache.store")                                      # cache/service.py, put handler

They put the outcome on the span (tenant; hit or miss) and count result-cache lookups for the
gateway's hit ratio.
"""

from __future__ import annotations

from typing import Any

from telemetry import metrics, tracing


def auth_verified(key: Any, ident: Any, seconds: float) -> None:
    """After a successful verify: the tenant on the span (never the key)."""
    tracing.set_attributes(kvmesh__tenant=getattr(ident, "tenant", None))


def cache_looked_up(key: Any, result: Any, seconds: float) -> None:
    """After a result-cache lookup: hit or miss on the span and in the hit-ratio counters."""
    hit = type(result).__name__ == "CacheHit"
    tracing.set_attributes(kvmesh__cache__hit=hit,
                           kvmesh__cache__lead=getattr(result, "lead", None))
    metrics.record_cache_lookup(hit)
