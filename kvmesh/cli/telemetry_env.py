"""Where `kvmesh up` sends traces and metrics: the environment its children get.

`telemetry_env(otlp_endpoint, metrics_port)` returns (env, one line for the user):
- traces go to `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT` when the user set one (the children inherit
  it), else to `otlp_endpoint` when given, else to a Jaeger listening for OTLP on
  localhost:4318; with none of these, tracing stays off and the line says how to turn it on;
- the router process's `/metrics` listens on `metrics_port` (workers take the following
  ports, which the launcher sets per worker; with `--hosted-router true` each gateway
  process's router reports on its gateway's port).
"""

from __future__ import annotations

import os

from kvmesh.cli import procs

JAEGER_OTLP = "http://127.0.0.1:4318"
JAEGER_UI = os.environ.get("KVMESH_JAEGER_URL", "http://localhost:16686")


def telemetry_env(otlp_endpoint: str, metrics_port: int) -> tuple[dict[str, str], str]:
    env = {"KVMESH_ROUTER_METRICS_PORT": str(metrics_port)}
    user = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if user:
        return env, f"kvmesh: traces go to {user} (OTEL_EXPORTER_OTLP_*)"
    if otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
        return env, f"kvmesh: traces go to {otlp_endpoint}"
    if procs.port_open(4318):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = JAEGER_OTLP
        return env, (f"kvmesh: traces go to the Jaeger on localhost:4318; see them at "
                     f"{JAEGER_UI} or with `kvmesh trace <request id>`")
    return env, ("kvmesh: tracing is off (no OTLP endpoint, nothing on localhost:4318). For "
                 "traces, start Jaeger first:\n  docker run -d -p 16686:16686 -p 4318:4318 "
                 "jaegertracing/all-in-one\nor set OTEL_EXPORTER_OTLP_ENDPOINT.")
