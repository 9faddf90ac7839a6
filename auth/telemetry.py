"""The auth service's metrics (`kvmesh_auth_*`); its spans are `@traced` on its handlers.

Contract:
- `metrics()` makes the families once per process: verifications and admission decisions by
  result, refusals by tenant and limit, and each tenant's headroom (the share of a limit left
  at its last admission). `tenant` labels are bounded by the tenant table.
- `record_headroom(tenant, refused_by, headroom)` updates the headroom gauges after an
  admission: what is left of each limit, or 0 for the limit that refused it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from auth.ratelimit import Headroom
from telemetry.metrics import once


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


def metrics() -> AuthMetrics:
    """The auth service's families, made on first use."""
    return once("auth", AuthMetrics)


def record_headroom(tenant: str, refused_by: str | None, headroom: Headroom) -> None:
    """After an admission: what is left of each of the tenant's limits, or 0 for the limit
    that refused it."""
    g = metrics().headroom
    if refused_by is not None:
        g.labels(tenant, refused_by).set(0.0)
        return
    for limit in ("requests", "tokens", "concurrency"):
        left = getattr(headroom, limit)
        if left is not None:
            g.labels(tenant, limit).set(left)
