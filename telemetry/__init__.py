"""Telemetry for every kvmesh service: OpenTelemetry traces, Prometheus metrics, JSON logs.

One call per service at start-up, one at exit:

    telemetry.setup("router", instance_id, log_level=cfg.log_level, metrics_port=9101)
    ...
    telemetry.shutdown()   # flushes queued spans

Only what every service shares lives here: `tracing.py` (SDK set-up, span helpers),
`propagation.py` (trace context over NATS and HTTP), `metrics.py` (Prometheus plumbing: made-once
families, shared buckets, `/metrics`), `logs.py` (JSON lines), `redact.py` (secrets out of
logs), `token_clock.py` (time to first token and inter-token latency), and the operator's
views of a whole mesh: `jaeger.py` (the `kvmesh trace` query and renderer), `mesh_view.py` and
`top.py` (`kvmesh top`).
Each service's own spans and metrics live beside it: gateway/telemetry.py, router/telemetry.py,
inference/telemetry.py (with inference/metrics.py and inference/vllm_names.py),
auth/telemetry.py, cache/telemetry.py. This package imports no service and nothing of
`inference/`; nothing under `inference/engine/` imports it: the engine stays free of it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from telemetry.logs import setup_logging
from telemetry.metrics import describe_instance, serve_metrics
from telemetry.propagation import attach, inject, request_id_var
from telemetry.tracing import (
    enabled,
    mark_error,
    set_attributes,
    setup_tracing,
    shutdown_tracing,
    span,
    start_span,
    traced,
)

__all__ = ["attach", "enabled", "inject", "mark_error", "request_id_var", "run_service",
           "set_attributes", "setup", "shutdown", "span", "start_span", "traced"]


def setup(service: str, instance_id: str, log_level: str = "INFO",
          metrics_port: int = 0, metrics_host: str = "127.0.0.1") -> None:
    """JSON logs at `log_level`, tracing as the OTEL_* variables say, /metrics on
    `metrics_host:metrics_port` (port 0 = none; the gateway serves its own)."""
    import logging

    setup_logging(service, log_level)
    on = setup_tracing(service, instance_id)
    logging.getLogger("kvmesh.telemetry").info(
        "%s %s: tracing %s", service, instance_id, "on (OTLP)" if on else "off")
    describe_instance(service, instance_id)
    serve_metrics(metrics_port, metrics_host)


def run_service(
    service: str, instance_id: str, main: Coroutine[Any, Any, None], log_level: str,
    metrics_port: int = 0, metrics_host: str = "127.0.0.1", busy_poll: float = 0.0,
) -> int:
    """A service process: telemetry up, `main` to the end with its loop's lag measured
    (telemetry/loop_lag.py) and polling `busy_poll` seconds after each message
    (kvmesh/busy_poll.py), telemetry flushed whatever happens."""
    from kvmesh import eventloop
    from telemetry import loop_lag

    setup(service, instance_id, log_level, metrics_port, metrics_host)
    try:
        eventloop.run(loop_lag.probed(main, service), busy_poll)
    finally:
        shutdown()
    return 0


def shutdown() -> None:
    """Flush and stop the exporter."""
    shutdown_tracing()
